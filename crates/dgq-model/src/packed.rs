//! A packed file and a model: the file's layer names, exporting a quantized model's layers into
//! a [`PackedModel`], identifying the model a file was made from ([`model_fingerprint`]) and
//! loading a file back onto a model ([`apply_packed`]).

use std::collections::BTreeSet;

use dgq_core::format::{LayerWeight, PackedLayer, PackedModel};
use ndarray::Array1;
use sha2::{Digest, Sha256};

use crate::config::Family;
use crate::error::{Error, Result};
use crate::layer::{DecoderLayer, NormSlot};
use crate::linear::{Linear, LinearOp, LinearSlot};
use crate::model::Model;
use crate::qlinear::{Exec, QuantLinear};

/// Packed-file name of a linear (Hugging Face module names).
pub fn linear_name(family: Family, layer: usize, slot: LinearSlot) -> String {
    let base = layer_prefix(family, layer);
    let part = match slot {
        LinearSlot::Q | LinearSlot::K | LinearSlot::V | LinearSlot::O => "self_attn",
        _ => "mlp",
    };
    match family {
        Family::Opt if part == "mlp" => format!("{base}.{}", slot.hf_name(family)),
        _ => format!("{base}.{part}.{}", slot.hf_name(family)),
    }
}

/// Packed-file name of a norm's weight (`.weight`) — its LayerNorm shift is `…​.bias`.
pub fn norm_name(family: Family, layer: usize, slot: NormSlot) -> String {
    let base = layer_prefix(family, layer);
    let n = match (family, slot) {
        (Family::Opt, NormSlot::Attn) => "self_attn_layer_norm",
        (Family::Opt, NormSlot::Mlp) => "final_layer_norm",
        (_, NormSlot::Attn) => "input_layernorm",
        (_, NormSlot::Mlp) => "post_attention_layernorm",
    };
    format!("{base}.{n}")
}

fn layer_prefix(family: Family, layer: usize) -> String {
    match family {
        Family::Opt => format!("model.decoder.layers.{layer}"),
        _ => format!("model.layers.{layer}"),
    }
}

/// Adds `layer`'s replaced linears (every op with a packed form) to `packed`, and with
/// `norms` its norm weights and biases (smoothing changed them: the file must carry them).
pub fn export_layer(layer: &DecoderLayer, norms: bool, packed: &mut PackedModel) -> Result<()> {
    let family = layer.family;
    for &slot in layer.slots() {
        if let Some(p) = layer.linear(slot)?.op().packed() {
            packed
                .layers
                .insert(linear_name(family, layer.index, slot), p);
        }
    }
    if norms {
        for ns in [NormSlot::Attn, NormSlot::Mlp] {
            let n = layer.norm(ns);
            let base = norm_name(family, layer.index, ns);
            packed.layers.insert(
                format!("{base}.weight"),
                PackedLayer::new(LayerWeight::Float(n.weight.clone().into_dyn())),
            );
            if let Some(b) = &n.bias {
                packed.layers.insert(
                    format!("{base}.bias"),
                    PackedLayer::new(LayerWeight::Float(b.clone().into_dyn())),
                );
            }
        }
    }
    Ok(())
}

/// Metadata key under which [`quantize_model`](crate::quantize_model) records
/// [`model_fingerprint`] of the model a file was made from.
pub const FINGERPRINT_KEY: &str = "dgq.source_fingerprint";

/// Identifies a model by its float weights as loaded: `sha256:` and the 64 hex digits of SHA-256
/// over every tensor in model order (token and position embeddings, OPT's input projection, per
/// layer its two norms and its linears in execution order, the final norm, OPT's output
/// projection, an untied head), each as its name, its dimensions and its f32 values in
/// little-endian order. Paths and file formats do not enter it: the same weights loaded from
/// anywhere give the same fingerprint.
///
/// Errors: a linear that was already replaced (a quantized model has no float weights left to
/// identify it by).
pub fn model_fingerprint(model: &Model) -> Result<String> {
    let mut fp = Fingerprint(Sha256::new());
    fp.tensor("embed_tokens", model.embed_tokens.view());
    if let Some(p) = &model.embed_positions {
        fp.tensor("embed_positions", p.view());
    }
    fp.linear("project_in", model.project_in.as_ref())?;
    for layer in &model.layers {
        for (ns, part) in [(NormSlot::Attn, "attn_norm"), (NormSlot::Mlp, "mlp_norm")] {
            fp.norm(&format!("layers.{}.{part}", layer.index), layer.norm(ns));
        }
        for &slot in layer.slots() {
            let name = format!("layers.{}.{}", layer.index, slot.hf_name(layer.family));
            fp.linear(&name, Some(layer.linear(slot)?))?;
        }
    }
    if let Some(n) = &model.final_norm {
        fp.norm("final_norm", n);
    }
    fp.linear("project_out", model.project_out.as_ref())?;
    fp.linear("lm_head", model.lm_head.as_ref())?;
    let digest = fp.0.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

struct Fingerprint(Sha256);

impl Fingerprint {
    fn tensor<D: ndarray::Dimension>(&mut self, name: &str, a: ndarray::ArrayView<f32, D>) {
        let h = &mut self.0;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((a.ndim() as u64).to_le_bytes());
        for &d in a.shape() {
            h.update((d as u64).to_le_bytes());
        }
        match a.as_slice() {
            Some(s) if cfg!(target_endian = "little") => h.update(bytemuck::cast_slice(s)),
            _ => {
                for v in a.iter() {
                    h.update(v.to_le_bytes());
                }
            }
        }
    }

    fn norm(&mut self, name: &str, n: &crate::norm::Norm) {
        self.tensor(&format!("{name}.weight"), n.weight.view());
        if let Some(b) = &n.bias {
            self.tensor(&format!("{name}.bias"), b.view());
        }
    }

    fn linear(&mut self, name: &str, l: Option<&Linear>) -> Result<()> {
        let Some(l) = l else { return Ok(()) };
        let f = l.as_float().ok_or_else(|| {
            Error::Unsupported(format!(
                "{name} is already replaced ({}): a model is identified by its float weights; \
                 load it afresh",
                l.op().kind()
            ))
        })?;
        self.tensor(&format!("{name}.weight"), f.weight.view());
        if let Some(b) = &f.bias {
            self.tensor(&format!("{name}.bias"), b.view());
        }
        Ok(())
    }
}

/// What [`check_source`] could establish about a packed file's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCheck {
    /// The file records the fingerprint of this very model.
    Verified,
    /// The file records no fingerprint (written before dgq recorded one, or by another tool):
    /// only its layer names and shapes can be checked.
    Unverified,
}

/// Checks that `packed` was made from `model` (a freshly loaded one): compares the fingerprint
/// the file records with the model's.
///
/// Errors: [`Error::OtherModel`] when they differ; the errors of [`model_fingerprint`].
pub fn check_source(model: &Model, packed: &PackedModel) -> Result<SourceCheck> {
    let Some(expected) = packed.metadata.get(FINGERPRINT_KEY) else {
        return Ok(SourceCheck::Unverified);
    };
    let found = model_fingerprint(model)?;
    if *expected != found {
        return Err(Error::OtherModel {
            source_model: packed.source_model.clone(),
            expected: expected.clone(),
            found,
        });
    }
    Ok(SourceCheck::Verified)
}

/// A linear or norm tensor of the file, ready to install at a position in `Model::layers`.
enum Install {
    Linear(usize, LinearSlot, Box<QuantLinear>),
    Norm(usize, NormSlot, bool, Array1<f32>),
}

/// Loads a packed file's layers into `model` (loaded from the same source as the file was made
/// from): quantized linears replace the float ones (run with `exec`), float norm tensors replace
/// the norms' weights/biases. Returns the number of linears replaced. Everything is checked
/// before the model changes: on an error it is left as it was.
///
/// Errors ([`Error::PackedMismatch`] naming the layer unless said otherwise): a file layer the
/// model has no slot for, a linear or norm of another shape, a file covering only part of the
/// model's linears; [`Error::OtherModel`] when the file records the fingerprint of another model
/// (see [`check_source`]); invalid layers.
pub fn apply_packed(model: &mut Model, packed: &PackedModel, exec: Exec) -> Result<usize> {
    let family = model.config.family;
    let mismatch = |layer: &str, reason: String| Error::PackedMismatch {
        layer: layer.to_string(),
        reason,
    };
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut plan = Vec::new();
    let mut missing = None;
    let mut total = 0;
    for (pos, layer) in model.layers.iter().enumerate() {
        total += layer.slots().len();
        for &slot in layer.slots() {
            let name = linear_name(family, layer.index, slot);
            let Some((key, p)) = packed.layers.get_key_value(&name) else {
                missing.get_or_insert(name);
                continue;
            };
            let l = layer.linear(slot)?;
            let q = QuantLinear::from_packed(p, exec)?;
            let (fq, fm) = (
                [q.out_features(), q.in_features()],
                [l.out_features(), l.in_features()],
            );
            if fq != fm {
                return Err(mismatch(
                    &name,
                    format!("the file's linear is {fq:?}, the model's {fm:?} ([N, K])"),
                ));
            }
            plan.push(Install::Linear(pos, slot, Box::new(q)));
            used.insert(key.as_str());
        }
        for ns in [NormSlot::Attn, NormSlot::Mlp] {
            let base = norm_name(family, layer.index, ns);
            let norm = layer.norm(ns);
            for (suffix, is_bias) in [("weight", false), ("bias", true)] {
                let name = format!("{base}.{suffix}");
                let Some((key, p)) = packed.layers.get_key_value(&name) else {
                    continue;
                };
                let LayerWeight::Float(a) = &p.weight else {
                    return Err(Error::Unsupported(format!(
                        "{name}: norm tensors must be stored as f32"
                    )));
                };
                if a.shape() != [norm.dim()] {
                    return Err(mismatch(
                        &name,
                        format!(
                            "the file's norm tensor is {:?}, the model's [{}]",
                            a.shape(),
                            norm.dim()
                        ),
                    ));
                }
                let v = a.iter().copied().collect::<Array1<f32>>();
                plan.push(Install::Norm(pos, ns, is_bias, v));
                used.insert(key.as_str());
            }
        }
    }
    let replaced = plan
        .iter()
        .filter(|i| matches!(i, Install::Linear(..)))
        .count();
    if let Some(name) = missing.filter(|_| replaced > 0) {
        return Err(mismatch(
            &name,
            format!(
                "missing from the file, which has {replaced} of the model's {total} linears \
                 (was it made from another model?)"
            ),
        ));
    }
    if let Some(name) = packed.layers.keys().find(|k| !used.contains(k.as_str())) {
        return Err(mismatch(
            name,
            "the model has no such layer (was the file made from another model?)".into(),
        ));
    }
    check_source(model, packed)?;
    // Positions come from iterating these very layers; the shapes were checked above.
    for item in plan {
        match item {
            Install::Linear(pos, slot, q) => {
                if let Some(layer) = model.layers.get_mut(pos) {
                    layer.linear_mut(slot)?.replace(q)?;
                }
            }
            Install::Norm(pos, ns, is_bias, v) => {
                let Some(layer) = model.layers.get_mut(pos) else {
                    continue;
                };
                let norm = layer.norm_mut(ns);
                if is_bias {
                    norm.bias = Some(v);
                } else {
                    norm.weight = v;
                }
            }
        }
    }
    Ok(replaced)
}
