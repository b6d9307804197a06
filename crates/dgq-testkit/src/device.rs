//! The backends a test body runs on, and [`crate::test_device!`].

use dgq_core::DualGrainedWeight;

#[cfg(feature = "gpu")]
pub use gpu::*;

/// Whether `DGQ_REQUIRE_GPU=1`: then a GPU test without a usable GPU fails instead of skipping
/// (set on the GPU machine, where a skip would hide a broken driver or build).
pub fn gpu_required() -> bool {
    std::env::var("DGQ_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Reports that a GPU test cannot run: a panic under `DGQ_REQUIRE_GPU=1`, a printed reason
/// (and `None`, to skip) otherwise.
#[track_caller]
pub fn no_gpu<T>(reason: impl std::fmt::Display) -> Option<T> {
    if gpu_required() {
        panic!("DGQ_REQUIRE_GPU=1 but no usable GPU: {reason}");
    }
    eprintln!("skipping GPU test: {reason}");
    None
}

/// A backend a [`crate::test_device!`] body runs on.
pub enum Device {
    /// The CPU reference of `dgq_core`.
    Cpu,
    /// The CUDA kernels of `dgq_cuda`.
    #[cfg(feature = "gpu")]
    Gpu(Gpu),
}

impl Device {
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            #[cfg(feature = "gpu")]
            Device::Gpu(_) => "gpu",
        }
    }

    /// The exact INT32 accumulators `X · W_s8ᵀ` `[m, N]` of INT8 codes `x` `[m, K]`, with the
    /// default kernel choice.
    pub fn gemm_i32(&self, x: &[i8], m: usize, w: &DualGrainedWeight) -> Vec<i32> {
        match self {
            Device::Cpu => {
                let xv = ndarray::ArrayView2::from_shape((m, w.k()), x).expect("x is [m, K]");
                dgq_core::reference::w4a8_gemm_i32(xv, w)
                    .expect("CPU reference GEMM")
                    .iter()
                    .copied()
                    .collect()
            }
            #[cfg(feature = "gpu")]
            Device::Gpu(g) => g.gemm_i32(x, m, w),
        }
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use std::sync::Arc;

    use dgq_core::DualGrainedWeight;
    use dgq_cuda::cudarc::driver::{CudaContext, CudaStream};

    use super::no_gpu;

    /// An opened GPU and the stream the test launches on.
    pub struct Gpu {
        pub ctx: Arc<CudaContext>,
        pub stream: Arc<CudaStream>,
    }

    /// GPU 0 with its default stream, or `None` after printing why not (a panic under
    /// `DGQ_REQUIRE_GPU=1`): no kernels built, no driver, no supported device.
    #[track_caller]
    pub fn gpu() -> Option<Gpu> {
        let ctx = open()?;
        Some(Gpu {
            stream: ctx.default_stream(),
            ctx,
        })
    }

    /// As [`gpu()`], with a stream of its own (not the default stream).
    #[track_caller]
    pub fn gpu_own_stream() -> Option<Gpu> {
        let ctx = open()?;
        match ctx.new_stream() {
            Ok(stream) => Some(Gpu { ctx, stream }),
            Err(e) => no_gpu(format!("cannot create a stream: {e}")),
        }
    }

    #[track_caller]
    fn open() -> Option<Arc<CudaContext>> {
        match dgq_cuda::open_device(0) {
            Ok(ctx) => Some(ctx),
            Err(e) => no_gpu(e),
        }
    }

    impl Gpu {
        pub(super) fn gemm_i32(&self, x: &[i8], m: usize, w: &DualGrainedWeight) -> Vec<i32> {
            let s = &self.stream;
            let pw = dgq_cuda::PreparedDgqWeight::prepare(w, s).expect("weight uploads");
            let mut ws =
                dgq_cuda::GemmWorkspace::for_shapes(s, &[(w.n(), w.k())]).expect("workspace");
            let xd = s.clone_htod(x).expect("activations upload");
            // Poisoned, so that an output the kernel leaves unwritten cannot pass.
            let mut out = s
                .clone_htod(&vec![i32::MIN; m * w.n()])
                .expect("output allocates");
            dgq_cuda::w4a8_gemm_i32(s, &xd, m, &pw, &mut out, &mut ws, &Default::default())
                .expect("GPU GEMM launches");
            s.clone_dtoh(&out).expect("output downloads")
        }
    }
}

/// Runs the test body `$body: fn(&Device)` once per backend, as two tests: `$cpu` on the CPU
/// reference and `$gpu` on GPU 0. The GPU test prints why and passes when no usable GPU is
/// present, or fails under `DGQ_REQUIRE_GPU=1` ([`no_gpu`]).
#[cfg(feature = "gpu")]
#[macro_export]
macro_rules! test_device {
    ($body:ident, $cpu:ident, $gpu:ident) => {
        #[test]
        fn $cpu() {
            $body(&$crate::Device::Cpu)
        }

        #[test]
        fn $gpu() {
            if let Some(g) = $crate::gpu() {
                $body(&$crate::Device::Gpu(g))
            }
        }
    };
}

/// Runs the test body `$body: fn(&Device)` once per backend, as two tests: `$cpu` on the CPU
/// reference and `$gpu` on GPU 0, which this build (dgq-testkit without `gpu`) cannot reach: it
/// prints so and passes, or fails under `DGQ_REQUIRE_GPU=1`.
#[cfg(not(feature = "gpu"))]
#[macro_export]
macro_rules! test_device {
    ($body:ident, $cpu:ident, $gpu:ident) => {
        #[test]
        fn $cpu() {
            $body(&$crate::Device::Cpu)
        }

        #[test]
        fn $gpu() {
            let _: Option<()> = $crate::no_gpu("dgq-testkit was built without its `gpu` feature");
        }
    };
}
