//! # dgq-capi: the C ABI of dgq (`libdgq`, header `include/dgq.h`)
//!
//! An `extern "C"` surface over dgq-core (and dgq-cuda with the `cuda` feature), with no logic
//! of its own. Built as a shared library, a static library and an rlib (for the Rust tests);
//! `scripts/install-capi.sh` installs `libdgq.so`, `libdgq.a`, `dgq.h` and `dgq.pc`.
//!
//! Conventions (those of rustls-ffi, zstd and llama.h):
//! - Every fallible call returns a [`dgq_status`]; the message of the last failure on the
//!   calling thread is copied out by [`dgq_last_error_message`]. Successful calls clear it.
//! - No panic crosses the boundary: every entry point runs inside `catch_unwind`
//!   ([`DGQ_STATUS_INTERNAL`](dgq_status::DGQ_STATUS_INTERNAL) if one is caught).
//! - Objects are opaque handles with create/free pairs; `*_free(NULL)` is a no-op. A handle
//!   is not internally locked: calls taking a `const` handle may run concurrently, calls taking a
//!   non-`const` one need exclusive access.
//! - Parameter structs are plain C with a `*_default()` constructor; enum-valued fields and
//!   parameters are `int32_t` so that no value is undefined behaviour on the Rust side.
//! - Sizes are `size_t`. Every pointer is checked for NULL and alignment, every size for zero
//!   and overflow; output buffers come with their capacity in elements.
//! - Arrays are row-major. Weights are `[N, K]` (output × input channels), activations
//!   `[M, K]`, outputs `[M, N]`, as in `Y = X · Wᵀ`.
//!
//! The header is generated from this crate by cbindgen (`scripts/gen-header.sh`) and checked
//! in; `scripts/check-header.sh` fails when it is stale.

#![allow(non_camel_case_types)]

use std::ffi::c_char;

pub mod act;
mod args;
pub mod cuda;
pub mod gemm;
pub mod model;
pub mod status;
pub mod weight;

pub use act::*;
pub use cuda::*;
pub use gemm::*;
pub use model::*;
pub use status::*;
pub use weight::*;

/// Version of the C ABI. Incremented on every incompatible change of `dgq.h` (function
/// signatures, struct layouts, enum values); it is also the shared library's soname major
/// (`libdgq.so.<DGQ_ABI_VERSION>`). Compare with `dgq_abi_version()` at run time.
pub const DGQ_ABI_VERSION: u32 = 2;

/// Rank limit of `dgq_layer_info.shape`; higher-rank tensors report their true `ndim` and the
/// first `DGQ_MAX_DIMS` extents.
pub const DGQ_MAX_DIMS: usize = 8;

/// The ABI version the library was built with; equal to the header's `DGQ_ABI_VERSION` when
/// header and library match.
#[no_mangle]
pub extern "C" fn dgq_abi_version() -> u32 {
    DGQ_ABI_VERSION
}

/// The library's version, e.g. `"0.1.0"` (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn dgq_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings() {
        // SAFETY: static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(dgq_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(dgq_abi_version(), DGQ_ABI_VERSION);
        // build.rs sets the soname from its own copy of the ABI version.
        assert_eq!(
            env!("DGQ_CAPI_SONAME"),
            format!("libdgq.so.{DGQ_ABI_VERSION}")
        );
    }
}
