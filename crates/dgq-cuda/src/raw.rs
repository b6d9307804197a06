//! Raw-pointer entry points for foreign callers (the C ABI in `dgq-capi`).
//!
//! Activations, outputs and the split-K workspace are caller-owned device addresses (`u64`,
//! 0 = NULL) and work is enqueued on a caller-owned `CUstream`/`cudaStream_t`; only the weight
//! is a library object ([`PreparedDgqWeight`]). Every function runs the same checks as the safe
//! API (shapes, alignment, split-K, device) through the same internal code and launches the same
//! kernels; what cannot be checked is the extent of a raw buffer, which the caller promises.
//!
//! Contexts: the functions take the device's primary context ([`device_context`] caches one
//! per device, with cudarc's event tracking off, since the caller orders its own streams). They
//! make it current for the duration of the call and restore the thread's previous context
//! afterwards, so that a caller's `cudaSetDevice` is never changed behind its back.
//!
//! Workspace: a raw workspace is one caller buffer laid out as [`WORKSPACE_COUNTERS`] u32 tile
//! counters followed by the int32 partial sums. The counters sit at a fixed place whatever the
//! shape, so one zeroed buffer can serve every GEMM (all shapes, all M) on one stream: every
//! GEMM leaves the counters at zero again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{result, sys, CudaContext, CudaStream};
use dgq_core::DualGrainedWeight;

use crate::error::{Error, Result};
use crate::{
    ffi, gemm_checked, layout, open_device, plan, quant_checked, GemmConfig, GemmOperands,
    KernelChoice, PreparedDgqWeight, QuantOperands, BUILT_WITH_CUDA,
};

/// A CUDA stream handle (`CUstream`, interchangeable with the runtime's `cudaStream_t`); null
/// is the legacy default stream.
pub type Stream = sys::CUstream;

/// u32 tile counters at the start of a raw workspace (16 KiB). Enough for the decode kernel up
/// to N = 262144 and for 4096 output tiles of the split-K `wgmma` kernel; a GEMM that would
/// need more runs without split-K instead.
pub const WORKSPACE_COUNTERS: usize = 4096;

/// Alignment a raw workspace must have (the kernels access it as 32-bit words). The split-K
/// fix-up reads the partial sums as 16-byte vectors, so a workspace that is not also 16-byte
/// aligned runs without split-K (correct, but slower for small M).
pub const WORKSPACE_ALIGN: usize = 4;

// Tile shapes of the kernels (plan.rs; the largest wgmma token tile and the fewest stages per
// split), needed to bound the workspace of a non-default configuration.
const DECODE_ROWS: usize = plan::DECODE_ROWS;
const WG_BN: usize = plan::WGMMA_BN;
const WG_BM_MAX: usize = 256;
const WG_BK: usize = plan::WGMMA_BK;
const WG_MIN_STAGES_PER_SPLIT: usize = 4;
// Upper bound of resident decode CTAs (128 threads) per SM: 2048 threads per SM on sm_90.
const DECODE_MAX_CTAS_PER_SM: usize = 16;

/// 16-bit float element type of a raw activation input or GEMM output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfType {
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
}

/// Activation scales of a raw GEMM (device address of f32 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawScales {
    /// `[M]` scales, one per token.
    PerToken(u64),
    /// One scale for the whole tensor.
    PerTensor(u64),
}

/// A caller-owned split-K workspace: device address and size in bytes (`ptr == 0` and
/// `bytes == 0` for none). Its first [`WORKSPACE_COUNTERS`] words must be zero before its first
/// use; every GEMM leaves them zero. One workspace must not be used by two streams at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawWorkspace {
    /// Device address, [`WORKSPACE_ALIGN`]-byte aligned.
    pub ptr: u64,
    /// Size in bytes.
    pub bytes: usize,
}

/// Makes a context current for a scope and restores the thread's previous one on drop.
pub struct ContextScope {
    prev: Option<sys::CUcontext>,
    changed: bool,
}

impl ContextScope {
    /// Binds `ctx` to the calling thread until the scope is dropped.
    pub fn enter(ctx: &CudaContext) -> Result<Self> {
        let prev = result::ctx::get_current()?;
        let changed = prev != Some(ctx.cu_ctx());
        ctx.bind_to_thread()?;
        Ok(ContextScope { prev, changed })
    }
}

impl Drop for ContextScope {
    fn drop(&mut self) {
        if self.changed {
            // SAFETY: restores the context that was current when the scope was entered (or
            // none); it was live then and the caller's code keeps it so.
            let _ = unsafe { result::ctx::set_current(self.prev.unwrap_or(std::ptr::null_mut())) };
        }
    }
}

/// Loads and initialises the driver, as values: no driver library, or one too old for cudarc's
/// symbols, is an error instead of a panic.
fn driver_ready() -> Result<()> {
    if !BUILT_WITH_CUDA {
        return Err(Error::NotBuiltWithCuda);
    }
    // SAFETY: only probes whether the driver library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::NoDevice(
            "the CUDA driver library (libcuda) is not present".into(),
        ));
    }
    std::panic::catch_unwind(result::init)
        .map_err(|_| {
            Error::NoDevice("the CUDA driver could not be initialised (driver too old?)".into())
        })?
        .map_err(|e| Error::NoDevice(e.to_string()))
}

/// The primary context of device `ordinal`, checked once ([`open_device`]) and cached for the
/// life of the process, with event tracking off. The calling thread's current context is left
/// as it was.
pub fn device_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    driver_ready()?;
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&ordinal) {
        return Ok(ctx.clone());
    }
    let prev = result::ctx::get_current()?;
    let opened = open_device(ordinal);
    if let Ok(ctx) = &opened {
        if prev != Some(ctx.cu_ctx()) {
            // SAFETY: restores the context current before `open_device` bound its own.
            unsafe { result::ctx::set_current(prev.unwrap_or(std::ptr::null_mut())) }?;
        }
    }
    let ctx = opened?;
    // SAFETY: no slice of this context exists yet; the raw API's callers order their streams
    // themselves (documented on every function), which is what disabling tracking requires.
    unsafe { ctx.disable_event_tracking() };
    map.insert(ordinal, ctx.clone());
    Ok(ctx)
}

/// A borrowed wrapper of the caller's stream on `ctx` (never destroyed by us).
///
/// # Safety
/// `stream` must be null or a live stream of `ctx`'s device for the wrapper's lifetime.
unsafe fn borrow_stream(ctx: &Arc<CudaContext>, stream: Stream) -> Arc<CudaStream> {
    // SAFETY: forwarded from the caller.
    unsafe { ctx.wrap_borrowed_stream(stream) }
}

/// Validates `w`, reorders it into the kernel layout and uploads it to `ctx`'s device on the
/// caller's `stream` (enqueued; usable by later work on that stream, or on others after
/// synchronising with it). The buffers are owned by the weight and freed, when it is dropped,
/// on the device's legacy default stream: drop it (see [`drop_prepared`]) only once no work
/// using it is pending.
///
/// # Safety
/// `stream` must be null or a live stream of `ctx`'s device.
pub unsafe fn prepare_raw(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    w: &DualGrainedWeight,
) -> Result<PreparedDgqWeight> {
    driver_ready()?;
    let _scope = ContextScope::enter(ctx)?;
    // SAFETY: forwarded from the caller.
    let s = unsafe { borrow_stream(ctx, stream) };
    let p = PreparedDgqWeight::prepare(w, &s)?;
    Ok(p.rehome(&ctx.default_stream()))
}

/// Drops a weight with `ctx` (its device's context) current, so that its buffers are released
/// on the right device whatever the calling thread has bound.
pub fn drop_prepared(ctx: &CudaContext, w: PreparedDgqWeight) {
    let scope = ContextScope::enter(ctx);
    drop(w);
    drop(scope);
}

/// Bytes of raw workspace for which a GEMM of `m` tokens with `w` and `cfg` runs with the split
/// the kernels prefer (0 when it runs without split-K). Smaller workspaces still work, with a
/// smaller split. Checks the shape and `cfg` as the GEMM does.
pub fn gemm_workspace_bytes(w: &PreparedDgqWeight, m: usize, cfg: &GemmConfig) -> Result<usize> {
    if !BUILT_WITH_CUDA {
        return Err(Error::NotBuiltWithCuda);
    }
    let (n, k) = (w.n(), w.k());
    crate::check_gemm_shape(m, n, k, w.group_size())?;
    if cfg.kernel == KernelChoice::Decode && m > crate::DECODE_MAX_M {
        return Err(Error::unsupported(
            "M",
            format!(
                "the decode kernel takes M ≤ {}, got {m}",
                crate::DECODE_MAX_M
            ),
        ));
    }
    crate::check_config(k, cfg)?;
    let sms = w.num_sms().max(1) as usize;
    // Automatic choices: the plans' own sizing of the split-K partials.
    let auto_parts = match (cfg.kernel, cfg.split_k) {
        (KernelChoice::Auto, None) => Some(plan::workspace_len(m, n, k, cfg, w.limits()).0),
        (KernelChoice::Decode, None) if plan::auto_decode(m) => {
            Some(plan::workspace_len(m, n, k, cfg, w.limits()).0)
        }
        _ => None,
    };
    let scratch = match auto_parts {
        Some(p) => p,
        None => {
            let splits = preferred_split(m, n, k, sms, cfg);
            if splits > 1 {
                // check_gemm_shape bounds M·max(N, K); the split is at most K / 64.
                splits
                    .checked_mul(m * n)
                    .map(|p| p.div_ceil(64) * 64)
                    .ok_or_else(|| Error::unsupported("workspace", "its size overflows"))?
            } else {
                0
            }
        }
    };
    if scratch == 0 {
        return Ok(0);
    }
    scratch
        .checked_add(WORKSPACE_COUNTERS)
        .and_then(|e| e.checked_mul(4))
        .ok_or_else(|| Error::unsupported("workspace", "its size overflows"))
}

/// An upper bound of the split-K factor the kernels would pick for a GEMM with a forced kernel
/// or split (1: none).
fn preferred_split(m: usize, n: usize, k: usize, sms: usize, cfg: &GemmConfig) -> usize {
    let kc = k / layout::CHUNK_K;
    let wgmma_ok = n % WG_BN == 0;
    match (cfg.kernel, cfg.split_k) {
        (KernelChoice::Mma, _) => 1,
        (KernelChoice::Wgmma, _) if !wgmma_ok => 1,
        // Sized by the kernels themselves in gemm_workspace_bytes.
        (KernelChoice::Auto, None) => 1,
        (KernelChoice::Decode, None) => {
            let slots = sms * DECODE_MAX_CTAS_PER_SM;
            (slots / (n / DECODE_ROWS)).max(1).min((kc / 8).max(1))
        }
        (KernelChoice::Wgmma, None) => {
            // Fewest tiles (the largest token tile) give an upper bound of the split.
            let tiles = (n / WG_BN) * m.div_ceil(WG_BM_MAX);
            (sms / tiles.max(1))
                .max(1)
                .min((k / WG_BK / WG_MIN_STAGES_PER_SPLIT).max(1))
        }
        (KernelChoice::Wgmma, Some(s)) => (s as usize).min(k / WG_BK),
        (KernelChoice::Decode | KernelChoice::Auto, Some(s)) => (s as usize).min(kc),
    }
}

fn non_null(what: &'static str, p: u64) -> Result<()> {
    if p == 0 {
        Err(Error::InvalidArgument {
            what,
            reason: "is NULL".into(),
        })
    } else {
        Ok(())
    }
}

fn workspace_parts(ws: RawWorkspace) -> Result<(u64, usize, u64, usize)> {
    if ws.ptr == 0 {
        if ws.bytes != 0 {
            return Err(Error::InvalidArgument {
                what: "workspace",
                reason: format!("is NULL but its size is {} bytes", ws.bytes),
            });
        }
        return Ok((0, 0, 0, 0));
    }
    if ws.ptr % WORKSPACE_ALIGN as u64 != 0 {
        return Err(Error::Misaligned {
            what: "workspace",
            align: WORKSPACE_ALIGN,
            addr: ws.ptr,
        });
    }
    let header = WORKSPACE_COUNTERS * 4;
    if ws.bytes <= header {
        // No room for partial sums: the GEMM runs without split-K, which needs no workspace.
        return Ok((0, 0, 0, 0));
    }
    Ok((
        ws.ptr + header as u64,
        (ws.bytes - header) / 4,
        ws.ptr,
        WORKSPACE_COUNTERS,
    ))
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw_impl(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    w: &PreparedDgqWeight,
    x: u64,
    m: usize,
    scales: Option<RawScales>,
    bias: u64,
    out: u64,
    out_kind: ffi::OutKind,
    ws: RawWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    driver_ready()?;
    non_null("x", x)?;
    non_null("out", out)?;
    let sx = match scales {
        Some(RawScales::PerToken(p)) => {
            non_null("activation scales", p)?;
            Some((p, None, true))
        }
        Some(RawScales::PerTensor(p)) => {
            non_null("activation scales", p)?;
            Some((p, None, false))
        }
        None => None,
    };
    let ws = workspace_parts(ws)?;
    let ops = GemmOperands {
        x,
        x_len: None,
        sx,
        bias: (bias != 0).then_some((bias, None)),
        out,
        out_len: None,
        out_kind,
        ws,
    };
    let _scope = ContextScope::enter(ctx)?;
    // SAFETY: forwarded from the caller.
    let s = unsafe { borrow_stream(ctx, stream) };
    gemm_checked(&s, m, w, &ops, cfg)
}

/// [`crate::w4a8_gemm`] on raw device addresses: `out[M, N]` (`out_type`) `= (s_x[m] · s1[n]) ·
/// (X_s8 · W_s8ᵀ)[m, n] (+ bias[n])`, enqueued on `stream`. `x` int8 `[M, K]` 16-byte aligned;
/// scales f32 and `bias` f32 `[N]` (0: none) 4-byte aligned; `out` 2-byte aligned.
///
/// # Safety
/// Every address must be 0 where allowed or a live device allocation on `ctx`'s device of the
/// size the shapes imply (and `ws.bytes` for the workspace), not written by other work while
/// this GEMM may run; `stream` null or a live stream of that device. `ctx` must be the
/// weight's device's context.
#[allow(clippy::too_many_arguments)]
pub unsafe fn w4a8_gemm_raw(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    w: &PreparedDgqWeight,
    x: u64,
    m: usize,
    scales: RawScales,
    bias: u64,
    out: u64,
    out_type: HalfType,
    ws: RawWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    let kind = match out_type {
        HalfType::F16 => ffi::OutKind::F16,
        HalfType::Bf16 => ffi::OutKind::Bf16,
    };
    // SAFETY: forwarded from the caller.
    unsafe { gemm_raw_impl(ctx, stream, w, x, m, Some(scales), bias, out, kind, ws, cfg) }
}

/// [`crate::w4a8_gemm_i32`] on raw device addresses: the exact INT32 accumulators `[M, N]`
/// (`out` 4-byte aligned).
///
/// # Safety
/// As [`w4a8_gemm_raw`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn w4a8_gemm_i32_raw(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    w: &PreparedDgqWeight,
    x: u64,
    m: usize,
    out: u64,
    ws: RawWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_raw_impl(
            ctx,
            stream,
            w,
            x,
            m,
            None,
            0,
            out,
            ffi::OutKind::I32,
            ws,
            cfg,
        )
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn quant_raw_impl(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    x: u64,
    x_type: HalfType,
    m: usize,
    k: usize,
    smooth: u64,
    static_scale: f32,
    q: u64,
    scales: u64,
) -> Result<()> {
    driver_ready()?;
    non_null("x", x)?;
    non_null("q", q)?;
    let ops = QuantOperands {
        x,
        x_len: None,
        bf16: x_type == HalfType::Bf16,
        smooth: (smooth != 0).then_some((smooth, None)),
        static_scale,
        q,
        q_len: None,
        scales: (static_scale == 0.0).then_some((scales, None)),
    };
    let _scope = ContextScope::enter(ctx)?;
    // SAFETY: forwarded from the caller.
    let s = unsafe { borrow_stream(ctx, stream) };
    quant_checked(&s, m, k, &ops)
}

/// [`crate::quantize_acts_dynamic`] on raw device addresses: `x` `[M, K]` (`x_type`, 16-byte
/// aligned) → codes `q` int8 `[M, K]` (8-byte aligned) and `scales` f32 `[M]` (4-byte
/// aligned); `smooth` f32 `[K]` (16-byte aligned, 0: none) divides `x` first.
///
/// # Safety
/// As [`w4a8_gemm_raw`], for these buffers.
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_acts_dynamic_raw(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    x: u64,
    x_type: HalfType,
    m: usize,
    k: usize,
    smooth: u64,
    q: u64,
    scales: u64,
) -> Result<()> {
    non_null("scales", scales)?;
    // SAFETY: forwarded from the caller.
    unsafe { quant_raw_impl(ctx, stream, x, x_type, m, k, smooth, 0.0, q, scales) }
}

/// [`crate::quantize_acts_static`] on raw device addresses (`scale` finite, ≥ 2⁻¹¹⁰).
///
/// # Safety
/// As [`quantize_acts_dynamic_raw`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_acts_static_raw(
    ctx: &Arc<CudaContext>,
    stream: Stream,
    x: u64,
    x_type: HalfType,
    m: usize,
    k: usize,
    smooth: u64,
    scale: f32,
    q: u64,
) -> Result<()> {
    crate::check_static_scale(scale)?;
    // SAFETY: forwarded from the caller.
    unsafe { quant_raw_impl(ctx, stream, x, x_type, m, k, smooth, scale, q, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_layout_keeps_counters_in_front() {
        assert_eq!(
            workspace_parts(RawWorkspace::default()).unwrap(),
            (0, 0, 0, 0)
        );
        assert!(matches!(
            workspace_parts(RawWorkspace { ptr: 0, bytes: 64 }),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            workspace_parts(RawWorkspace {
                ptr: 0x1002,
                bytes: 1 << 20
            }),
            Err(Error::Misaligned { .. })
        ));
        // Too small for any partials: no split-K.
        assert_eq!(
            workspace_parts(RawWorkspace {
                ptr: 0x1000,
                bytes: WORKSPACE_COUNTERS * 4
            })
            .unwrap(),
            (0, 0, 0, 0)
        );
        let base = 0x10_0000u64;
        let (p, pl, c, cl) = workspace_parts(RawWorkspace {
            ptr: base,
            bytes: WORKSPACE_COUNTERS * 4 + 1000,
        })
        .unwrap();
        assert_eq!((c, cl), (base, WORKSPACE_COUNTERS));
        assert_eq!((p, pl), (base + WORKSPACE_COUNTERS as u64 * 4, 250));
    }

    #[test]
    fn preferred_split_respects_kernel_limits() {
        let cfg = |kernel, split_k| GemmConfig {
            kernel,
            split_k,
            ..GemmConfig::default()
        };
        // The mma.sync kernel never splits K; the wgmma one takes any N % 128 == 0 and keeps
        // at least 4 stages (K = 512) per split: 3 tiles, K = 4096 gives at most 8 splits.
        assert_eq!(
            preferred_split(7, 4096, 4096, 132, &cfg(KernelChoice::Mma, Some(4))),
            1
        );
        assert_eq!(
            preferred_split(7, 384, 4096, 132, &cfg(KernelChoice::Wgmma, None)),
            8
        );
        // Explicit splits are capped by the K chunks each kernel splits over.
        assert_eq!(
            preferred_split(7, 4096, 256, 132, &cfg(KernelChoice::Decode, Some(4))),
            4
        );
        assert_eq!(
            preferred_split(7, 4096, 256, 132, &cfg(KernelChoice::Wgmma, Some(4))),
            2
        );
        // Heuristic wgmma split bound: 32 tiles of 128 channels on 132 SMs give 4 splits.
        assert_eq!(
            preferred_split(7, 4096, 8192, 132, &cfg(KernelChoice::Wgmma, None)),
            4
        );
        // The decode kernel asked for at 32 < M ≤ 64: its heuristic split bound.
        assert_eq!(
            preferred_split(48, 4096, 4096, 132, &cfg(KernelChoice::Decode, None)),
            8
        );
    }
}
