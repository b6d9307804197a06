//! RMSNorm and LayerNorm with public, mutable parameters (smoothing folds its per-channel
//! divisors into them).

use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::ops;

/// Which normalisation a [`Norm`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / sqrt(mean(x²) + eps) · w` (LLaMA family).
    Rms,
    /// `(x − mean) / sqrt(var + eps) · w + b` (OPT).
    Layer,
}

/// A normalisation layer over the last axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm {
    /// RMSNorm or LayerNorm.
    pub kind: NormKind,
    /// Per-channel gain `[d]`.
    pub weight: Array1<f32>,
    /// Per-channel shift `[d]` (LayerNorm only; `None` means zero).
    pub bias: Option<Array1<f32>>,
    /// Added to the variance (or mean square) before the square root.
    pub eps: f32,
}

impl Norm {
    /// Builds a norm, checking lengths and finiteness.
    pub fn new(
        kind: NormKind,
        weight: Array1<f32>,
        bias: Option<Array1<f32>>,
        eps: f32,
    ) -> Result<Self> {
        if let Some(b) = &bias {
            if kind == NormKind::Rms {
                return Err(Error::Unsupported("RMSNorm with a bias".into()));
            }
            if b.len() != weight.len() {
                return Err(Error::shape("norm bias length", weight.len(), b.len()));
            }
        }
        if weight
            .iter()
            .chain(bias.iter().flatten())
            .any(|v| !v.is_finite())
        {
            return Err(Error::NonFinite {
                what: "norm parameters".into(),
            });
        }
        Ok(Norm {
            kind,
            weight,
            bias,
            eps,
        })
    }

    /// Width d.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// Normalises every row of `x[M, d]`.
    pub fn forward(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.dim() {
            return Err(Error::shape("norm input columns", self.dim(), x.ncols()));
        }
        if let Some(b) = &self.bias {
            if b.len() != self.dim() {
                return Err(Error::shape("norm bias length", self.dim(), b.len()));
            }
        }
        Ok(match self.kind {
            NormKind::Rms => ops::rms_norm(x, self.weight.view(), self.eps),
            NormKind::Layer => ops::layer_norm(
                x,
                self.weight.view(),
                self.bias.as_ref().map(|b| b.view()),
                self.eps,
            ),
        })
    }

    /// Divides the norm's output channels by `k[d]` (folds a smoothing divisor into the gain and,
    /// for LayerNorm, the shift), so the next linear layer sees `X / k`.
    pub fn scale_output_channels_inv(&mut self, k: &Array1<f32>) -> Result<()> {
        if k.len() != self.dim() {
            return Err(Error::shape(
                "smoothing divisor length",
                self.dim(),
                k.len(),
            ));
        }
        if k.iter().any(|v| !(v.is_finite() && *v != 0.0)) {
            return Err(Error::NonFinite {
                what: "smoothing divisor (zero or non-finite)".into(),
            });
        }
        self.weight /= k;
        if let Some(b) = &mut self.bias {
            *b /= k;
        }
        Ok(())
    }
}
