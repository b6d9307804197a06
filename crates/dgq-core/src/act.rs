//! Activation quantization: symmetric INT8, static per-tensor or dynamic per-token, and FP8-E4M3
//! conversion.
//!
//! INT8 codes are in `[−127, 127]` (−128 unused), `x ≈ scale · q`, with round-half-to-even
//! (`f32::round_ties_even`) so CPU and GPU agree bit for bit.

use ndarray::{Array1, Array2};

/// How a linear layer's input activations are quantized.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ActQuant {
    /// Activations stay floating point (weight-only schemes).
    None,
    /// One scale per token (row), computed at run time: `scale_m = max|X_m| / 127`.
    DynamicPerToken,
    /// One scale for the whole tensor, fixed at calibration time.
    StaticPerTensor { scale: f32 },
}

/// INT8 activations `[M, K]` with their scales: `[M]` (per token) or `[1]` (per tensor).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActs {
    /// Codes in `[−127, 127]`.
    pub q: Array2<i8>,
    /// Per-token scales `[M]`, or a single per-tensor scale `[1]`.
    pub scales: Array1<f32>,
}

impl QuantizedActs {
    /// The scale that applies to token `m`.
    #[inline]
    pub fn scale(&self, m: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[m]
        }
    }
}
