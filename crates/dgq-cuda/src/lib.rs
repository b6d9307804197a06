//! # dgq-cuda
//!
//! CUDA kernels for DGQ W4A8 inference on Hopper (sm_90a), with a safe Rust API on
//! [cudarc](https://docs.rs/cudarc) (device memory, streams, events; the driver is loaded at run
//! time).
//!
//! - [`PreparedDgqWeight::prepare`]: canonical [`DualGrainedWeight`] → kernel layout on the device
//!   ([`layout`] documents it; [`layout::unprepare_host`] inverts it exactly).
//! - [`quantize_acts_dynamic`] / [`quantize_acts_static`]: f16/bf16 `[M, K]` → int8 + f32 scales,
//!   optionally dividing by smoothing factors in the same pass.
//! - [`w4a8_gemm`]: int8 `[M, K]` × prepared `[N, K]` → f16/bf16 `[M, N]` with the
//!   `s_x[m]·s1[n]` epilogue and optional bias; [`w4a8_gemm_i32`] returns the exact INT32
//!   accumulators. u4 weights stay u4 in device memory and are expanded to int8 in registers
//!   inside the main loop; the products run on INT8 tensor cores: `mma.sync` m16n8k32 in the
//!   `decode` kernel (chosen for M ≤ 32; up to M = 64 on request) and in the tiled `mma` kernel,
//!   `wgmma` m64n{64,128,256}k32 with the weights as the register operand in the persistent,
//!   warp-specialised `wgmma` kernel (chosen above M = 32). The decode and wgmma kernels are
//!   launched with programmatic dependent launch (their launch overlaps the previous kernel's
//!   tail; they wait for it before touching memory). How each GEMM launches is a [`plan::Plan`]
//!   made on the host from the shape, the device's [`plan::DeviceLimits`] and the
//!   [`GemmConfig`], whose knobs (PDL, the TMA-store epilogue, the decode plan) exist for
//!   benchmark sweeps: results stay bit-exact, only speed changes.
//!
//! - [`raw`]: the same operations on raw device addresses and a caller's `CUstream` (for the C
//!   ABI), with the same checks, plus a workspace-size query and caller-provided workspace.
//!
//! Every launch is enqueued on the caller's stream; nothing synchronises and nothing allocates
//! in the hot path (split-K partial sums live in an explicit [`GemmWorkspace`]).
//!
//! Supported shapes: any `M ≥ 1`; `N % 128 == 0`; `K % 128 == 0`; group size a multiple of 64
//! dividing K. Anything else is a typed [`Error`] before launch. Built without nvcc, every call
//! returns [`Error::NotBuiltWithCuda`].

pub mod error;
mod ffi;
pub mod layout;
pub mod plan;
pub mod raw;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
pub use cudarc::{self};
use dgq_core::DualGrainedWeight;

pub use error::{Error, Result};
pub use ffi::BUILT_WITH_CUDA;
pub use layout::{prepare_host, unprepare_host, PreparedHost};

/// Largest M the decode kernel handles; larger M uses a tiled kernel.
pub const DECODE_MAX_M: usize = plan::DECODE_MAX_M;

/// Facts about the device the kernels need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Device name.
    pub name: String,
    /// Streaming multiprocessors.
    pub num_sms: i32,
    /// What the launch plans read about the device.
    pub limits: plan::DeviceLimits,
}

/// Opens device `ordinal` and checks that the kernels can run on it (built with CUDA, driver
/// present, compute capability 9.0).
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !BUILT_WITH_CUDA {
        return Err(Error::NotBuiltWithCuda);
    }
    // SAFETY: only probes whether the driver library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoDevice(
            "the CUDA driver library (libcuda) is not present".into(),
        ));
    }
    // cudarc panics when a driver symbol is missing (too old a driver); report that as a value.
    let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| {
            Error::NoDevice("the CUDA driver could not be initialised (driver too old?)".into())
        })?
        .map_err(|e| Error::NoDevice(e.to_string()))?;
    device_info(&ctx)?;
    Ok(ctx)
}

/// Checks the device behind `ctx` and returns what the kernels need to know about it.
pub fn device_info(ctx: &CudaContext) -> Result<DeviceInfo> {
    let (major, minor) = ctx.compute_capability()?;
    let name = ctx.name()?;
    if (major, minor) != (9, 0) {
        return Err(Error::UnsupportedDevice { name, major, minor });
    }
    use cudarc::driver::sys::CUdevice_attribute as A;
    let num_sms = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let smem = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?;
    let sms = u32::try_from(num_sms)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| Error::NoDevice(format!("{name} reports {num_sms} multiprocessors")))?;
    // The occupancy queries run on the thread's current context.
    ctx.bind_to_thread()?;
    let mut ctas = [[0u32; 4]; 4];
    for nt in [1u32, 2, 4, 8] {
        let mut parts = 1;
        while parts <= plan::decode_max_parts(nt) {
            ctas[plan::token_tile_slot(nt)][plan::parts_slot(parts)] =
                ffi::decode_ctas_per_sm(nt, parts);
            parts *= 2;
        }
    }
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name,
        num_sms,
        limits: plan::DeviceLimits {
            num_sms: sms,
            smem_per_sm: u32::try_from(smem).unwrap_or(0),
            decode_ctas_per_sm: ctas,
        },
    })
}

/// Runs a tiny dp4a kernel and checks its output: proves build, link, load and launch.
pub fn self_test(stream: &Arc<CudaStream>) -> Result<()> {
    device_info(stream.context())?;
    let mut out = stream.alloc_zeros::<i32>(32)?;
    {
        let (ptr, _guard) = out.device_ptr_mut(stream);
        // SAFETY: `out` holds 32 i32 on this stream's device.
        unsafe { ffi::ping(ptr, stream.cu_stream() as *mut _)? };
    }
    let host = stream.clone_dtoh(&out)?;
    for (i, &v) in host.iter().enumerate() {
        let want = 4 * (i * i) as i32;
        if v != want {
            return Err(Error::Launch {
                code: -100,
                message: format!("self test: out[{i}] = {v}, expected {want}"),
            });
        }
    }
    Ok(())
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// 16-bit float element types the kernels read and write (`f16`, `bf16`).
pub trait Half: sealed::Sealed + cudarc::driver::DeviceRepr + Copy {
    #[doc(hidden)]
    const IS_BF16: bool;
}
impl Half for half::f16 {
    const IS_BF16: bool = false;
}
impl Half for half::bf16 {
    const IS_BF16: bool = true;
}

/// DGQ weights in the kernel layout, on the device. Built once at load time by
/// [`PreparedDgqWeight::prepare`].
#[derive(Debug)]
pub struct PreparedDgqWeight {
    n: usize,
    k: usize,
    group_size: usize,
    ordinal: usize,
    limits: plan::DeviceLimits,
    wq: CudaSlice<u8>,
    meta: CudaSlice<u32>,
    qmin: CudaSlice<u8>,
    s1: CudaSlice<f32>,
}

impl PreparedDgqWeight {
    /// Validates `w`, reorders it into the kernel layout on the host and uploads it on `stream`.
    pub fn prepare(w: &DualGrainedWeight, stream: &Arc<CudaStream>) -> Result<Self> {
        if !BUILT_WITH_CUDA {
            return Err(Error::NotBuiltWithCuda);
        }
        Self::upload(&prepare_host(w)?, stream)
    }

    /// Uploads an already prepared host weight (checked by a full decode first).
    pub fn upload(h: &PreparedHost, stream: &Arc<CudaStream>) -> Result<Self> {
        if !BUILT_WITH_CUDA {
            return Err(Error::NotBuiltWithCuda);
        }
        let info = device_info(stream.context())?;
        unprepare_host(h)?;
        Self::upload_unchecked(h, stream, &info)
    }

    fn upload_unchecked(
        h: &PreparedHost,
        stream: &Arc<CudaStream>,
        info: &DeviceInfo,
    ) -> Result<Self> {
        Ok(PreparedDgqWeight {
            n: h.n,
            k: h.k,
            group_size: h.group_size,
            ordinal: info.ordinal,
            limits: info.limits,
            wq: stream.clone_htod(&h.wq)?,
            meta: stream.clone_htod(&h.meta)?,
            qmin: stream.clone_htod(&h.qmin)?,
            s1: stream.clone_htod(&h.s1)?,
        })
    }

    /// Uploads a prepared host weight without decoding it first: for benchmarks that fill the
    /// device with many copies of one checked weight.
    #[doc(hidden)]
    pub fn upload_trusted(h: &PreparedHost, stream: &Arc<CudaStream>) -> Result<Self> {
        if !BUILT_WITH_CUDA {
            return Err(Error::NotBuiltWithCuda);
        }
        let info = device_info(stream.context())?;
        layout::check_supported(h.n, h.k, h.group_size)?;
        Self::upload_unchecked(h, stream, &info)
    }

    /// Copies the device buffers back (for tests: `unprepare_host(&w.download(s)?)` is `w`).
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<PreparedHost> {
        Ok(PreparedHost {
            n: self.n,
            k: self.k,
            group_size: self.group_size,
            wq: stream.clone_dtoh(&self.wq)?,
            meta: stream.clone_dtoh(&self.meta)?,
            qmin: stream.clone_dtoh(&self.qmin)?,
            s1: stream.clone_dtoh(&self.s1)?,
        })
    }

    /// Output channels N.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input channels K.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Group size.
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    /// Ordinal of the device the weight lives on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// Streaming multiprocessors of that device (the kernels' heuristics use it).
    pub fn num_sms(&self) -> i32 {
        self.limits.num_sms as i32
    }
    /// What the launch plans read about that device.
    pub fn limits(&self) -> &plan::DeviceLimits {
        &self.limits
    }

    /// Moves ownership of the device buffers to `owner` (no copy): they are freed in its stream
    /// order when the weight is dropped. Used by the raw API so that a weight uploaded on a
    /// borrowed stream does not free its memory on that stream, which may be gone by then.
    pub(crate) fn rehome(self, owner: &Arc<CudaStream>) -> Self {
        fn move_slice<T>(s: CudaSlice<T>, owner: &Arc<CudaStream>) -> CudaSlice<T> {
            let len = s.len();
            let ptr = s.leak();
            // SAFETY: `ptr` is the live allocation of `len` elements just released by `leak`,
            // on the same context as `owner`; it is owned by exactly one slice again.
            unsafe { owner.upgrade_device_ptr(ptr, len) }
        }
        PreparedDgqWeight {
            wq: move_slice(self.wq, owner),
            meta: move_slice(self.meta, owner),
            qmin: move_slice(self.qmin, owner),
            s1: move_slice(self.s1, owner),
            ..self
        }
    }
    /// Bytes the GEMM reads per call (codes, meta, s1); qmin is not read.
    pub fn gemm_bytes(&self) -> usize {
        self.wq.num_bytes() + self.meta.num_bytes() + self.s1.num_bytes()
    }
}

/// Split-K scratch for the GEMM kernels: int32 partial sums and per-tile counters. Counters
/// start at zero and every GEMM leaves them at zero. One workspace serves one stream at a time.
#[derive(Debug)]
pub struct GemmWorkspace {
    partials: CudaSlice<i32>,
    counters: CudaSlice<u32>,
}

/// Largest M for which [`GemmWorkspace::for_shapes`] sizes the scratch (use
/// [`GemmWorkspace::for_shapes_up_to`] for larger M; with too small a workspace the GEMM still
/// runs, with a smaller split-K factor).
pub const WORKSPACE_MAX_M: usize = 2048;

impl GemmWorkspace {
    /// A workspace large enough for the kernels' preferred split-K factor on every `(N, K)` in
    /// `shapes` and every M ≤ [`WORKSPACE_MAX_M`]. With a smaller workspace the GEMM still
    /// runs, with a smaller split.
    pub fn for_shapes(stream: &Arc<CudaStream>, shapes: &[(usize, usize)]) -> Result<Self> {
        Self::for_shapes_up_to(stream, shapes, WORKSPACE_MAX_M)
    }

    /// As [`GemmWorkspace::for_shapes`] for every M ≤ `max_m`. Split-K is only chosen while the
    /// output tiles do not fill the SMs, so the partial sums stay small at large M.
    pub fn for_shapes_up_to(
        stream: &Arc<CudaStream>,
        shapes: &[(usize, usize)],
        max_m: usize,
    ) -> Result<Self> {
        Self::for_config(stream, shapes, max_m, &GemmConfig::default())
    }

    /// As [`GemmWorkspace::for_shapes_up_to`] for the plans of `cfg`'s decode knobs (with the
    /// automatic kernel choice).
    pub fn for_config(
        stream: &Arc<CudaStream>,
        shapes: &[(usize, usize)],
        max_m: usize,
        cfg: &GemmConfig,
    ) -> Result<Self> {
        if !BUILT_WITH_CUDA {
            return Err(Error::NotBuiltWithCuda);
        }
        let info = device_info(stream.context())?;
        let mut partials = 1usize;
        let mut counters = 1usize;
        for &(n, k) in shapes {
            layout::check_supported(n, k, layout::CHUNK_K)?;
            for m in 1..=max_m {
                let (p, c) = plan::workspace_len(m, n, k, cfg, &info.limits);
                partials = partials.max(p);
                counters = counters.max(c);
            }
        }
        Ok(GemmWorkspace {
            partials: stream.alloc_zeros(partials)?,
            counters: stream.alloc_zeros(counters)?,
        })
    }

    /// A workspace of explicit capacity: `scratch` int32 elements and `counters` tile counters
    /// (both at least 1). A GEMM uses what fits: see [`GemmWorkspace::for_shapes`].
    pub fn with_capacity(
        stream: &Arc<CudaStream>,
        scratch: usize,
        counters: usize,
    ) -> Result<Self> {
        if !BUILT_WITH_CUDA {
            return Err(Error::NotBuiltWithCuda);
        }
        Ok(GemmWorkspace {
            partials: stream.alloc_zeros(scratch.max(1))?,
            counters: stream.alloc_zeros(counters.max(1))?,
        })
    }

    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        self.partials.num_bytes() + self.counters.num_bytes()
    }
}

/// Which GEMM kernel to run (the C ABI's `dgq_cuda_kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// The `decode` kernel for M ≤ 32 ([`plan::AUTO_DECODE_MAX_M`]), the `wgmma` kernel above
    /// (every supported N is a multiple of its 128-channel tile).
    #[default]
    Auto,
    /// The memory-bound `decode` kernel (M ≤ [`DECODE_MAX_M`]): `mma.sync`, K split inside and
    /// across CTAs.
    Decode,
    /// The persistent, warp-specialised Hopper `wgmma` kernel (any M).
    Wgmma,
    /// The tiled `mma.sync` kernel (any M).
    Mma,
}

/// How a GEMM launches: the kernel and the tuning knobs. [`GemmConfig::default`] is what
/// callers normally want; the other values exist for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmConfig {
    /// Kernel selection. Default: [`KernelChoice::Auto`].
    pub kernel: KernelChoice,
    /// Split-K factor of the decode (one K part per CTA) or `wgmma` kernel (`None`, the default:
    /// the plan's; capped by the workspace).
    pub split_k: Option<u32>,
    /// Programmatic dependent launch for the decode and `wgmma` kernels: their launch overlaps
    /// the previous kernel's tail. Default: on.
    pub pdl: bool,
    /// TMA-store epilogue of the `wgmma` kernel for f16/bf16 output that is 16-byte aligned
    /// (H100: 4096² M = 4096 110.8 vs 120.8 µs with per-thread stores). Default: on.
    pub wgmma_tma_store: bool,
    /// At most this many K parts inside one decode CTA (1: every K part in its own CTA). Default:
    /// 8, which caps nothing.
    pub decode_max_cta_parts: u32,
    /// Forces the decode plan to (K parts per CTA, CTAs along K) where the parts are a power of
    /// two the token tile was compiled for (8 up to M = 16, 4 up to 32, 2 up to 64; other M
    /// keep the plan's), for sweeps. Default: `None`. `split_k` takes precedence.
    pub decode_plan: Option<(u32, u32)>,
}

impl Default for GemmConfig {
    fn default() -> Self {
        GemmConfig {
            kernel: KernelChoice::Auto,
            split_k: None,
            pdl: true,
            wgmma_tma_store: true,
            decode_max_cta_parts: 8,
            decode_plan: None,
        }
    }
}

/// Activation scales of a [`w4a8_gemm`] call, on the device.
#[derive(Debug, Clone, Copy)]
pub enum ActScales<'a> {
    /// One scale per token, length M (dynamic quantization).
    PerToken(&'a CudaSlice<f32>),
    /// One scale for the tensor, length 1 (static quantization).
    PerTensor(&'a CudaSlice<f32>),
}

fn check_len(what: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::shape(what, expected, got))
    }
}

fn check_align(what: &'static str, ptr: u64, align: usize) -> Result<()> {
    if ptr % align as u64 == 0 {
        Ok(())
    } else {
        Err(Error::Misaligned {
            what,
            align,
            addr: ptr,
        })
    }
}

fn check_ordinal(what: &'static str, stream: &CudaStream, found: usize) -> Result<()> {
    let expected = stream.context().ordinal();
    if expected == found {
        Ok(())
    } else {
        Err(Error::WrongDevice {
            what,
            expected,
            found,
        })
    }
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::unsupported(what, format!("{v} does not fit in i32")))
}

/// Checks a GEMM's dimensions against the kernels' limits (no device needed).
pub fn check_gemm_shape(m: usize, n: usize, k: usize, group_size: usize) -> Result<()> {
    if m == 0 {
        return Err(Error::shape("M", "at least 1", 0));
    }
    layout::check_supported(n, k, group_size)?;
    to_i32("M", m)?;
    if m.checked_mul(n.max(k)).is_none() {
        return Err(Error::unsupported("M", "M·max(N, K) overflows"));
    }
    Ok(())
}

/// Device addresses of one GEMM's operands. A length is `None` where the caller holds a raw
/// pointer whose extent cannot be known (the [`raw`] API: the caller's contract).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmOperands {
    pub x: u64,
    pub x_len: Option<usize>,
    /// Activation scales: address, length, per token.
    pub sx: Option<(u64, Option<usize>, bool)>,
    pub bias: Option<(u64, Option<usize>)>,
    pub out: u64,
    pub out_len: Option<usize>,
    pub out_kind: ffi::OutKind,
    /// Split-K scratch: partials address and length, counters address and length (elements).
    pub ws: (u64, usize, u64, usize),
}

/// Every check the GEMM makes before launching, then the launch; shared by the safe and the
/// raw API so that both reject exactly the same inputs.
pub(crate) fn gemm_checked(
    stream: &Arc<CudaStream>,
    m: usize,
    w: &PreparedDgqWeight,
    ops: &GemmOperands,
    cfg: &GemmConfig,
) -> Result<()> {
    if !BUILT_WITH_CUDA {
        return Err(Error::NotBuiltWithCuda);
    }
    let (n, k) = (w.n, w.k);
    check_gemm_shape(m, n, k, w.group_size)?;
    check_ordinal("weight", stream, w.ordinal)?;
    if let Some(len) = ops.x_len {
        check_len("x (M·K int8)", m * k, len)?;
    }
    if let Some(len) = ops.out_len {
        check_len("out (M·N)", m * n, len)?;
    }
    if cfg.kernel == KernelChoice::Decode && m > DECODE_MAX_M {
        return Err(Error::unsupported(
            "M",
            format!("the decode kernel takes M ≤ {DECODE_MAX_M}, got {m}"),
        ));
    }
    if let Some((_, Some(len))) = ops.bias {
        check_len("bias (N)", n, len)?;
    }
    match ops.sx {
        Some((_, Some(len), true)) => check_len("per-token scales (M)", m, len)?,
        Some((_, Some(len), false)) => check_len("per-tensor scale", 1, len)?,
        _ => {}
    }
    check_config(k, cfg)?;
    check_align("x", ops.x, 16)?;
    check_align(
        "out",
        ops.out,
        if ops.out_kind == ffi::OutKind::I32 {
            4
        } else {
            2
        },
    )?;
    if let Some((p, _, _)) = ops.sx {
        check_align("activation scales", p, 4)?;
    }
    if let Some((p, _)) = ops.bias {
        check_align("bias", p, 4)?;
    }
    let (wq, _g1) = w.wq.device_ptr(stream);
    let (wmeta, _g2) = w.meta.device_ptr(stream);
    let (s1, _g3) = w.s1.device_ptr(stream);
    let launch = ffi::GemmLaunch {
        x: ops.x,
        wq,
        wmeta,
        s1,
        sx: ops.sx.map_or(0, |s| s.0),
        sx_per_token: ops.sx.is_some_and(|s| s.2),
        bias: ops.bias.map_or(0, |b| b.0),
        out: ops.out,
        out_kind: ops.out_kind,
        m: to_i32("M", m)?,
        n: to_i32("N", n)?,
        k: to_i32("K", k)?,
        group_size: to_i32("group size", w.group_size)?,
        ws_partials: ops.ws.0,
        ws_partials_len: ops.ws.1,
        ws_counters: ops.ws.2,
        ws_counters_len: ops.ws.3,
    };
    let ws = plan::WorkspaceCapacity {
        partials: if ops.ws.0 == 0 { 0 } else { ops.ws.1 },
        partials_aligned: ops.ws.0 != 0 && ops.ws.0 % 16 == 0,
        counters: if ops.ws.2 == 0 { 0 } else { ops.ws.3 },
    };
    let p = plan::plan(m, n, k, cfg, &w.limits, &ws);
    if let Some(reason) = plan::plan_error(m, n, k, &p, &ws) {
        return Err(Error::InvalidArgument {
            what: "launch plan",
            reason,
        });
    }
    // SAFETY: the weight's pointers come from its live allocations; the operands' lengths were
    // checked above against the shapes the kernel indexes where they are known, and are the
    // caller's contract where they are not (raw API); the stream belongs to the weight's device.
    unsafe { ffi::gemm(&launch, &p, stream.cu_stream() as *mut _) }
}

/// Checks `cfg`'s values against K: the split-K factor, the decode CTA cap and a forced
/// decode plan.
fn check_config(k: usize, cfg: &GemmConfig) -> Result<()> {
    let kc = k / layout::CHUNK_K;
    if let Some(s) = cfg.split_k {
        if s == 0 || s as usize > kc {
            return Err(Error::InvalidArgument {
                what: "split_k",
                reason: format!("must be in 1..={kc}, got {s}"),
            });
        }
    }
    if cfg.decode_max_cta_parts == 0 {
        return Err(Error::InvalidArgument {
            what: "decode_max_cta_parts",
            reason: "must be at least 1".into(),
        });
    }
    if let Some((parts, split)) = cfg.decode_plan {
        if !matches!(parts, 1 | 2 | 4 | 8) || split == 0 || split as usize > kc {
            return Err(Error::InvalidArgument {
                what: "decode_plan",
                reason: format!(
                    "(parts, split) must have parts in {{1, 2, 4, 8}} and split in 1..={kc}, \
                     got ({parts}, {split})"
                ),
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn gemm_impl(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<i8>,
    m: usize,
    w: &PreparedDgqWeight,
    scales: Option<ActScales<'_>>,
    bias: Option<&CudaSlice<f32>>,
    out_ptr: u64,
    out_len: usize,
    out_kind: ffi::OutKind,
    ws: &mut GemmWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    let x_len = x.len();
    let (x_ptr, _gx) = x.device_ptr(stream);
    let (sx_slice, per_token) = match scales {
        Some(ActScales::PerToken(s)) => (Some(s), true),
        Some(ActScales::PerTensor(s)) => (Some(s), false),
        None => (None, false),
    };
    let sx_guard = sx_slice.map(|s| (s.device_ptr(stream), s.len()));
    let bias_guard = bias.map(|b| (b.device_ptr(stream), b.len()));
    let (parts_len, counters_len) = (ws.partials.len(), ws.counters.len());
    let (parts, _g4) = ws.partials.device_ptr_mut(stream);
    let (counters, _g5) = ws.counters.device_ptr_mut(stream);
    let ops = GemmOperands {
        x: x_ptr,
        x_len: Some(x_len),
        sx: sx_guard
            .as_ref()
            .map(|((p, _), len)| (*p, Some(*len), per_token)),
        bias: bias_guard.as_ref().map(|((p, _), len)| (*p, Some(*len))),
        out: out_ptr,
        out_len: Some(out_len),
        out_kind,
        ws: (parts, parts_len, counters, counters_len),
    };
    gemm_checked(stream, m, w, &ops, cfg)
}

/// `out[M, N] = (s_x[m] · s1[n]) · (X_s8 · W_s8ᵀ)[m, n] (+ bias[n])`, rounded to `O`.
///
/// `x` is int8 `[M, K]` row-major (16-byte aligned), `out` `[M, N]` row-major. Enqueued on
/// `stream`; `ws` must not be in use by another stream at the same time.
#[allow(clippy::too_many_arguments)]
pub fn w4a8_gemm<O: Half>(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<i8>,
    m: usize,
    w: &PreparedDgqWeight,
    scales: ActScales<'_>,
    bias: Option<&CudaSlice<f32>>,
    out: &mut impl DevicePtrMut<O>,
    ws: &mut GemmWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    let len = out.len();
    let (out_ptr, _g) = out.device_ptr_mut(stream);
    let kind = if O::IS_BF16 {
        ffi::OutKind::Bf16
    } else {
        ffi::OutKind::F16
    };
    gemm_impl(
        stream,
        x,
        m,
        w,
        Some(scales),
        bias,
        out_ptr,
        len,
        kind,
        ws,
        cfg,
    )
}

/// The exact INT32 accumulators `X_s8 · W_s8ᵀ` `[M, N]` (same kernels, no epilogue).
pub fn w4a8_gemm_i32(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<i8>,
    m: usize,
    w: &PreparedDgqWeight,
    out: &mut impl DevicePtrMut<i32>,
    ws: &mut GemmWorkspace,
    cfg: &GemmConfig,
) -> Result<()> {
    let len = out.len();
    let (out_ptr, _g) = out.device_ptr_mut(stream);
    gemm_impl(
        stream,
        x,
        m,
        w,
        None,
        None,
        out_ptr,
        len,
        ffi::OutKind::I32,
        ws,
        cfg,
    )
}

/// Device addresses of one activation quantization's operands (lengths as in [`GemmOperands`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantOperands {
    pub x: u64,
    pub x_len: Option<usize>,
    pub bf16: bool,
    pub smooth: Option<(u64, Option<usize>)>,
    /// 0 for dynamic quantization, else the static scale (already validated).
    pub static_scale: f32,
    pub q: u64,
    pub q_len: Option<usize>,
    pub scales: Option<(u64, Option<usize>)>,
}

/// Every check activation quantization makes, then the launch (shared by the safe and raw API).
pub(crate) fn quant_checked(
    stream: &Arc<CudaStream>,
    m: usize,
    k: usize,
    ops: &QuantOperands,
) -> Result<()> {
    if !BUILT_WITH_CUDA {
        return Err(Error::NotBuiltWithCuda);
    }
    if m == 0 {
        return Err(Error::shape("M", "at least 1", 0));
    }
    if k == 0 || k % 8 != 0 {
        return Err(Error::unsupported(
            "K",
            format!("activation quantization needs K % 8 == 0, got {k}"),
        ));
    }
    to_i32("M", m)?;
    to_i32("K", k)?;
    let mk = m
        .checked_mul(k)
        .ok_or_else(|| Error::unsupported("M·K", "overflows"))?;
    if let Some(len) = ops.x_len {
        check_len("x (M·K)", mk, len)?;
    }
    if let Some(len) = ops.q_len {
        check_len("q (M·K)", mk, len)?;
    }
    if let Some((_, Some(len))) = ops.smooth {
        check_len("smoothing factors (K)", k, len)?;
    }
    if let Some((_, Some(len))) = ops.scales {
        check_len("scales (M)", m, len)?;
    }
    check_align("x", ops.x, 16)?;
    check_align("q", ops.q, 8)?;
    if let Some((p, _)) = ops.smooth {
        check_align("smoothing factors", p, 16)?;
    }
    if let Some((p, _)) = ops.scales {
        check_align("scales", p, 4)?;
    }
    let launch = ffi::QuantLaunch {
        x: ops.x,
        bf16: ops.bf16,
        smooth: ops.smooth.map_or(0, |s| s.0),
        static_scale: ops.static_scale,
        q: ops.q,
        scales: ops.scales.map_or(0, |s| s.0),
        m: m as i32,
        k: k as i32,
    };
    // SAFETY: lengths checked above against M·K, K and M where known (the caller's contract
    // for raw pointers); pointers from live allocations.
    unsafe { ffi::quantize(&launch, stream.cu_stream() as *mut _) }
}

/// Rejects static scales the CPU recipe rejects.
fn check_static_scale(scale: f32) -> Result<()> {
    if scale.is_finite() && scale >= dgq_core::act::MIN_STATIC_SCALE {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "static scale",
            reason: format!("must be finite and >= 2^-110, got {scale}"),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn quant_impl<T: Half>(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<T>,
    m: usize,
    k: usize,
    smooth: Option<&CudaSlice<f32>>,
    static_scale: f32,
    q: &mut impl DevicePtrMut<i8>,
    scales: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let (x_len, q_len) = (x.len(), q.len());
    let (x_ptr, _g0) = x.device_ptr(stream);
    let (q_ptr, _g1) = q.device_ptr_mut(stream);
    let smooth_guard = smooth.map(|s| (s.device_ptr(stream), s.len()));
    let scales_guard = scales.map(|s| {
        let len = s.len();
        (s.device_ptr_mut(stream), len)
    });
    let ops = QuantOperands {
        x: x_ptr,
        x_len: Some(x_len),
        bf16: T::IS_BF16,
        smooth: smooth_guard.as_ref().map(|((p, _), l)| (*p, Some(*l))),
        static_scale,
        q: q_ptr,
        q_len: Some(q_len),
        scales: scales_guard.as_ref().map(|((p, _), l)| (*p, Some(*l))),
    };
    quant_checked(stream, m, k, &ops)
}

/// Dynamic per-token INT8 quantization of `x` `[M, K]` (f16/bf16): writes codes to `q` `[M, K]`
/// and `scales[m] = max|x_m| / 127`. With `smooth` (`[K]`, f32) the row is divided by it first.
/// Bit-identical to `dgq_core::act` (round half to even, codes in [−127, 127]).
#[allow(clippy::too_many_arguments)]
pub fn quantize_acts_dynamic<T: Half>(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<T>,
    m: usize,
    k: usize,
    smooth: Option<&CudaSlice<f32>>,
    q: &mut impl DevicePtrMut<i8>,
    scales: &mut CudaSlice<f32>,
) -> Result<()> {
    quant_impl(stream, x, m, k, smooth, 0.0, q, Some(scales))
}

/// Static per-tensor INT8 quantization: `q = clamp(rne(x · (1/scale)), −127, 127)`, optionally
/// after dividing by `smooth`. `scale` must be finite and `≥ 2⁻¹¹⁰`
/// ([`dgq_core::act::MIN_STATIC_SCALE`], as on the CPU).
pub fn quantize_acts_static<T: Half>(
    stream: &Arc<CudaStream>,
    x: &impl DevicePtr<T>,
    m: usize,
    k: usize,
    smooth: Option<&CudaSlice<f32>>,
    scale: f32,
    q: &mut impl DevicePtrMut<i8>,
) -> Result<()> {
    check_static_scale(scale)?;
    quant_impl(stream, x, m, k, smooth, scale, q, None)
}
