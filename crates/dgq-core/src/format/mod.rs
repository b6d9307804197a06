//! Packed-weight format v1: a safetensors file that holds quantized linear layers in the canonical
//! layout, typed metadata and a CRC-32 per tensor. `docs/FORMAT.md` is the normative
//! specification; this module is its reference implementation.
//!
//! - [`write()`] (atomic: temp file + fsync + rename) and [`to_bytes`] serialize a [`PackedModel`]
//!   after validating every invariant; the bytes are a deterministic function of the model.
//! - [`read()`] and [`from_bytes`] validate everything (format name and version, metadata CRC,
//!   tensor presence, dtypes, shapes, data CRCs, value invariants) and return a typed
//!   [`Error`] naming the offending tensor; no input makes them panic.
//! - [`inspect`] lists the layers from the header alone (no tensor data is read).
//!
//! ```
//! use std::collections::BTreeMap;
//! use dgq_core::act::ActQuant;
//! use dgq_core::format::{self, LayerWeight, PackedLayer, PackedModel};
//!
//! let mut m = PackedModel::new("my-org/tiny-model", "example");
//! let w = ndarray::ArrayD::from_elem(vec![4], 1.0f32);
//! m.layers.insert("model.norm".into(), PackedLayer::new(LayerWeight::Float(w)));
//! let bytes = format::to_bytes(&m)?;
//! assert_eq!(format::from_bytes(&bytes)?, m);
//! # Ok::<(), dgq_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use half::{bf16, f16};
use ndarray::{Array1, ArrayD, Dimension, IxDyn};

use crate::act::ActQuant;
use crate::error::{Error, Result};
use crate::quant::dual_grained::DualGrainedWeight;
use crate::quant::sym::SymIntWeight;
use crate::quant::Bits;

mod codec;
mod inspect;
mod meta;
mod read;
mod write;

pub use inspect::{inspect, inspect_bytes, FileInfo, LayerInfo};
pub use read::{from_bytes, read};
pub use write::{to_bytes, write};

/// Value of the `format` metadata key.
pub const FORMAT_NAME: &str = "dgq";
/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest safetensors header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: usize = 100_000_000;
/// Longest layer name accepted, in bytes.
pub const MAX_LAYER_NAME_BYTES: usize = 1024;
/// Conventional file-name suffix for packed files.
pub const FILE_SUFFIX: &str = ".dgq.safetensors";

/// How a layer's weight is stored; its `as_str` is the `scheme` value in the file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// DGQ W4: u4 codes, u4 zero points, INT8 group scales S2, FP16 channel scales s1.
    DgqW4,
    /// Symmetric int4 (two's-complement nibbles) with FP16 group scales.
    SymInt4,
    /// Symmetric int8 with FP16 group scales.
    SymInt8,
    /// Plain f32 tensor.
    F32,
    /// Plain IEEE half tensor.
    F16,
    /// Plain bfloat16 tensor.
    Bf16,
}

impl Scheme {
    /// Every scheme of format v1.
    pub const ALL: [Scheme; 6] = [
        Scheme::DgqW4,
        Scheme::SymInt4,
        Scheme::SymInt8,
        Scheme::F32,
        Scheme::F16,
        Scheme::Bf16,
    ];

    /// The string stored in the file's `scheme` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::DgqW4 => "dgq_w4",
            Scheme::SymInt4 => "sym_int4",
            Scheme::SymInt8 => "sym_int8",
            Scheme::F32 => "f32",
            Scheme::F16 => "f16",
            Scheme::Bf16 => "bf16",
        }
    }

    /// Bits per stored weight element (not counting scales).
    pub fn weight_bits(self) -> u32 {
        match self {
            Scheme::DgqW4 | Scheme::SymInt4 => 4,
            Scheme::SymInt8 => 8,
            Scheme::F16 | Scheme::Bf16 => 16,
            Scheme::F32 => 32,
        }
    }

    /// Whether the weight is integer-quantized (has a group size and scales).
    pub fn is_quantized(self) -> bool {
        matches!(self, Scheme::DgqW4 | Scheme::SymInt4 | Scheme::SymInt8)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layer's weight, in the canonical unpacked layout.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerWeight {
    /// DGQ W4 weight `[N, K]`.
    Dgq(DualGrainedWeight),
    /// Symmetric int4/int8 weight `[N, K]`.
    SymInt(SymIntWeight),
    /// Float tensor of any shape stored as f32 (e.g. norm weights changed by smoothing folds).
    Float(ArrayD<f32>),
    /// Float tensor stored as IEEE half (e.g. unquantized embeddings / lm_head).
    F16(ArrayD<f16>),
    /// Float tensor stored as bfloat16.
    Bf16(ArrayD<bf16>),
}

impl LayerWeight {
    /// The storage scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            LayerWeight::Dgq(_) => Scheme::DgqW4,
            LayerWeight::SymInt(w) => match w.bits {
                Bits::Int4 => Scheme::SymInt4,
                Bits::Int8 => Scheme::SymInt8,
            },
            LayerWeight::Float(_) => Scheme::F32,
            LayerWeight::F16(_) => Scheme::F16,
            LayerWeight::Bf16(_) => Scheme::Bf16,
        }
    }

    /// Logical shape: `[N, K]` for quantized weights, the array shape for float tensors.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            LayerWeight::Dgq(w) => vec![w.n(), w.k()],
            LayerWeight::SymInt(w) => vec![w.n(), w.k()],
            LayerWeight::Float(a) => a.shape().to_vec(),
            LayerWeight::F16(a) => a.shape().to_vec(),
            LayerWeight::Bf16(a) => a.shape().to_vec(),
        }
    }

    /// Group size along K for quantized weights, `None` for float tensors.
    pub fn group_size(&self) -> Option<usize> {
        match self {
            LayerWeight::Dgq(w) => Some(w.group_size),
            LayerWeight::SymInt(w) => Some(w.group_size),
            _ => None,
        }
    }

    /// The weight as f32 (dequantized for quantized schemes).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            LayerWeight::Dgq(w) => w.dequantize().into_dyn(),
            LayerWeight::SymInt(w) => w.dequantize().into_dyn(),
            LayerWeight::Float(a) => a.clone(),
            LayerWeight::F16(a) => a.mapv(f16::to_f32),
            LayerWeight::Bf16(a) => a.mapv(bf16::to_f32),
        }
    }
}

/// One named tensor set of a packed file: a weight plus how its input is quantized, an optional
/// bias and an optional input smoothing divisor.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedLayer {
    /// The weight.
    pub weight: LayerWeight,
    /// Activation quantization of the layer's input. Must be `None` unless the weight is 2-D.
    pub act: ActQuant,
    /// Bias `[N]` added to the output (2-D weights only).
    pub bias: Option<Array1<f32>>,
    /// Input smoothing divisor `[K]`, finite and > 0: the runtime computes `X / smooth` before
    /// quantizing X (for layers whose smoothing could not be folded into a previous op).
    pub smooth: Option<Array1<f32>>,
}

impl PackedLayer {
    /// A layer with float activations, no bias and no smoothing.
    pub fn new(weight: LayerWeight) -> Self {
        PackedLayer {
            weight,
            act: ActQuant::None,
            bias: None,
            smooth: None,
        }
    }
    /// Sets the activation quantization.
    pub fn with_act(mut self, act: ActQuant) -> Self {
        self.act = act;
        self
    }
    /// Sets the bias `[N]`.
    pub fn with_bias(mut self, bias: Array1<f32>) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Sets the input smoothing divisor `[K]`.
    pub fn with_smooth(mut self, smooth: Array1<f32>) -> Self {
        self.smooth = Some(smooth);
        self
    }
}

/// A whole packed model: what one packed file holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedModel {
    /// Where the weights came from (e.g. a Hugging Face model id); free text.
    pub source_model: String,
    /// How they were produced (e.g. `dgq-search g128 a8-static`); free text.
    pub method: String,
    /// Layers by name (e.g. `model.layers.0.self_attn.q_proj`). Names are non-empty, at most
    /// [`MAX_LAYER_NAME_BYTES`] bytes and free of control characters.
    pub layers: BTreeMap<String, PackedLayer>,
    /// Free-form string extras stored as further `__metadata__` entries; keys must not be one
    /// of the reserved keys (`format`, `format_version`, `source_model`, `method`, `layers`,
    /// `metadata_crc32`).
    pub metadata: BTreeMap<String, String>,
}

impl PackedModel {
    /// An empty model.
    pub fn new(source_model: impl Into<String>, method: impl Into<String>) -> Self {
        PackedModel {
            source_model: source_model.into(),
            method: method.into(),
            ..Default::default()
        }
    }

    /// Checks every invariant [`write()`] checks, without serializing.
    pub fn validate(&self) -> Result<()> {
        meta::check_extras(&self.metadata)?;
        for (name, layer) in &self.layers {
            check_layer_name(name).map_err(Problem::into_invariant)?;
            check_layer(name, layer).map_err(Problem::into_invariant)?;
        }
        Ok(())
    }
}

/// A violated invariant, located at a tensor (or layer) name. Writing reports it as
/// [`Error::Invariant`], reading as [`Error::Format`].
#[derive(Debug)]
pub(crate) struct Problem {
    pub tensor: String,
    pub problem: String,
}

impl Problem {
    pub(crate) fn new(tensor: impl Into<String>, problem: impl Into<String>) -> Self {
        Problem {
            tensor: tensor.into(),
            problem: problem.into(),
        }
    }
    pub(crate) fn into_invariant(self) -> Error {
        Error::Invariant {
            tensor: self.tensor,
            problem: self.problem,
        }
    }
    pub(crate) fn into_format(self) -> Error {
        Error::Format {
            tensor: self.tensor,
            problem: self.problem,
        }
    }
}

/// Layer names end up in tensor names and in JSON; keep them printable and bounded.
pub(crate) fn check_layer_name(name: &str) -> std::result::Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::new(
            "<empty layer name>",
            "layer names must be non-empty",
        ));
    }
    if name.len() > MAX_LAYER_NAME_BYTES {
        let shown: String = name.chars().take(64).collect();
        return Err(Problem::new(
            format!("{shown}…"),
            format!(
                "layer name is {} bytes, more than {MAX_LAYER_NAME_BYTES}",
                name.len()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Problem::new(
            name.escape_default().to_string(),
            "layer name contains a control character",
        ));
    }
    Ok(())
}

/// Full tensor name of a layer's role.
pub(crate) fn tensor_name(layer: &str, role: &str) -> String {
    format!("{layer}.{role}")
}

/// Maps an error from a weight type's own `validate` to the file's tensor naming.
fn core_problem(layer: &str, e: Error) -> Problem {
    let role = |t: &str| {
        if t == "q" {
            "qweight".to_string()
        } else {
            t.to_string()
        }
    };
    match e {
        Error::Invariant { tensor, problem } => {
            Problem::new(tensor_name(layer, &role(&tensor)), problem)
        }
        Error::Shape {
            what,
            expected,
            got,
        } => Problem::new(
            tensor_name(layer, &role(&what)),
            format!("expected shape {expected}, got {got}"),
        ),
        other => Problem::new(layer, other.to_string()),
    }
}

fn check_dims(tensor: String, shape: &[usize]) -> std::result::Result<(), Problem> {
    if shape.contains(&0) {
        return Err(Problem::new(
            tensor,
            format!("shape {shape:?} has a zero dimension"),
        ));
    }
    Ok(())
}

fn first_bad<'a, T: 'a + Copy>(
    it: impl IntoIterator<Item = (IxDyn, &'a T)>,
    ok: impl Fn(T) -> bool,
) -> Option<(Vec<usize>, T)> {
    it.into_iter()
        .find(|(_, v)| !ok(**v))
        .map(|(i, v)| (i.slice().to_vec(), *v))
}

/// Checks every invariant of a layer; the problem names the full tensor name.
pub(crate) fn check_layer(name: &str, l: &PackedLayer) -> std::result::Result<(), Problem> {
    let shape = l.weight.shape();
    match &l.weight {
        LayerWeight::Dgq(w) => {
            check_dims(tensor_name(name, "qweight"), &shape)?;
            w.validate().map_err(|e| core_problem(name, e))?;
        }
        LayerWeight::SymInt(w) => {
            check_dims(tensor_name(name, "qweight"), &shape)?;
            w.validate().map_err(|e| core_problem(name, e))?;
        }
        LayerWeight::Float(a) => {
            let t = tensor_name(name, "weight");
            check_dims(t.clone(), &shape)?;
            if let Some((i, v)) = first_bad(a.indexed_iter(), f32::is_finite) {
                return Err(Problem::new(t, format!("value {v} at {i:?} is not finite")));
            }
        }
        LayerWeight::F16(a) => {
            let t = tensor_name(name, "weight");
            check_dims(t.clone(), &shape)?;
            if let Some((i, v)) = first_bad(a.indexed_iter(), f16::is_finite) {
                return Err(Problem::new(t, format!("value {v} at {i:?} is not finite")));
            }
        }
        LayerWeight::Bf16(a) => {
            let t = tensor_name(name, "weight");
            check_dims(t.clone(), &shape)?;
            if let Some((i, v)) = first_bad(a.indexed_iter(), bf16::is_finite) {
                return Err(Problem::new(t, format!("value {v} at {i:?} is not finite")));
            }
        }
    }
    let nk = match shape.as_slice() {
        &[n, k] => Some((n, k)),
        _ => None,
    };
    if let ActQuant::StaticPerTensor { scale } = l.act {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Problem::new(
                name,
                format!("static activation scale {scale} must be finite and > 0"),
            ));
        }
    }
    if l.act != ActQuant::None && nk.is_none() {
        return Err(Problem::new(
            name,
            format!("activation quantization needs a 2-D [N, K] weight, shape is {shape:?}"),
        ));
    }
    for (role, v, dim, positive) in [
        ("bias", &l.bias, 0usize, false),
        ("smooth", &l.smooth, 1, true),
    ] {
        let Some(v) = v else { continue };
        let t = tensor_name(name, role);
        let Some((n, k)) = nk else {
            return Err(Problem::new(
                t,
                format!("a {role} needs a 2-D [N, K] weight, shape is {shape:?}"),
            ));
        };
        let want = if dim == 0 { n } else { k };
        if v.len() != want {
            return Err(Problem::new(
                t,
                format!("expected shape [{want}], got [{}]", v.len()),
            ));
        }
        if let Some((i, x)) = v
            .iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite() || (positive && **x <= 0.0))
        {
            let need = if positive { "finite and > 0" } else { "finite" };
            return Err(Problem::new(t, format!("{role}[{i}] = {x} must be {need}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_strings_match_serde() {
        for s in Scheme::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(
                serde_json::from_str::<Scheme>(&format!("\"{s}\"")).unwrap(),
                s
            );
        }
    }

    #[test]
    fn layer_names_are_checked() {
        assert!(check_layer_name("model.layers.0.mlp.up_proj").is_ok());
        assert!(check_layer_name("").is_err());
        assert!(check_layer_name("a\nb").is_err());
        assert!(check_layer_name(&"x".repeat(MAX_LAYER_NAME_BYTES + 1)).is_err());
    }
}
