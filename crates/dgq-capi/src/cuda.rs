//! GPU entry points: a DGQ weight prepared on the device, the W4A8 GEMM and INT8 activation
//! quantization on a caller-given `cudaStream_t`, with caller-owned device buffers.
//!
//! Conventions: `stream` is a `cudaStream_t` (or `CUstream`) passed as `void*` so that this
//! header needs no CUDA headers; NULL means the legacy default stream. Device pointers are owned
//! by the caller, must be allocated on the device the weight was uploaded to, and must stay valid
//! until the work enqueued on `stream` has finished. Nothing synchronises the stream and nothing
//! allocates in the GEMM or the quantizers; split-K scratch is an explicit workspace whose size
//! `dgq_cuda_gemm_workspace_size` reports. Sizes of device buffers cannot be checked by the
//! library: they are implied by the dimensions passed, as documented per function.
//!
//! Availability: these functions exist in every build so that the ABI does not depend on build
//! options. In a build without CUDA support they return `DGQ_STATUS_UNSUPPORTED` with a message
//! saying so; `dgq_cuda_built()` tells which build this is.

use std::ffi::c_void;

use crate::status::{dgq_status, guard, CResult, Failure};
use crate::weight::dgq_weight;

/// A DGQ weight in the kernels' layout on one CUDA device (opaque). Created by
/// `dgq_cuda_weight_upload`, freed by `dgq_cuda_weight_free`.
pub struct dgq_cuda_weight {
    _private: (),
}

/// Element type of 16-bit float device tensors (values of the `dtype` parameters).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_dtype {
    /// IEEE binary16 (`__half`).
    DGQ_DTYPE_F16 = 0,
    /// bfloat16 (`__nv_bfloat16`).
    DGQ_DTYPE_BF16 = 1,
}

/// Which GEMM kernel `dgq_cuda_w4a8_gemm` runs (values of `dgq_cuda_gemm_config.kernel`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_cuda_kernel {
    /// The split-K decode kernel for small M, the tiled tensor-core kernel above.
    DGQ_CUDA_KERNEL_AUTO = 0,
    /// The split-K decode kernel (small M only).
    DGQ_CUDA_KERNEL_DECODE = 1,
    /// The tiled tensor-core kernel (any M): Hopper `wgmma` where the shape allows, else
    /// `mma.sync`.
    DGQ_CUDA_KERNEL_PREFILL = 2,
    /// The tiled `mma.sync` kernel (any M).
    DGQ_CUDA_KERNEL_PREFILL_MMA = 3,
}

/// Tuning knobs of the GPU GEMM; `dgq_cuda_gemm_config_default()` is what callers normally want.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct dgq_cuda_gemm_config {
    /// A `dgq_cuda_kernel` value. Default: `DGQ_CUDA_KERNEL_AUTO`.
    pub kernel: i32,
    /// Split-K factor of the decode or `wgmma` kernel; 0 (default) lets the library choose
    /// (capped by the workspace).
    pub split_k: u32,
}

/// The default GPU GEMM configuration (automatic kernel and split).
#[no_mangle]
pub extern "C" fn dgq_cuda_gemm_config_default() -> dgq_cuda_gemm_config {
    dgq_cuda_gemm_config {
        kernel: dgq_cuda_kernel::DGQ_CUDA_KERNEL_AUTO as i32,
        split_k: 0,
    }
}

fn unsupported() -> CResult<()> {
    Err(Failure::new(
        dgq_status::DGQ_STATUS_UNSUPPORTED,
        if cfg!(feature = "cuda") {
            "CUDA support not available yet: dgq-capi was built with the `cuda` feature, but the \
             dgq_cuda_* entry points are not wired to dgq-cuda in this version"
        } else {
            "built without CUDA: rebuild dgq-capi with the `cuda` feature for the dgq_cuda_* functions"
        },
    ))
}

/// Whether this build of the library has working GPU entry points (`true`), or whether every
/// `dgq_cuda_*` function returns `DGQ_STATUS_UNSUPPORTED` (`false`). A `true` build still needs a
/// CUDA driver and a supported GPU at run time.
#[no_mangle]
pub extern "C" fn dgq_cuda_built() -> bool {
    false
}

/// Validates `w`, reorders it into the kernels' layout and uploads it to device `device` on
/// `stream` (the copy is enqueued; the weight is usable by later work on the same stream, and on
/// other streams after synchronising with it). On success `*out` receives a new handle; on
/// failure it is set to NULL.
///
/// # Safety
/// `w` must be a live weight, `stream` NULL or a valid stream of `device`, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_weight_upload(
    w: *const dgq_weight,
    device: i32,
    stream: *mut c_void,
    out: *mut *mut dgq_cuda_weight,
) -> dgq_status {
    let _ = (w, device, stream);
    guard(|| {
        if !out.is_null() && (out as usize) % std::mem::align_of::<*mut dgq_cuda_weight>() == 0 {
            // SAFETY: non-null, aligned; caller's contract.
            unsafe { out.write(std::ptr::null_mut()) };
        }
        unsupported()
    })
}

/// Frees a device weight (its device memory is released after the work already enqueued on the
/// upload stream); NULL is a no-op.
///
/// # Safety
/// `w` must be NULL or a device weight not freed before, with no work using it still pending.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_weight_free(w: *mut dgq_cuda_weight) {
    // SAFETY: caller's contract.
    crate::status::guard_value((), || unsafe { crate::args::free_handle(w) })
}

/// Bytes of device workspace `dgq_cuda_w4a8_gemm` needs for `m` tokens with this weight and
/// `config` (NULL: default), 0 when the chosen kernel needs none. The workspace must be zeroed
/// once before first use (every GEMM leaves it zeroed again); it may be reused by later calls
/// on the same stream but must not be used by two streams at once.
///
/// # Safety
/// `w` must be a live device weight, `config` NULL or readable, `bytes` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_gemm_workspace_size(
    w: *const dgq_cuda_weight,
    m: usize,
    config: *const dgq_cuda_gemm_config,
    bytes: *mut usize,
) -> dgq_status {
    let _ = (w, m, config, bytes);
    guard(unsupported)
}

/// Enqueues `y[m, N] = (x_scales[m or 0] · s1[n]) · (xq · W_s8ᵀ)[m, n] (+ bias[n])` on `stream`.
///
/// Device buffers: `xq` int8 `[m, K]` row-major, 16-byte aligned; `x_scales` f32 `[m]` (per
/// token, `num_scales == m`) or `[1]` (per tensor, `num_scales == 1`); `bias` f32 `[N]` or NULL;
/// `y` `[m, N]` of `y_dtype` (a `dgq_dtype`); `workspace` of `workspace_bytes` (at least
/// `dgq_cuda_gemm_workspace_size` for the same `config`; may be NULL when that is 0).
/// `config` NULL means `dgq_cuda_gemm_config_default()`.
///
/// # Safety
/// Device pointers must be valid for the sizes above on the weight's device; `stream` NULL or a
/// valid stream of that device.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_w4a8_gemm(
    w: *const dgq_cuda_weight,
    xq: *const i8,
    m: usize,
    x_scales: *const f32,
    num_scales: usize,
    bias: *const f32,
    y: *mut c_void,
    y_dtype: i32,
    config: *const dgq_cuda_gemm_config,
    workspace: *mut c_void,
    workspace_bytes: usize,
    stream: *mut c_void,
) -> dgq_status {
    let _ = (
        w,
        xq,
        m,
        x_scales,
        num_scales,
        bias,
        y,
        y_dtype,
        config,
        workspace,
        workspace_bytes,
        stream,
    );
    guard(unsupported)
}

/// Enqueues the exact INT32 accumulators `acc[m, N] = xq · W_s8ᵀ` (no epilogue) on `stream`.
/// `xq` int8 `[m, K]` (16-byte aligned), `acc` int32 `[m, N]`, workspace as for
/// `dgq_cuda_w4a8_gemm`, as are `config` and the workspace.
///
/// # Safety
/// As `dgq_cuda_w4a8_gemm`.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_w4a8_gemm_i32(
    w: *const dgq_cuda_weight,
    xq: *const i8,
    m: usize,
    acc: *mut i32,
    config: *const dgq_cuda_gemm_config,
    workspace: *mut c_void,
    workspace_bytes: usize,
    stream: *mut c_void,
) -> dgq_status {
    let _ = (w, xq, m, acc, config, workspace, workspace_bytes, stream);
    guard(unsupported)
}

/// Enqueues dynamic per-token INT8 quantization of `x` `[m, k]` (`x_dtype`, a `dgq_dtype`,
/// 16-byte aligned) on device `device`: `scales[i] = max|x_i| / 127` (f32 `[m]`) and
/// `q = clamp(round_half_even(x / scale), −127, 127)` (int8 `[m, k]`), bit-identical to
/// `dgq_quantize_acts_per_token`. With `smooth` (f32 `[k]`, or NULL) each row is divided by it
/// first.
///
/// # Safety
/// Device pointers valid for the sizes above on `device`; `stream` NULL or a valid stream of it.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_quantize_acts_per_token(
    device: i32,
    x: *const c_void,
    x_dtype: i32,
    m: usize,
    k: usize,
    smooth: *const f32,
    q: *mut i8,
    scales: *mut f32,
    stream: *mut c_void,
) -> dgq_status {
    let _ = (device, x, x_dtype, m, k, smooth, q, scales, stream);
    guard(unsupported)
}

/// Enqueues static per-tensor INT8 quantization with a calibrated `scale` (finite, > 0):
/// `q = clamp(round_half_even(x / scale), −127, 127)`, int8 `[m, k]`; `smooth` as for
/// `dgq_cuda_quantize_acts_per_token`.
///
/// # Safety
/// As `dgq_cuda_quantize_acts_per_token`.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_quantize_acts_static(
    device: i32,
    x: *const c_void,
    x_dtype: i32,
    m: usize,
    k: usize,
    smooth: *const f32,
    scale: f32,
    q: *mut i8,
    stream: *mut c_void,
) -> dgq_status {
    let _ = (device, x, x_dtype, m, k, smooth, scale, q, stream);
    guard(unsupported)
}
