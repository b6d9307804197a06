//! Linear layers: the float reference and the seam where quantized implementations plug in.
//!
//! Every projection of a decoder layer is a [`Linear`]: either the float weights it was loaded
//! with ([`FloatLinear`]) or any [`LinearOp`] (a quantized kernel, a W4A8 reference...). The
//! calibration pipeline reads and edits the float weights (smoothing scales input columns, folds
//! into previous output rows), then swaps in its quantized op with [`Linear::replace`].

use std::fmt::Debug;

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{Error, Result};
use crate::ops::{self, Par};

/// A linear map `Y[M, N] = X[M, K] · Wᵀ (+ b)` over token rows.
///
/// Implementations must accept any `M` (including 0) and return `[M, out_features]`; callers
/// guarantee `x.ncols() == in_features()` (checked by [`Linear::forward`]).
pub trait LinearOp: Send + Sync + Debug {
    /// Applies the layer to `x[M, in_features]`.
    fn forward(&self, x: ArrayView2<f32>) -> Result<Array2<f32>>;
    /// K, the input width.
    fn in_features(&self) -> usize;
    /// N, the output width.
    fn out_features(&self) -> usize;
    /// Short label of the implementation for logs and reports (e.g. `"f32"`, `"w4a8-dgq"`).
    fn kind(&self) -> &str;
    /// This layer in the packed-file form (`dgq_core::format`), if it has one (quantized ops do;
    /// the default is `None`). Lets a pipeline save whatever ops it installed.
    fn packed(&self) -> Option<dgq_core::format::PackedLayer> {
        None
    }
}

/// A float linear layer: weight `[N, K]` (row-major, out × in, as in Hugging Face checkpoints)
/// and an optional bias `[N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatLinear {
    /// `[out_features, in_features]`.
    pub weight: Array2<f32>,
    /// `[out_features]`.
    pub bias: Option<Array1<f32>>,
}

impl FloatLinear {
    /// Builds a layer, checking that the bias length matches the weight's rows and that all
    /// values are finite.
    pub fn new(weight: Array2<f32>, bias: Option<Array1<f32>>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.len() != weight.nrows() {
                return Err(Error::shape("linear bias length", weight.nrows(), b.len()));
            }
            if b.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: "linear bias".into(),
                });
            }
        }
        if weight.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "linear weight".into(),
            });
        }
        Ok(FloatLinear {
            weight: weight.as_standard_layout().into_owned(),
            bias,
        })
    }

    /// Multiplies input channel (column) j of the weight by `k[j]`: the other half of a
    /// smoothing fold whose divisor went into the previous norm or linear (`X/k · (W·k)ᵀ = X·Wᵀ`).
    pub fn scale_input_channels(&mut self, k: &Array1<f32>) -> Result<()> {
        check_scale(k, self.weight.ncols(), "input-channel scale")?;
        self.weight *= &k.view().insert_axis(Axis(0));
        Ok(())
    }

    /// Divides output channel (row) n of the weight and the bias by `k[n]`, so the next layer
    /// reads `Y / k` (folds a smoothing divisor into this layer, e.g. up_proj for down_proj).
    pub fn scale_output_channels_inv(&mut self, k: &Array1<f32>) -> Result<()> {
        check_scale(k, self.weight.nrows(), "output-channel divisor")?;
        self.weight /= &k.view().insert_axis(Axis(1));
        if let Some(b) = &mut self.bias {
            *b /= k;
        }
        Ok(())
    }
}

fn check_scale(k: &Array1<f32>, n: usize, what: &str) -> Result<()> {
    if k.len() != n {
        return Err(Error::shape(what, n, k.len()));
    }
    if k.iter().any(|v| !v.is_finite() || *v == 0.0) {
        return Err(Error::NonFinite {
            what: format!("{what} (zero or non-finite)"),
        });
    }
    Ok(())
}

impl LinearOp for FloatLinear {
    fn forward(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let mut y = ops::matmul_nt(x, self.weight.view(), Par::Rayon)?;
        if let Some(b) = &self.bias {
            // Fields are public: re-check what `new` checked before broadcasting.
            if b.len() != self.weight.nrows() {
                return Err(Error::shape(
                    "linear bias length",
                    self.weight.nrows(),
                    b.len(),
                ));
            }
            ops::add_bias(&mut y, b.view());
        }
        Ok(y)
    }
    fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    fn kind(&self) -> &str {
        "f32"
    }
}

/// One projection of a model: float weights, or a replacement op.
#[derive(Debug)]
pub enum Linear {
    /// The float weights as loaded (possibly edited by smoothing).
    Float(FloatLinear),
    /// Any other implementation, typically quantized.
    Op(Box<dyn LinearOp>),
}

impl Linear {
    /// A float layer from a weight `[N, K]` and optional bias `[N]`.
    pub fn float(weight: Array2<f32>, bias: Option<Array1<f32>>) -> Result<Self> {
        Ok(Linear::Float(FloatLinear::new(weight, bias)?))
    }

    /// Applies the layer to `x[M, in_features]`, checking the input width and the output shape.
    pub fn forward(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let op = self.op();
        if x.ncols() != op.in_features() {
            return Err(Error::shape(
                "linear input columns",
                op.in_features(),
                x.ncols(),
            ));
        }
        let y = op.forward(x)?;
        if y.dim() != (x.nrows(), op.out_features()) {
            return Err(Error::shape(
                format!("output of linear op {}", op.kind()),
                format!("{:?}", (x.nrows(), op.out_features())),
                format!("{:?}", y.dim()),
            ));
        }
        Ok(y)
    }

    /// The implementation behind this layer.
    pub fn op(&self) -> &dyn LinearOp {
        match self {
            Linear::Float(f) => f,
            Linear::Op(op) => op.as_ref(),
        }
    }

    /// K.
    pub fn in_features(&self) -> usize {
        self.op().in_features()
    }

    /// N.
    pub fn out_features(&self) -> usize {
        self.op().out_features()
    }

    /// The float weights, if this layer has not been replaced.
    pub fn as_float(&self) -> Option<&FloatLinear> {
        match self {
            Linear::Float(f) => Some(f),
            Linear::Op(_) => None,
        }
    }

    /// Mutable float weights (for smoothing folds), if this layer has not been replaced.
    pub fn as_float_mut(&mut self) -> Option<&mut FloatLinear> {
        match self {
            Linear::Float(f) => Some(f),
            Linear::Op(_) => None,
        }
    }

    /// Swaps in another implementation (with the same in/out widths) and returns the old one.
    pub fn replace(&mut self, op: Box<dyn LinearOp>) -> Result<Linear> {
        if op.in_features() != self.in_features() || op.out_features() != self.out_features() {
            return Err(Error::shape(
                format!("replacement linear op {}", op.kind()),
                format!("[{}, {}]", self.out_features(), self.in_features()),
                format!("[{}, {}]", op.out_features(), op.in_features()),
            ));
        }
        Ok(std::mem::replace(self, Linear::Op(op)))
    }
}

/// Names a projection inside a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearSlot {
    /// Attention query projection (`q_proj`).
    Q,
    /// Attention key projection (`k_proj`).
    K,
    /// Attention value projection (`v_proj`).
    V,
    /// Attention output projection (`o_proj`; OPT's `out_proj`).
    O,
    /// SwiGLU gate projection (`gate_proj`, LLaMA family).
    Gate,
    /// SwiGLU up projection (`up_proj`, LLaMA family).
    Up,
    /// SwiGLU down projection (`down_proj`, LLaMA family).
    Down,
    /// OPT's first FFN layer (`fc1`, followed by ReLU).
    Fc1,
    /// OPT's second FFN layer (`fc2`).
    Fc2,
}

/// Which activation a projection reads; slots with the same site read the very same matrix
/// (Q/K/V all read the normed attention input, Gate/Up the normed MLP input), so a calibration
/// hook can compute statistics once per site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputSite {
    /// Output of the attention norm: input of Q, K, V.
    AttnIn,
    /// Attention context (heads concatenated): input of O.
    AttnOut,
    /// Output of the MLP norm: input of Gate, Up (LLaMA) or Fc1 (OPT).
    MlpIn,
    /// Activated MLP hidden state: input of Down (LLaMA) or Fc2 (OPT).
    MlpHidden,
}

impl LinearSlot {
    /// The slots of a LLaMA-family layer, in execution order.
    pub const LLAMA: [LinearSlot; 7] = [
        LinearSlot::Q,
        LinearSlot::K,
        LinearSlot::V,
        LinearSlot::O,
        LinearSlot::Gate,
        LinearSlot::Up,
        LinearSlot::Down,
    ];
    /// The slots of an OPT layer, in execution order.
    pub const OPT: [LinearSlot; 6] = [
        LinearSlot::Q,
        LinearSlot::K,
        LinearSlot::V,
        LinearSlot::O,
        LinearSlot::Fc1,
        LinearSlot::Fc2,
    ];

    /// Which activation this projection reads.
    pub fn input_site(self) -> InputSite {
        match self {
            LinearSlot::Q | LinearSlot::K | LinearSlot::V => InputSite::AttnIn,
            LinearSlot::O => InputSite::AttnOut,
            LinearSlot::Gate | LinearSlot::Up | LinearSlot::Fc1 => InputSite::MlpIn,
            LinearSlot::Down | LinearSlot::Fc2 => InputSite::MlpHidden,
        }
    }

    /// The Hugging Face module name (`q_proj`, `o_proj`, `fc1`...); OPT's `O` is `out_proj`.
    pub fn hf_name(self, family: crate::config::Family) -> &'static str {
        match (self, family) {
            (LinearSlot::Q, _) => "q_proj",
            (LinearSlot::K, _) => "k_proj",
            (LinearSlot::V, _) => "v_proj",
            (LinearSlot::O, crate::config::Family::Opt) => "out_proj",
            (LinearSlot::O, _) => "o_proj",
            (LinearSlot::Gate, _) => "gate_proj",
            (LinearSlot::Up, _) => "up_proj",
            (LinearSlot::Down, _) => "down_proj",
            (LinearSlot::Fc1, _) => "fc1",
            (LinearSlot::Fc2, _) => "fc2",
        }
    }
}
