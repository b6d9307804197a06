//! A packed file and a model: the file's layer names, exporting a quantized model's layers into
//! a [`PackedModel`] and loading one back onto a model ([`apply_packed`]).

use std::collections::BTreeMap;

use dgq_core::format::{LayerWeight, PackedLayer, PackedModel};
use ndarray::Array1;

use crate::config::Family;
use crate::error::{Error, Result};
use crate::layer::{DecoderLayer, NormSlot};
use crate::linear::LinearSlot;
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

/// Loads a packed file's layers into `model` (loaded from the same source as the file was made
/// from): quantized linears replace the float ones (run with `exec`), float norm tensors replace
/// the norms' weights/biases. Returns the number of linears replaced.
///
/// Errors: a name the model has no slot for, shape mismatches, invalid layers.
pub fn apply_packed(model: &mut Model, packed: &PackedModel, exec: Exec) -> Result<usize> {
    let family = model.config.family;
    let mut used: BTreeMap<&str, ()> = BTreeMap::new();
    let mut replaced = 0;
    let mut total = 0;
    for layer in model.layers.iter_mut() {
        total += layer.slots().len();
        for &slot in layer.slots() {
            let name = linear_name(family, layer.index, slot);
            if let Some((key, p)) = packed.layers.get_key_value(&name) {
                let q = QuantLinear::from_packed(p, exec)?;
                layer.linear_mut(slot)?.replace(Box::new(q))?;
                used.insert(key.as_str(), ());
                replaced += 1;
            }
        }
        for ns in [NormSlot::Attn, NormSlot::Mlp] {
            let base = norm_name(family, layer.index, ns);
            let norm = layer.norm_mut(ns);
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
                let v: Array1<f32> = a
                    .clone()
                    .into_dimensionality()
                    .map_err(|_| Error::shape(name.clone(), "[d]", format!("{:?}", a.shape())))?;
                if v.len() != norm.dim() {
                    return Err(Error::shape(name, norm.dim(), v.len()));
                }
                if is_bias {
                    norm.bias = Some(v);
                } else {
                    norm.weight = v;
                }
                used.insert(key.as_str(), ());
            }
        }
    }
    if replaced > 0 && replaced != total {
        return Err(Error::config(
            "packed file",
            format!("{replaced} of {total} linears"),
            "covers only part of the model's linears (was it made from another model?)",
        ));
    }
    if let Some(name) = packed
        .layers
        .keys()
        .find(|k| !used.contains_key(k.as_str()))
    {
        return Err(Error::config(
            "packed layer",
            name,
            "the model has no such layer (was the file made from another model?)",
        ));
    }
    Ok(replaced)
}
