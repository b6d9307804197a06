//! GPU entry points: a DGQ weight prepared on the device, the W4A8 GEMM and INT8 activation
//! quantization on a caller-given `cudaStream_t`, with caller-owned device buffers.
//!
//! Conventions: `stream` is a `cudaStream_t` (or `CUstream`) passed as `void*` so that this
//! header needs no CUDA headers; NULL means the legacy default stream. Device pointers are owned
//! by the caller, must be allocated on the device the weight was uploaded to, and must stay valid
//! until the work enqueued on `stream` has finished. Nothing synchronises the stream and nothing
//! allocates in the GEMM or the quantizers; GEMM scratch is an explicit workspace whose size
//! `dgq_cuda_gemm_workspace_size` reports. Sizes of device buffers cannot be checked by the
//! library: they are implied by the dimensions passed, as documented per function.
//!
//! Availability: these functions exist in every build so that the ABI does not depend on build
//! options. In a build without CUDA support (no `cuda` feature, or dgq-cuda built without nvcc)
//! they return `DGQ_STATUS_UNSUPPORTED` before looking at their arguments; `dgq_cuda_built()`
//! tells which build this is. The kernels run on compute capability 9.0 (H100/H200); other
//! devices give `DGQ_STATUS_UNSUPPORTED`, a missing driver or device `DGQ_STATUS_CUDA`.
//!
//! Contexts: the library uses each device's primary context (the one the CUDA runtime uses),
//! retained on first use for the life of the process. Each call makes it current for its
//! duration and restores the calling thread's previous context before returning.
//!
//! Everything here forwards to `dgq_cuda::raw`, which runs the same checks as dgq-cuda's safe
//! API and launches the same kernels.

use std::ffi::c_void;

use crate::status::{dgq_status, guard, CResult, Failure};
use crate::weight::dgq_weight;

/// A DGQ weight in the kernels' layout on one CUDA device (opaque). Created by
/// `dgq_cuda_weight_upload`, freed by `dgq_cuda_weight_free`.
pub struct dgq_cuda_weight {
    #[cfg(feature = "cuda")]
    pub(crate) inner: imp::DeviceWeight,
    #[cfg(not(feature = "cuda"))]
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
    /// The `decode` kernel for m <= 32, the `wgmma` kernel above.
    DGQ_CUDA_KERNEL_AUTO = 0,
    /// The memory-bound `decode` kernel (m <= 64 only).
    DGQ_CUDA_KERNEL_DECODE = 1,
    /// The persistent, warp-specialised Hopper `wgmma` kernel (any m).
    DGQ_CUDA_KERNEL_WGMMA = 2,
    /// The tiled `mma.sync` kernel (any m).
    DGQ_CUDA_KERNEL_MMA = 3,
}

/// How the GPU GEMM launches: the kernel and the tuning knobs. Start from
/// `dgq_cuda_gemm_config_default()`, which is what callers normally want, and change fields;
/// the knobs other than `kernel` and `split_k` exist for benchmarks (results stay bit-exact,
/// only speed changes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct dgq_cuda_gemm_config {
    /// A `dgq_cuda_kernel` value. Default: `DGQ_CUDA_KERNEL_AUTO`.
    pub kernel: i32,
    /// Split-K factor of the decode (one K part per CTA) or `wgmma` kernel; 0 (default) lets
    /// the library choose (capped by the workspace).
    pub split_k: u32,
    /// 1 (default): launch the decode and `wgmma` kernels with programmatic dependent launch
    /// (the launch overlaps the previous kernel's tail); 0: without.
    pub pdl: i32,
    /// 1 (default): the `wgmma` kernel stores f16/bf16 output that is 16-byte aligned through
    /// TMA; 0: per-thread stores.
    pub wgmma_tma_store: i32,
    /// At most this many K parts inside one decode CTA, >= 1 (1: every K part in its own
    /// CTA). Default: 8, which caps nothing.
    pub decode_max_cta_parts: u32,
    /// With `decode_plan_split`, forces the decode plan: K parts per CTA (1, 2, 4 or 8; applied
    /// where the token tile was compiled for it: 8 up to m = 16, 4 up to 32, 2 up to 64) and
    /// CTAs along K. 0 and 0 (default): the library's plan.
    pub decode_plan_parts: u32,
    /// See `decode_plan_parts`.
    pub decode_plan_split: u32,
}

/// The default GPU GEMM configuration: automatic kernel and split, programmatic dependent
/// launch and the TMA-store epilogue on, no cap on the decode kernel's K parts per CTA.
#[no_mangle]
pub extern "C" fn dgq_cuda_gemm_config_default() -> dgq_cuda_gemm_config {
    dgq_cuda_gemm_config {
        kernel: dgq_cuda_kernel::DGQ_CUDA_KERNEL_AUTO as i32,
        split_k: 0,
        pdl: 1,
        wgmma_tma_store: 1,
        decode_max_cta_parts: 8,
        decode_plan_parts: 0,
        decode_plan_split: 0,
    }
}

/// `DGQ_STATUS_UNSUPPORTED` unless this build has working GPU entry points; checked before
/// any argument, so that such a build answers every `dgq_cuda_*` call the same way.
fn require_cuda() -> CResult<()> {
    if dgq_cuda_built() {
        return Ok(());
    }
    Err(Failure::new(
        dgq_status::DGQ_STATUS_UNSUPPORTED,
        if cfg!(feature = "cuda") {
            "built without CUDA kernels: dgq-capi has the `cuda` feature, but dgq-cuda found no \
             nvcc at build time (run scripts/setup-toolchain.sh, source its env.sh and rebuild)"
        } else {
            "built without CUDA: rebuild dgq-capi with the `cuda` feature for the dgq_cuda_* \
             functions"
        },
    ))
}

/// Whether this build of the library has working GPU entry points (`true`), or whether every
/// `dgq_cuda_*` function returns `DGQ_STATUS_UNSUPPORTED` (`false`). A `true` build still needs a
/// CUDA driver and a supported GPU at run time.
#[no_mangle]
pub extern "C" fn dgq_cuda_built() -> bool {
    #[cfg(feature = "cuda")]
    {
        dgq_cuda::BUILT_WITH_CUDA
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
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
    guard(|| {
        if !out.is_null() {
            // SAFETY: caller's contract (`out` writable).
            unsafe { out.write(std::ptr::null_mut()) };
        }
        require_cuda()?;
        #[cfg(feature = "cuda")]
        {
            // SAFETY: caller's contract.
            let mut out = unsafe { crate::args::out_ptr("out", out)? };
            // SAFETY: caller's contract.
            let w = unsafe { crate::args::handle("w", w)? };
            // SAFETY: caller's contract on `stream`.
            let dw = unsafe { imp::upload(w, device, stream)? };
            out.set(crate::args::into_handle(dgq_cuda_weight { inner: dw }));
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (w, device, stream, out);
            require_cuda()
        }
    })
}

/// Frees a device weight; NULL is a no-op. Its device memory is released in the order of the
/// device's legacy default stream (which waits for work on blocking streams, not on
/// non-blocking ones): synchronise every stream that used the weight first.
///
/// # Safety
/// `w` must be NULL or a device weight not freed before, with no work using it still pending.
#[no_mangle]
pub unsafe extern "C" fn dgq_cuda_weight_free(w: *mut dgq_cuda_weight) {
    // SAFETY: caller's contract.
    crate::status::guard_value((), || unsafe { crate::args::free_handle(w) })
}

/// Bytes of device workspace with which `dgq_cuda_w4a8_gemm` runs `m` tokens with this weight
/// and `config` (NULL: default) at its preferred split-K factor (split-K partial sums and
/// counters); 0 when it runs without split-K. A smaller workspace (or none) also works, with a
/// smaller split (slower for small `m`). The workspace must be 4-byte aligned (16-byte alignment
/// is needed for split-K) and zeroed once before first use (every GEMM leaves it zeroed again);
/// one workspace, sized for the largest query, may serve every weight and every `m` on one
/// stream, but must not be used by two streams at once. Checks `m` and `config` as the GEMM does.
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
    guard(|| {
        require_cuda()?;
        // SAFETY: caller's contract.
        let mut bytes = unsafe { crate::args::out_ptr("bytes", bytes)? };
        bytes.set(0);
        crate::args::nonzero("m", m)?;
        // SAFETY: caller's contract.
        let w = unsafe { crate::args::handle("w", w)? };
        // SAFETY: caller's contract.
        let cfg = unsafe { read_config(config)? };
        #[cfg(feature = "cuda")]
        {
            bytes.set(imp::workspace_bytes(&w.inner, m, &cfg)?);
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (w, m, cfg);
            require_cuda()
        }
    })
}

/// Enqueues `y[m, N] = (x_scales[m or 0] · s1[n]) · (xq · W_s8ᵀ)[m, n] (+ bias[n])` on `stream`.
///
/// Device buffers: `xq` int8 `[m, K]` row-major, 16-byte aligned; `x_scales` f32 `[m]` (per
/// token, `num_scales == m`) or `[1]` (per tensor, `num_scales == 1`); `bias` f32 `[N]` or NULL;
/// `y` `[m, N]` of `y_dtype` (a `dgq_dtype`); `workspace` of `workspace_bytes` (see
/// `dgq_cuda_gemm_workspace_size`; NULL with 0 bytes for none). Scales and bias must be 4-byte
/// aligned, `y` 2-byte aligned. `config` NULL means `dgq_cuda_gemm_config_default()`.
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
    guard(|| {
        require_cuda()?;
        // SAFETY: caller's contract.
        let w = unsafe { crate::args::handle("w", w)? };
        // SAFETY: caller's contract.
        let cfg = unsafe { read_config(config)? };
        crate::args::nonzero("m", m)?;
        let y_type = half_type("y_dtype", y_dtype)?;
        let scales = if num_scales == m {
            Scales::PerToken
        } else if num_scales == 1 {
            Scales::PerTensor
        } else {
            return Err(Failure::shape(format!(
                "num_scales = {num_scales}: must be m = {m} (per token) or 1 (per tensor)"
            )));
        };
        #[cfg(feature = "cuda")]
        {
            let g = imp::Gemm {
                xq: xq as u64,
                m,
                out: y as u64,
                ws: dgq_cuda::raw::RawWorkspace {
                    ptr: workspace as u64,
                    bytes: workspace_bytes,
                },
                stream,
            };
            // SAFETY: caller's contract on the device buffers and the stream.
            unsafe {
                imp::gemm(
                    &w.inner,
                    &g,
                    Some((scales, x_scales as u64, bias as u64, y_type)),
                    &cfg,
                )
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (
                w,
                xq,
                x_scales,
                scales,
                bias,
                y,
                y_type,
                cfg,
                workspace,
                workspace_bytes,
                stream,
            );
            require_cuda()
        }
    })
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
    guard(|| {
        require_cuda()?;
        // SAFETY: caller's contract.
        let w = unsafe { crate::args::handle("w", w)? };
        // SAFETY: caller's contract.
        let cfg = unsafe { read_config(config)? };
        crate::args::nonzero("m", m)?;
        #[cfg(feature = "cuda")]
        {
            let g = imp::Gemm {
                xq: xq as u64,
                m,
                out: acc as u64,
                ws: dgq_cuda::raw::RawWorkspace {
                    ptr: workspace as u64,
                    bytes: workspace_bytes,
                },
                stream,
            };
            // SAFETY: caller's contract on the device buffers and the stream.
            unsafe { imp::gemm(&w.inner, &g, None, &cfg) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (w, xq, m, acc, cfg, workspace, workspace_bytes, stream);
            require_cuda()
        }
    })
}

/// Enqueues dynamic per-token INT8 quantization of `x` `[m, k]` (`x_dtype`, a `dgq_dtype`,
/// 16-byte aligned; `k % 8 == 0`) on device `device`: `scales[i] = max|x_i| / 127` (f32 `[m]`,
/// 4-byte aligned) and `q = clamp(round_half_even(x / scale), −127, 127)` (int8 `[m, k]`,
/// 8-byte aligned), bit-identical to `dgq_quantize_acts_per_token`. With `smooth` (f32 `[k]`,
/// 16-byte aligned, or NULL) each row is divided by it first.
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
    guard(|| {
        require_cuda()?;
        let x_type = half_type("x_dtype", x_dtype)?;
        let device = device_ordinal(device)?;
        #[cfg(feature = "cuda")]
        {
            let a = imp::Acts {
                device,
                x: x as u64,
                x_type,
                m,
                k,
                smooth: smooth as u64,
                q: q as u64,
                stream,
            };
            // SAFETY: caller's contract on the device buffers and the stream.
            unsafe { imp::quantize(&a, Quant::PerToken(scales as u64)) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, x, x_type, m, k, smooth, q, scales, stream);
            require_cuda()
        }
    })
}

/// Enqueues static per-tensor INT8 quantization with a calibrated `scale` (finite, ≥ 2⁻¹¹⁰):
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
    guard(|| {
        require_cuda()?;
        let x_type = half_type("x_dtype", x_dtype)?;
        let device = device_ordinal(device)?;
        #[cfg(feature = "cuda")]
        {
            let a = imp::Acts {
                device,
                x: x as u64,
                x_type,
                m,
                k,
                smooth: smooth as u64,
                q: q as u64,
                stream,
            };
            // SAFETY: caller's contract on the device buffers and the stream.
            unsafe { imp::quantize(&a, Quant::Static(scale)) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (device, x, x_type, m, k, smooth, scale, q, stream);
            require_cuda()
        }
    })
}

/// Which activation scales a GEMM call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scales {
    PerToken,
    PerTensor,
}

/// Which activation quantization to run.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Quant {
    /// Dynamic, writing `[m]` scales to this device address.
    PerToken(u64),
    /// Static with this scale.
    Static(f32),
}

/// A `dgq_dtype` value, checked.
fn half_type(what: &str, v: i32) -> CResult<dgq_dtype> {
    match v {
        0 => Ok(dgq_dtype::DGQ_DTYPE_F16),
        1 => Ok(dgq_dtype::DGQ_DTYPE_BF16),
        v => Err(Failure::invalid(format!("{what} = {v} is not a dgq_dtype"))),
    }
}

fn device_ordinal(device: i32) -> CResult<usize> {
    usize::try_from(device).map_err(|_| Failure::invalid(format!("device = {device} must be >= 0")))
}

/// The GEMM configuration in checked form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    kernel: dgq_cuda_kernel,
    split_k: u32,
    pdl: bool,
    wgmma_tma_store: bool,
    decode_max_cta_parts: u32,
    decode_plan: Option<(u32, u32)>,
}

/// Reads an optional `dgq_cuda_gemm_config` (NULL: the default), rejecting unknown kernels.
///
/// # Safety
/// `config` must be NULL or readable.
unsafe fn read_config(config: *const dgq_cuda_gemm_config) -> CResult<Config> {
    let c = if config.is_null() {
        dgq_cuda_gemm_config_default()
    } else {
        // SAFETY: caller's contract.
        *unsafe { crate::args::handle("config", config)? }
    };
    use dgq_cuda_kernel::*;
    let kernel = match c.kernel {
        0 => DGQ_CUDA_KERNEL_AUTO,
        1 => DGQ_CUDA_KERNEL_DECODE,
        2 => DGQ_CUDA_KERNEL_WGMMA,
        3 => DGQ_CUDA_KERNEL_MMA,
        v => {
            return Err(Failure::invalid(format!(
                "config.kernel = {v} is not a dgq_cuda_kernel"
            )))
        }
    };
    let flag = |what: &str, v: i32| match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(Failure::new(
            dgq_status::DGQ_STATUS_INVALID_CONFIG,
            format!("config.{what} = {v} must be 0 or 1"),
        )),
    };
    let decode_plan = match (c.decode_plan_parts, c.decode_plan_split) {
        (0, 0) => None,
        (p, s) if p == 0 || s == 0 => {
            return Err(Failure::new(
                dgq_status::DGQ_STATUS_INVALID_CONFIG,
                format!(
                    "config.decode_plan_parts = {p} and decode_plan_split = {s}: both 0 or both set"
                ),
            ))
        }
        (p, s) => Some((p, s)),
    };
    Ok(Config {
        kernel,
        split_k: c.split_k,
        pdl: flag("pdl", c.pdl)?,
        wgmma_tma_store: flag("wgmma_tma_store", c.wgmma_tma_store)?,
        decode_max_cta_parts: c.decode_max_cta_parts,
        decode_plan,
    })
}

/// The dgq-cuda side: raw-pointer calls on cached device contexts.
#[cfg(feature = "cuda")]
pub(crate) mod imp {
    use std::ffi::c_void;
    use std::sync::Arc;

    use dgq_cuda::cudarc::driver::CudaContext;
    use dgq_cuda::raw::{self, RawScales, RawWorkspace};
    use dgq_cuda::{Error, GemmConfig, KernelChoice, PreparedDgqWeight};

    use super::{dgq_cuda_kernel, dgq_dtype, Config, Quant, Scales};
    use crate::status::{dgq_status::*, CResult, Failure};
    use crate::weight::dgq_weight;

    /// A weight on the device together with its device's context.
    pub(crate) struct DeviceWeight {
        ctx: Arc<CudaContext>,
        // `Option` so that `Drop` can hand the buffers to `raw::drop_prepared`.
        w: Option<PreparedDgqWeight>,
    }

    impl DeviceWeight {
        fn get(&self) -> CResult<&PreparedDgqWeight> {
            self.w
                .as_ref()
                .ok_or_else(|| Failure::new(DGQ_STATUS_INTERNAL, "device weight already released"))
        }
    }

    impl Drop for DeviceWeight {
        fn drop(&mut self) {
            if let Some(w) = self.w.take() {
                raw::drop_prepared(&self.ctx, w);
            }
        }
    }

    /// dgq-cuda's errors as C statuses.
    pub(crate) fn failure(e: Error) -> Failure {
        let status = match &e {
            Error::NotBuiltWithCuda
            | Error::UnsupportedDevice { .. }
            | Error::Unsupported { .. } => DGQ_STATUS_UNSUPPORTED,
            Error::Shape { .. } => DGQ_STATUS_SHAPE_MISMATCH,
            Error::Misaligned { .. } | Error::WrongDevice { .. } => DGQ_STATUS_INVALID_ARGUMENT,
            Error::InvalidArgument {
                what: "split_k" | "decode_max_cta_parts" | "decode_plan",
                ..
            } => DGQ_STATUS_INVALID_CONFIG,
            Error::InvalidArgument {
                what: "launch plan",
                ..
            } => DGQ_STATUS_INTERNAL,
            Error::InvalidArgument { .. } => DGQ_STATUS_INVALID_ARGUMENT,
            Error::Layout(_) => DGQ_STATUS_INVALID_DATA,
            Error::Core(_) => {
                return match e {
                    Error::Core(c) => Failure::from(c),
                    other => Failure::new(DGQ_STATUS_INTERNAL, other.to_string()),
                }
            }
            // NoDevice, Driver, Launch and variants added later: a CUDA-side failure.
            _ => DGQ_STATUS_CUDA,
        };
        Failure::new(status, e.to_string())
    }

    fn config(c: &Config) -> GemmConfig {
        GemmConfig {
            kernel: match c.kernel {
                dgq_cuda_kernel::DGQ_CUDA_KERNEL_AUTO => KernelChoice::Auto,
                dgq_cuda_kernel::DGQ_CUDA_KERNEL_DECODE => KernelChoice::Decode,
                dgq_cuda_kernel::DGQ_CUDA_KERNEL_WGMMA => KernelChoice::Wgmma,
                dgq_cuda_kernel::DGQ_CUDA_KERNEL_MMA => KernelChoice::Mma,
            },
            split_k: (c.split_k != 0).then_some(c.split_k),
            pdl: c.pdl,
            wgmma_tma_store: c.wgmma_tma_store,
            decode_max_cta_parts: c.decode_max_cta_parts,
            decode_plan: c.decode_plan,
        }
    }

    fn half(t: dgq_dtype) -> raw::HalfType {
        match t {
            dgq_dtype::DGQ_DTYPE_F16 => raw::HalfType::F16,
            dgq_dtype::DGQ_DTYPE_BF16 => raw::HalfType::Bf16,
        }
    }

    /// # Safety
    /// `stream` null or a live stream of `device`.
    pub(crate) unsafe fn upload(
        w: &dgq_weight,
        device: i32,
        stream: *mut c_void,
    ) -> CResult<DeviceWeight> {
        let ordinal = super::device_ordinal(device)?;
        // Shape support first: it needs no device.
        dgq_cuda::layout::check_supported(w.w.n(), w.w.k(), w.w.group_size).map_err(failure)?;
        let ctx = raw::device_context(ordinal).map_err(failure)?;
        // SAFETY: forwarded from the caller.
        let p = unsafe { raw::prepare_raw(&ctx, stream.cast(), &w.w) }.map_err(failure)?;
        Ok(DeviceWeight { ctx, w: Some(p) })
    }

    pub(crate) fn workspace_bytes(w: &DeviceWeight, m: usize, c: &Config) -> CResult<usize> {
        raw::gemm_workspace_bytes(w.get()?, m, &config(c)).map_err(failure)
    }

    /// Device operands of a GEMM call.
    pub(crate) struct Gemm {
        pub xq: u64,
        pub m: usize,
        pub out: u64,
        pub ws: RawWorkspace,
        pub stream: *mut c_void,
    }

    /// `epilogue`: `(scales kind, scales address, bias address, output type)`, or `None` for
    /// the INT32 accumulators.
    ///
    /// # Safety
    /// Device addresses and the stream as documented on the C functions.
    pub(crate) unsafe fn gemm(
        w: &DeviceWeight,
        g: &Gemm,
        epilogue: Option<(Scales, u64, u64, dgq_dtype)>,
        c: &Config,
    ) -> CResult<()> {
        let (pw, cfg) = (w.get()?, config(c));
        // SAFETY: forwarded from the caller.
        let r = unsafe {
            match epilogue {
                Some((kind, sx, bias, t)) => raw::w4a8_gemm_raw(
                    &w.ctx,
                    g.stream.cast(),
                    pw,
                    g.xq,
                    g.m,
                    match kind {
                        Scales::PerToken => RawScales::PerToken(sx),
                        Scales::PerTensor => RawScales::PerTensor(sx),
                    },
                    bias,
                    g.out,
                    half(t),
                    g.ws,
                    &cfg,
                ),
                None => raw::w4a8_gemm_i32_raw(
                    &w.ctx,
                    g.stream.cast(),
                    pw,
                    g.xq,
                    g.m,
                    g.out,
                    g.ws,
                    &cfg,
                ),
            }
        };
        r.map_err(failure)
    }

    /// Device operands of an activation quantization call.
    pub(crate) struct Acts {
        pub device: usize,
        pub x: u64,
        pub x_type: dgq_dtype,
        pub m: usize,
        pub k: usize,
        pub smooth: u64,
        pub q: u64,
        pub stream: *mut c_void,
    }

    /// # Safety
    /// Device addresses and the stream as documented on the C functions.
    pub(crate) unsafe fn quantize(a: &Acts, mode: Quant) -> CResult<()> {
        // Host-side argument checks first, so that they do not depend on a device.
        if a.x == 0 || a.q == 0 || matches!(mode, Quant::PerToken(0)) {
            return Err(Failure::invalid(match mode {
                Quant::PerToken(0) if a.x != 0 && a.q != 0 => "scales is NULL",
                _ if a.x == 0 => "x is NULL",
                _ => "q is NULL",
            }));
        }
        if a.m == 0 || a.k == 0 {
            return Err(Failure::invalid("m and k must be > 0"));
        }
        let ctx = raw::device_context(a.device).map_err(failure)?;
        // SAFETY: forwarded from the caller.
        let r = unsafe {
            match mode {
                Quant::PerToken(scales) => raw::quantize_acts_dynamic_raw(
                    &ctx,
                    a.stream.cast(),
                    a.x,
                    half(a.x_type),
                    a.m,
                    a.k,
                    a.smooth,
                    a.q,
                    scales,
                ),
                Quant::Static(scale) => raw::quantize_acts_static_raw(
                    &ctx,
                    a.stream.cast(),
                    a.x,
                    half(a.x_type),
                    a.m,
                    a.k,
                    a.smooth,
                    scale,
                    a.q,
                ),
            }
        };
        r.map_err(failure)
    }
}
