//! Quantized linear layers that plug into a model through [`Linear::replace`](crate::Linear::replace).
//!
//! A [`QuantLinear`] holds a quantized weight (DGQ W4 or symmetric int4/int8), the activation
//! quantization of its input and an optional bias, and runs in one of two ways:
//!
//! - [`Exec::FakeQuant`] (default, fast): the weight is dequantized once to f32; the input is
//!   quantized and dequantized (`x̂ = q · s_x`), then an f32 GEMM. This is what perplexity
//!   evaluation uses.
//! - [`Exec::Integer`]: the integer reference kernels of `dgq_core::reference` (INT8 × INT4/INT8
//!   with exact INT32 accumulators, then the f32 epilogue) — what a W4A8/W8A8 kernel computes.
//!
//! The two differ only by float rounding (the order of the scale multiplications and the f32
//! accumulation), which the tests bound.

use dgq_core::act::{self, ActQuant};
use dgq_core::format::{LayerWeight, PackedLayer};
use dgq_core::quant::dual_grained::DualGrainedWeight;
use dgq_core::quant::sym::SymIntWeight;
use dgq_core::reference;
use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::linear::LinearOp;

/// A quantized weight `[N, K]`.
#[derive(Debug, Clone, PartialEq)]
pub enum QWeight {
    /// DGQ dual-grained u4 weight (W4A8 with INT8 activations, or W4A16).
    Dgq(DualGrainedWeight),
    /// Symmetric int4/int8 weight with FP16 group scales (W8A8, FineQuant W4A16).
    Sym(SymIntWeight),
}

impl QWeight {
    /// `[N, K]`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            QWeight::Dgq(w) => (w.n(), w.k()),
            QWeight::Sym(w) => (w.n(), w.k()),
        }
    }
    /// Group size along K.
    pub fn group_size(&self) -> usize {
        match self {
            QWeight::Dgq(w) => w.group_size,
            QWeight::Sym(w) => w.group_size,
        }
    }
    /// The dequantized f32 weight.
    pub fn dequantize(&self) -> Array2<f32> {
        match self {
            QWeight::Dgq(w) => w.dequantize(),
            QWeight::Sym(w) => w.dequantize(),
        }
    }
}

/// How a [`QuantLinear`] computes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exec {
    /// Dequantized f32 weight times quantize-dequantized activations (fast f32 GEMM).
    #[default]
    FakeQuant,
    /// The integer reference GEMMs (INT32 accumulation); weight-only layers stay float.
    Integer,
}

/// A quantized linear layer.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    weight: QWeight,
    act: ActQuant,
    bias: Option<Array1<f32>>,
    exec: Exec,
    /// Dequantized weight, kept for the fake-quant path (the integer path does not need it).
    deq: Option<Array2<f32>>,
    label: String,
}

impl QuantLinear {
    /// Wraps a quantized weight; `act` says how inputs are quantized ([`ActQuant::None`] for
    /// weight-only schemes). Static scales must be finite and positive; a bias must be `[N]`.
    pub fn new(
        weight: QWeight,
        act: ActQuant,
        bias: Option<Array1<f32>>,
        exec: Exec,
    ) -> Result<Self> {
        let (n, _) = weight.dim();
        match &weight {
            QWeight::Dgq(w) => w.validate()?,
            QWeight::Sym(w) => w.validate()?,
        }
        if let Some(b) = &bias {
            if b.len() != n {
                return Err(Error::shape("quantized linear bias", n, b.len()));
            }
            if b.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: "quantized linear bias".into(),
                });
            }
        }
        if let ActQuant::StaticPerTensor { scale } = act {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(Error::NonFinite {
                    what: format!("static activation scale {scale}"),
                });
            }
        }
        let deq = match exec {
            Exec::FakeQuant => Some(weight.dequantize()),
            Exec::Integer => None,
        };
        let wlabel = match &weight {
            QWeight::Dgq(_) => "w4-dgq".to_string(),
            QWeight::Sym(w) => format!("w{}-sym", w.bits.bits()),
        };
        let alabel = match act {
            ActQuant::None => "a16",
            ActQuant::DynamicPerToken => "a8-dyn",
            ActQuant::StaticPerTensor { .. } => "a8-static",
        };
        let elabel = match exec {
            Exec::FakeQuant => "fake",
            Exec::Integer => "int",
        };
        Ok(QuantLinear {
            weight,
            act,
            bias,
            exec,
            deq,
            label: format!("{wlabel}-{alabel}-{elabel}"),
        })
    }

    /// Rebuilds a layer from a packed-file entry (its weight must be quantized and 2-D; a
    /// smoothing divisor stored with the layer is not supported here, since the pipeline always
    /// folds smoothing into the previous op).
    pub fn from_packed(layer: &PackedLayer, exec: Exec) -> Result<Self> {
        if layer.smooth.is_some() {
            return Err(Error::Unsupported(
                "packed layers with an unfolded smoothing divisor".into(),
            ));
        }
        let w = match &layer.weight {
            LayerWeight::Dgq(w) => QWeight::Dgq(w.clone()),
            LayerWeight::SymInt(w) => QWeight::Sym(w.clone()),
            other => {
                return Err(Error::Unsupported(format!(
                    "a {} weight as a quantized linear",
                    other.scheme()
                )))
            }
        };
        QuantLinear::new(w, layer.act, layer.bias.clone(), exec)
    }

    /// The packed-file entry for this layer.
    pub fn to_packed(&self) -> PackedLayer {
        let w = match &self.weight {
            QWeight::Dgq(w) => LayerWeight::Dgq(w.clone()),
            QWeight::Sym(w) => LayerWeight::SymInt(w.clone()),
        };
        let mut p = PackedLayer::new(w).with_act(self.act);
        if let Some(b) = &self.bias {
            p = p.with_bias(b.clone());
        }
        p
    }

    /// The quantized weight.
    pub fn weight(&self) -> &QWeight {
        &self.weight
    }
    /// Input quantization.
    pub fn act(&self) -> ActQuant {
        self.act
    }
    /// Execution mode.
    pub fn exec(&self) -> Exec {
        self.exec
    }
}

impl LinearOp for QuantLinear {
    fn forward(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let bias = self.bias.as_ref().map(|b| b.view());
        match (self.exec, &self.deq) {
            (Exec::FakeQuant, Some(deq)) => {
                let xh = act::fake_quantize(x, &self.act)?;
                let mut y = reference::matmul_f32_nt(xh.view(), deq.view())?;
                if let Some(b) = bias {
                    y += &b.insert_axis(ndarray::Axis(0));
                }
                Ok(y)
            }
            _ => match (&self.weight, self.act) {
                (QWeight::Dgq(w), ActQuant::None) => Ok(reference::w4a16_gemm_dgq(x, w, bias)?),
                (QWeight::Dgq(w), a) => Ok(reference::w4a8_gemm(&act::quantize(x, &a)?, w, bias)?),
                (QWeight::Sym(w), ActQuant::None) => Ok(reference::w4a16_gemm(x, w, bias)?),
                (QWeight::Sym(w), a) => Ok(reference::w8a8_gemm(&act::quantize(x, &a)?, w, bias)?),
            },
        }
    }
    fn in_features(&self) -> usize {
        self.weight.dim().1
    }
    fn out_features(&self) -> usize {
        self.weight.dim().0
    }
    fn kind(&self) -> &str {
        &self.label
    }
    fn packed(&self) -> Option<PackedLayer> {
        Some(self.to_packed())
    }
}
