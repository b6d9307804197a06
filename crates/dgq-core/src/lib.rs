//! # dgq-core
//!
//! The math and the format of DGQ (Dual Grained Quantization, arXiv 2310.04836) and friends,
//! in pure Rust:
//!
//! - [`quant`]: RTN primitives, DGQ dual-grained weights and their two-phase search, FineQuant.
//! - [`smooth`]: percentile-clipping smoothing (DGQ eq. 7) and SmoothQuant, with the folds.
//! - [`act`]: INT8 activation quantization (static per-tensor, dynamic per-token) and FP8-E4M3.
//! - [`format`](mod@format): the packed-weight file format v1 (safetensors + metadata), see `docs/FORMAT.md`.
//! - [`reference`](mod@reference): CPU reference GEMMs, the truth every other kernel is tested against.
//! - [`pack`]: nibble packing shared by the format and kernel preparation.
//! - [`fsio`]: atomic file writes that keep the permissions a plain write would give.
//!
//! Weights are row-major `[N, K]` (output channels × input channels), activations `[M, K]`,
//! outputs `[M, N]`, as in `Y = X · Wᵀ`.

pub mod act;
pub mod error;
pub mod format;
pub mod fsio;
pub mod pack;
pub mod quant;
pub mod reference;
pub mod smooth;

pub use error::{Error, Result};
pub use quant::dual_grained::DualGrainedWeight;
pub use quant::search::{DgqConfig, LossMode};
pub use quant::sym::SymIntWeight;
