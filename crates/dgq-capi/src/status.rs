//! Status codes, the per-thread last error, and the guard every entry point runs its body in.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Outcome of a call. Every function that can fail returns one; on failure a message describing
/// the problem is available from `dgq_last_error_message` on the same thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_status {
    /// Success.
    DGQ_STATUS_OK = 0,
    /// A parameter is invalid: a NULL pointer, a zero or overflowing size, a misaligned pointer,
    /// an out-of-range index or enum value, a string that is not UTF-8.
    DGQ_STATUS_INVALID_ARGUMENT = 1,
    /// Sizes disagree: a buffer is too small, or two operands' dimensions do not match.
    DGQ_STATUS_SHAPE_MISMATCH = 2,
    /// A configuration value or group size is out of its valid range.
    DGQ_STATUS_INVALID_CONFIG = 3,
    /// Input data contains NaN or infinity where finite values are required.
    DGQ_STATUS_NON_FINITE = 4,
    /// Quantized data breaks one of its invariants (code ranges, scale signs, INT8 overflow).
    DGQ_STATUS_INVALID_DATA = 5,
    /// A file-system error (the message names the path).
    DGQ_STATUS_IO = 6,
    /// A packed file is malformed: truncated, corrupted (CRC mismatch), or inconsistent.
    DGQ_STATUS_FORMAT = 7,
    /// A packed file declares a format version this library cannot read.
    DGQ_STATUS_UNSUPPORTED_VERSION = 8,
    /// A named item (layer, bias, smoothing vector) does not exist.
    DGQ_STATUS_NOT_FOUND = 9,
    /// The operation is not available: this build lacks the feature (e.g. CUDA), or the layer's
    /// scheme or the shape is not supported by the operation.
    DGQ_STATUS_UNSUPPORTED = 10,
    /// A CUDA driver, allocation or kernel-launch error.
    DGQ_STATUS_CUDA = 11,
    /// A bug in the library (an internal panic was caught); please report it.
    DGQ_STATUS_INTERNAL = 12,
    /// A weight outside the range the format represents within its stated error (a row whose
    /// max |w| is above what its f16 scale reaches, or non-zero but too small for it); the
    /// message names the row and the range.
    DGQ_STATUS_OUT_OF_RANGE = 13,
}

use dgq_status::*;

/// A failure on its way to the C caller: a status and a message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: dgq_status,
    pub message: String,
}

pub(crate) type CResult<T> = Result<T, Failure>;

impl Failure {
    pub fn new(status: dgq_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(DGQ_STATUS_INVALID_ARGUMENT, message)
    }
    pub fn shape(message: impl Into<String>) -> Self {
        Failure::new(DGQ_STATUS_SHAPE_MISMATCH, message)
    }
}

impl From<dgq_core::Error> for Failure {
    fn from(e: dgq_core::Error) -> Self {
        use dgq_core::Error as E;
        let status = match &e {
            E::Shape { .. } => DGQ_STATUS_SHAPE_MISMATCH,
            E::GroupSize { .. } | E::Config { .. } => DGQ_STATUS_INVALID_CONFIG,
            E::NonFinite { .. } => DGQ_STATUS_NON_FINITE,
            E::OutOfRange { .. } => DGQ_STATUS_OUT_OF_RANGE,
            E::Invariant { .. } => DGQ_STATUS_INVALID_DATA,
            E::Format { .. } => DGQ_STATUS_FORMAT,
            E::UnsupportedVersion { .. } => DGQ_STATUS_UNSUPPORTED_VERSION,
            E::Io { .. } => DGQ_STATUS_IO,
            // `Error` is non-exhaustive: variants added later still reach the caller with their text.
            _ => DGQ_STATUS_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    // `try_with`: during thread teardown the slot may be gone; losing the message then is fine.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = message);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| e.borrow_mut().clear());
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs an entry point's body: clears the thread's last error, catches panics, and turns a
/// failure into its status plus the thread's last-error message.
pub(crate) fn guard(f: impl FnOnce() -> CResult<()>) -> dgq_status {
    clear_last_error();
    // The body only touches memory through the pointers it was handed; after a panic nothing it
    // partly wrote is used again by this library, so asserting unwind safety is sound.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => DGQ_STATUS_OK,
        Ok(Err(fail)) => {
            set_last_error(fail.message);
            fail.status
        }
        Err(payload) => {
            set_last_error(format!(
                "internal error (caught panic): {}",
                panic_message(payload.as_ref())
            ));
            DGQ_STATUS_INTERNAL
        }
    }
}

/// Like [`guard`] for infallible accessors that return a value instead of a status; a panic
/// yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Copies the message of the last failed call on this thread into `buf` (NUL-terminated,
/// truncated at a UTF-8 character boundary to fit `len` bytes) and returns the message's full
/// length in bytes, not counting the NUL.
///
/// Call with `buf = NULL, len = 0` to learn the size to allocate (add 1 for the NUL). The message
/// is empty (returns 0) when the last call on this thread succeeded: every status-returning call
/// clears it on entry; this function itself does not. Messages are UTF-8 English text.
///
/// # Safety
/// `buf` must be NULL or hold `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dgq_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        LAST_ERROR
            .try_with(|e| {
                let msg = e.borrow();
                if !buf.is_null() && len > 0 {
                    let mut n = msg.len().min(len - 1);
                    while !msg.is_char_boundary(n) {
                        n -= 1;
                    }
                    // SAFETY: the caller promises `buf` holds `len` bytes; we write n + 1 ≤ len.
                    unsafe {
                        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                        *buf.add(n) = 0;
                    }
                }
                msg.len()
            })
            .unwrap_or(0)
    })
}

/// A static, NUL-terminated name for a status code (e.g. `"DGQ_STATUS_FORMAT"`); unknown codes
/// give `"DGQ_STATUS_UNKNOWN"`. Takes an `int` so that any value is safe to pass.
#[no_mangle]
pub extern "C" fn dgq_status_name(status: i32) -> *const c_char {
    let s: &'static CStr = match status {
        0 => c"DGQ_STATUS_OK",
        1 => c"DGQ_STATUS_INVALID_ARGUMENT",
        2 => c"DGQ_STATUS_SHAPE_MISMATCH",
        3 => c"DGQ_STATUS_INVALID_CONFIG",
        4 => c"DGQ_STATUS_NON_FINITE",
        5 => c"DGQ_STATUS_INVALID_DATA",
        6 => c"DGQ_STATUS_IO",
        7 => c"DGQ_STATUS_FORMAT",
        8 => c"DGQ_STATUS_UNSUPPORTED_VERSION",
        9 => c"DGQ_STATUS_NOT_FOUND",
        10 => c"DGQ_STATUS_UNSUPPORTED",
        11 => c"DGQ_STATUS_CUDA",
        12 => c"DGQ_STATUS_INTERNAL",
        13 => c"DGQ_STATUS_OUT_OF_RANGE",
        _ => c"DGQ_STATUS_UNKNOWN",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: NULL/0 queries the length; then a buffer of the stated size.
        let n = unsafe { dgq_last_error_message(std::ptr::null_mut(), 0) };
        let mut buf = vec![0 as c_char; n + 1];
        assert_eq!(
            unsafe { dgq_last_error_message(buf.as_mut_ptr(), buf.len()) },
            n
        );
        // SAFETY: NUL-terminated by dgq_last_error_message.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn guard_maps_failures_panics_and_clears() {
        let s = guard(|| Err(Failure::shape("y holds 3 floats, needs 6")));
        assert_eq!(s, DGQ_STATUS_SHAPE_MISMATCH);
        assert_eq!(last(), "y holds 3 floats, needs 6");
        let s = guard(|| panic!("boom"));
        assert_eq!(s, DGQ_STATUS_INTERNAL);
        assert!(last().contains("boom"), "{}", last());
        assert_eq!(guard(|| Ok(())), DGQ_STATUS_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn truncation_respects_utf8_and_nul() {
        guard(|| Err(Failure::invalid("aé")));
        // "aé" is 3 bytes; a 3-byte buffer holds 2 bytes + NUL, which would split 'é'.
        let mut buf = [0x7f as c_char; 3];
        // SAFETY: buffers of the stated sizes.
        assert_eq!(unsafe { dgq_last_error_message(buf.as_mut_ptr(), 3) }, 3);
        assert_eq!(buf[0] as u8, b'a');
        assert_eq!(buf[1], 0);
        // len 1: only the NUL.
        let mut one = [0x7f as c_char; 1];
        assert_eq!(unsafe { dgq_last_error_message(one.as_mut_ptr(), 1) }, 3);
        assert_eq!(one[0], 0);
    }

    #[test]
    fn status_names_cover_every_code() {
        for code in 0..=13 {
            // SAFETY: static NUL-terminated strings.
            let s = unsafe { CStr::from_ptr(dgq_status_name(code)) }
                .to_str()
                .unwrap();
            assert_ne!(s, "DGQ_STATUS_UNKNOWN", "code {code}");
        }
        let s = unsafe { CStr::from_ptr(dgq_status_name(99)) };
        assert_eq!(s.to_str().unwrap(), "DGQ_STATUS_UNKNOWN");
        assert_eq!(dgq_status::DGQ_STATUS_INTERNAL as i32, 12);
        assert_eq!(dgq_status::DGQ_STATUS_OUT_OF_RANGE as i32, 13);
    }

    #[test]
    fn core_errors_map_to_statuses() {
        let e = dgq_core::error::check_group_size(12, 5).unwrap_err();
        assert_eq!(Failure::from(e).status, DGQ_STATUS_INVALID_CONFIG);
    }
}
