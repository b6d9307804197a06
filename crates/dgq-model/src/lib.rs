//! # dgq-model
//!
//! Reference CPU decoders for the models dgq quantizes, and everything around them:
//!
//! - [`Model`]: LLaMA family (LLaMA, Mistral, Qwen2, SmolLM: RMSNorm, RoPE, GQA, SwiGLU, tied or
//!   untied head, optional Q/K/V biases) and OPT (LayerNorm, learned positions, ReLU FFN,
//!   pre- or post-LN), f32 with rayon and the `gemm` crate.
//! - Loaders: a Hugging Face directory (`config.json` + `model.safetensors` or a sharded index;
//!   f32/f16/bf16) and GGUF files (candle's reader and dequantizers: F32, F16, BF16, Q4_0, Q4_1,
//!   Q5_0, Q5_1, Q8_0, Q2_K–Q6_K), with llama.cpp's Q/K permutation undone.
//! - [`Tokenizer`]: `tokenizer.json` or the GGUF-embedded byte-level BPE.
//! - [`perplexity()`]: windowed perplexity with a progress callback.
//! - [`quantize_model`]: layer-wise ("true sequential") calibration and quantization of a whole
//!   model (FP, W8A8, RTN, SmoothQuant, DGQ dynamic/static, FineQuant) into a packed file;
//!   [`apply_packed`] loads one back as [`QuantLinear`] ops (fake-quant or integer execution);
//!   [`sample_windows`] draws seeded calibration windows.
//!
//! ## Hooks for calibration and quantization
//! Every projection is a [`Linear`] ([`FloatLinear`] weights, or any [`LinearOp`] swapped in with
//! [`Linear::replace`]). A [`DecoderLayer`] runs on its own
//! ([`DecoderLayer::forward`]) and reports the input of each linear to a capture hook
//! ([`DecoderLayer::forward_capture`]), so a layer-wise driver can do:
//!
//! ```no_run
//! # use dgq_model::{Model, LinearSlot};
//! # fn main() -> dgq_model::Result<()> {
//! let mut model = Model::load(std::path::Path::new("model.gguf"))?;
//! let tokens: Vec<u32> = vec![1, 2, 3];
//! let mut h = model.embed(&tokens, 0)?;
//! for layer in model.layers.iter_mut() {
//!     let mut seen = Vec::new();
//!     layer.forward_capture(h.view(), 0, &mut |slot: LinearSlot, x| seen.push((slot, x.nrows())))?;
//!     // ... quantize layer.linear_mut(slot)?, fold smoothing into layer.norm_mut(..) ...
//!     h = layer.forward(h.view(), 0)?; // inputs of the next layer, from the quantized layer
//! }
//! # Ok(()) }
//! ```
//!
//! Weights are row-major `[N, K]` (out × in) and activations `[M, K]`, as in dgq-core.

pub mod calib;
pub mod config;
pub mod decoder;
pub mod error;
mod gguf;
pub mod layer;
pub mod linear;
pub mod model;
pub mod norm;
mod ops;
pub mod packed;
pub mod perplexity;
pub mod qlinear;
pub mod quantize;
pub mod rope;
mod search;
pub mod stages;
pub mod tokenizer;
mod weights;

pub use calib::{sample_windows, CalibConfig};
pub use config::{Family, ModelConfig};
pub use decoder::{CpuDecoder, Decoder};
pub use error::{Error, Result};
pub use layer::{AttentionSpec, CaptureHook, DecoderLayer, LayerKvCache, Mlp, NormSlot};
pub use linear::{FloatLinear, InputSite, Linear, LinearOp, LinearSlot};
pub use model::{KvCache, LoadInfo, Model, SourceFormat, OPT_POSITION_OFFSET};
pub use norm::{Norm, NormKind};
pub use packed::apply_packed;
pub use perplexity::{perplexity, CausalLm, PplConfig, PplProgress, PplResult};
pub use qlinear::{Exec, QWeight, QuantLinear};
pub use quantize::{quantize_model, Method, QuantizeConfig, QuantizeProgress, QuantizeReport};
pub use rope::{Rope, RopeScaling};
pub use stages::{run_layer, Block, LayerBackend, Wiring};
pub use tokenizer::Tokenizer;
pub use weights::GgufFile;
