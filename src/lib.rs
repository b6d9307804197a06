//! dgq: W4A8 LLM quantization with Dual Grained Quantization.
//!
//! This crate re-exports the workspace crates: [`core`] (quantizers, format, reference kernels)
//! and [`model`] (decoders, loaders, calibration, perplexity), and `cuda` (GPU kernels) with the `cuda` feature.

pub use dgq_core as core;
#[cfg(feature = "cuda")]
pub use dgq_cuda as cuda;
pub use dgq_model as model;
