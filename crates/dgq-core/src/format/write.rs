//! Serialization. The safetensors container is assembled here rather than with
//! `safetensors::serialize`, because that takes the `__metadata__` as a `HashMap` and writes it
//! in hash order, which would make the bytes differ from run to run; this writer's output is a
//! deterministic function of the model (golden files, content hashes). The result is a plain
//! safetensors file, and the reader parses it with the safetensors crate.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::codec::{crc_hex, enc_bf16, enc_f16, enc_f32, enc_i8, row_major, Dt};
use super::meta::{self, ActMeta, LayerMeta, Role};
use super::{
    check_layer, check_layer_name, tensor_name, LayerWeight, PackedLayer, PackedModel, Problem,
    FORMAT_NAME, FORMAT_VERSION, MAX_HEADER_BYTES,
};
use crate::error::{Error, Result};
use crate::pack::{pack_i4, pack_u4};
use crate::quant::Bits;

struct OutTensor {
    name: String,
    dtype: Dt,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A serialized model: the first 8 + header bytes, then the tensor data in order.
struct Encoded {
    head: Vec<u8>,
    tensors: Vec<OutTensor>,
}

impl Encoded {
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.head)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
        }
        Ok(())
    }
}

/// One encoded tensor of a layer: role, dtype, shape, little-endian bytes.
type LayerTensor = (Role, Dt, Vec<usize>, Vec<u8>);

/// The tensors of one (validated) layer, by role.
fn encode_layer(layer: &PackedLayer) -> Result<Vec<LayerTensor>> {
    let mut out = Vec::new();
    match &layer.weight {
        LayerWeight::Dgq(w) => {
            let (n, k) = w.q.dim();
            let g = w.zeros.ncols();
            out.push((
                Role::QWeight,
                Dt::U8,
                vec![n, k / 2],
                row_major(&pack_u4(w.q.view())?).into_owned(),
            ));
            out.push((
                Role::Zeros,
                Dt::I8,
                vec![n, g],
                enc_i8(&row_major(&w.zeros)),
            ));
            out.push((Role::S2, Dt::I8, vec![n, g], enc_i8(&row_major(&w.s2))));
            out.push((Role::S1, Dt::F16, vec![n], enc_f16(&row_major(&w.s1))));
        }
        LayerWeight::SymInt(w) => {
            let (n, k) = w.q.dim();
            let g = w.scales.ncols();
            match w.bits {
                Bits::Int4 => out.push((
                    Role::QWeight,
                    Dt::U8,
                    vec![n, k / 2],
                    row_major(&pack_i4(w.q.view())?).into_owned(),
                )),
                Bits::Int8 => {
                    out.push((Role::QWeight, Dt::I8, vec![n, k], enc_i8(&row_major(&w.q))))
                }
            }
            out.push((
                Role::Scales,
                Dt::F16,
                vec![n, g],
                enc_f16(&row_major(&w.scales)),
            ));
        }
        LayerWeight::Float(a) => out.push((
            Role::Weight,
            Dt::F32,
            a.shape().to_vec(),
            enc_f32(&row_major(a)),
        )),
        LayerWeight::F16(a) => out.push((
            Role::Weight,
            Dt::F16,
            a.shape().to_vec(),
            enc_f16(&row_major(a)),
        )),
        LayerWeight::Bf16(a) => out.push((
            Role::Weight,
            Dt::Bf16,
            a.shape().to_vec(),
            enc_bf16(&row_major(a)),
        )),
    }
    if let Some(b) = &layer.bias {
        out.push((Role::Bias, Dt::F32, vec![b.len()], enc_f32(&row_major(b))));
    }
    if let Some(s) = &layer.smooth {
        out.push((Role::Smooth, Dt::F32, vec![s.len()], enc_f32(&row_major(s))));
    }
    Ok(out)
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| Error::format("<header>", format!("cannot serialize: {e}")))
}

fn encode(m: &PackedModel) -> Result<Encoded> {
    meta::check_extras(&m.metadata)?;
    let mut layers_meta = BTreeMap::new();
    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    // Validation and encoding are per layer and parallel; results are consumed in name order
    // so the first error reported does not depend on scheduling.
    let layers: Vec<(&String, &PackedLayer)> = m.layers.iter().collect();
    let encoded: Vec<Result<Vec<(LayerTensor, String)>>> = layers
        .par_iter()
        .map(|(name, layer)| {
            check_layer_name(name).map_err(Problem::into_invariant)?;
            check_layer(name, layer).map_err(Problem::into_invariant)?;
            let ts = encode_layer(layer)?;
            Ok(ts
                .into_iter()
                .map(|t| {
                    let c = crc_hex(&t.3);
                    (t, c)
                })
                .collect())
        })
        .collect();
    for ((name, layer), enc) in layers.into_iter().zip(encoded) {
        let mut crcs = BTreeMap::new();
        for ((role, dtype, shape, data), crc) in enc? {
            crcs.insert(role.as_str().to_string(), crc);
            let tname = tensor_name(name, role.as_str());
            // Roles contain no '.', so distinct layers cannot collide; checked anyway.
            if !names.insert(tname.clone()) {
                return Err(Error::invariant(
                    tname,
                    "tensor name produced by two layers",
                ));
            }
            tensors.push(OutTensor {
                name: tname,
                dtype,
                shape,
                data,
            });
        }
        let lm = LayerMeta {
            scheme: layer.weight.scheme(),
            shape: layer.weight.shape(),
            group_size: layer.weight.group_size(),
            act: ActMeta::from_act(layer.act),
            tensors: crcs,
        };
        layers_meta.insert(name.as_str(), lm);
    }

    let mut md: BTreeMap<String, String> = m.metadata.clone();
    md.insert(meta::KEY_FORMAT.into(), FORMAT_NAME.into());
    md.insert(meta::KEY_VERSION.into(), FORMAT_VERSION.to_string());
    md.insert(meta::KEY_SOURCE.into(), m.source_model.clone());
    md.insert(meta::KEY_METHOD.into(), m.method.clone());
    md.insert(meta::KEY_LAYERS.into(), json(&layers_meta)?);
    let crc = meta::metadata_crc(md.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    md.insert(meta::KEY_CRC.into(), format!("{crc:08x}"));

    // Larger elements first, so each tensor starts at a multiple of its element size.
    tensors.sort_by(|a, b| {
        b.dtype
            .size()
            .cmp(&a.dtype.size())
            .then_with(|| a.name.cmp(&b.name))
    });

    let mut h = String::from("{\"__metadata__\":");
    h += &json(&md)?;
    let mut offset = 0usize;
    for t in &tensors {
        let end = offset + t.data.len();
        h += &format!(
            ",{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            json(&t.name)?,
            t.dtype.name(),
            json(&t.shape)?
        );
        offset = end;
    }
    h.push('}');
    // Pad with spaces so the data section starts 8-byte aligned.
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    if h.len() > MAX_HEADER_BYTES {
        return Err(Error::config(
            "layers",
            m.layers.len(),
            "the header would exceed the 100 MB safetensors limit",
        ));
    }
    let mut head = Vec::with_capacity(8 + h.len());
    head.extend((h.len() as u64).to_le_bytes());
    head.extend(h.into_bytes());
    Ok(Encoded { head, tensors })
}

/// Serializes a model to bytes after validating it (errors: [`Error::Invariant`] naming the
/// tensor, [`Error::Config`] for a reserved extra key). Deterministic: equal models give equal
/// bytes.
pub fn to_bytes(m: &PackedModel) -> Result<Vec<u8>> {
    let e = encode(m)?;
    let mut out =
        Vec::with_capacity(e.head.len() + e.tensors.iter().map(|t| t.data.len()).sum::<usize>());
    e.write_to(&mut out).map_err(|source| Error::Io {
        path: "<memory>".into(),
        source,
    })?;
    Ok(out)
}

/// Writes a model to `path` atomically: the model is validated and encoded first, then written
/// to a temporary file in the same directory, fsynced and renamed over `path` (and the directory
/// fsynced on Unix). On any failure `path` is left as it was and the temporary file is removed.
/// A new file gets the umask's default mode, a replaced one keeps its mode
/// ([`crate::fsio::write_atomic`]).
pub fn write(path: &Path, m: &PackedModel) -> Result<()> {
    let e = encode(m)?;
    crate::fsio::write_atomic(path, |mut w| e.write_to(&mut w)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
