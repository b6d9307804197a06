//! Checked conversions of C arguments: pointers to slices, sizes, strings, handles.
//!
//! Every pointer is checked for NULL and alignment and every size for zero and overflow before
//! any memory is touched; what cannot be checked (that a buffer really holds the elements the
//! caller says it holds) is the caller's side of the contract.

use std::ffi::{c_char, CStr};

use crate::status::{CResult, Failure};

/// `a · b`, failing with `DGQ_STATUS_INVALID_ARGUMENT` on overflow.
pub(crate) fn mul(what: &str, a: usize, b: usize) -> CResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Failure::invalid(format!("{what}: {a} × {b} overflows size_t")))
}

/// Rejects a zero dimension.
pub(crate) fn nonzero(what: &str, v: usize) -> CResult<usize> {
    if v == 0 {
        Err(Failure::invalid(format!("{what} must be > 0")))
    } else {
        Ok(v)
    }
}

fn check_ptr<T>(what: &str, p: *const T, len: usize) -> CResult<()> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    if (p as usize) % std::mem::align_of::<T>() != 0 {
        return Err(Failure::invalid(format!(
            "{what} is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    match len.checked_mul(std::mem::size_of::<T>()) {
        Some(b) if b <= isize::MAX as usize => Ok(()),
        _ => Err(Failure::invalid(format!(
            "{what}: {len} elements exceed the address space"
        ))),
    }
}

/// An input array of exactly `len` elements.
///
/// # Safety
/// `p` must point to `len` initialized elements that stay valid and unmodified for `'a`.
pub(crate) unsafe fn slice<'a, T>(what: &str, p: *const T, len: usize) -> CResult<&'a [T]> {
    check_ptr(what, p, len)?;
    // SAFETY: non-null, aligned, size bounded; validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// An optional input array: NULL with `len == 0` is `None`; NULL with `len > 0` or non-NULL with
/// `len == 0` is an error (a likely mix-up on the caller's side).
///
/// # Safety
/// As [`slice`] when `p` is non-NULL.
pub(crate) unsafe fn opt_slice<'a, T>(
    what: &str,
    p: *const T,
    len: usize,
) -> CResult<Option<&'a [T]>> {
    match (p.is_null(), len) {
        (true, 0) => Ok(None),
        (true, _) => Err(Failure::invalid(format!(
            "{what} is NULL but its length is {len}"
        ))),
        (false, 0) => Err(Failure::invalid(format!(
            "{what} is non-NULL but its length is 0 (pass NULL and 0 for none)"
        ))),
        // SAFETY: forwarded contract.
        (false, _) => Ok(Some(unsafe { slice(what, p, len)? })),
    }
}

/// An output buffer of capacity `cap` elements that must hold at least `need`.
///
/// # Safety
/// `p` must point to `cap` writable elements, not aliased by anything else for `'a`.
pub(crate) unsafe fn out_slice<'a, T>(
    what: &str,
    p: *mut T,
    cap: usize,
    need: usize,
) -> CResult<&'a mut [T]> {
    check_ptr(what, p.cast_const(), cap)?;
    if cap < need {
        return Err(Failure::shape(format!(
            "{what} holds {cap} elements, needs {need}"
        )));
    }
    // SAFETY: non-null, aligned, size bounded; validity and exclusivity are the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, need) })
}

/// A required out-pointer (for a handle or a scalar result), written without reading the old
/// (possibly uninitialized) value.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn set(&mut self, v: T) {
        // SAFETY: checked non-null and aligned by `out_ptr`; writability is the caller's contract.
        // `write` does not drop the old value, which may be uninitialized.
        unsafe { self.0.write(v) }
    }
}

/// Checks an out-pointer.
///
/// # Safety
/// `p` must be NULL or valid for writing a `T` for as long as the returned [`Out`] is used.
pub(crate) unsafe fn out_ptr<T>(what: &str, p: *mut T) -> CResult<Out<T>> {
    check_ptr(what, p.cast_const(), 1)?;
    Ok(Out(p))
}

/// A required NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_str<'a>(what: &str, p: *const c_char) -> CResult<&'a str> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null; NUL termination is the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// A required NUL-terminated path: any bytes on Unix, UTF-8 elsewhere.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_path<'a>(what: &str, p: *const c_char) -> CResult<&'a std::path::Path> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null; NUL termination is the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid(format!("{what} is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(std::path::Path::new)
            .map_err(|e| Failure::invalid(format!("{what} is not valid UTF-8: {e}")))
    }
}

/// A required handle, borrowed.
///
/// # Safety
/// `p` must be NULL or a live handle of type `T` created by this library.
pub(crate) unsafe fn handle<'a, T>(what: &str, p: *const T) -> CResult<&'a T> {
    check_ptr(what, p, 1)?;
    // SAFETY: the caller passes a live handle of this type.
    Ok(unsafe { &*p })
}

/// A required handle, mutably borrowed.
///
/// # Safety
/// As [`handle`], and no other reference to it may be in use.
pub(crate) unsafe fn handle_mut<'a, T>(what: &str, p: *mut T) -> CResult<&'a mut T> {
    check_ptr(what, p.cast_const(), 1)?;
    // SAFETY: the caller passes a live, exclusively used handle of this type.
    Ok(unsafe { &mut *p })
}

/// Hands a new object to C as an owned handle.
pub(crate) fn into_handle<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Frees a handle made by [`into_handle`]; NULL is a no-op.
///
/// # Safety
/// `p` must be NULL or a handle of type `T` not freed before.
pub(crate) unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: made by Box::into_raw and not freed before (caller's contract).
        drop(unsafe { Box::from_raw(p) });
    }
}
