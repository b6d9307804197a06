//! Status checks for tests of the C ABI.

use std::ffi::{c_char, CStr};
use std::ptr::null_mut;

use dgq_capi::{dgq_last_error_message, dgq_status};

/// This thread's last error message from the library.
pub fn last_error() -> String {
    // SAFETY: NULL/0 queries the length; then a buffer of that size plus the NUL.
    let n = unsafe { dgq_last_error_message(null_mut(), 0) };
    let mut buf = vec![0 as c_char; n + 1];
    unsafe { dgq_last_error_message(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by the call above.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `DGQ_STATUS_OK`, showing the library's message otherwise.
#[track_caller]
pub fn ok(s: dgq_status) {
    assert_eq!(s, dgq_status::DGQ_STATUS_OK, "{}", last_error());
}

/// Asserts status `want` with a message that contains `needle`.
#[track_caller]
pub fn fails(s: dgq_status, want: dgq_status, needle: &str) {
    let msg = last_error();
    assert_eq!(s, want, "message: {msg}");
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}
