//! Deserialization with full validation.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use rayon::prelude::*;
use safetensors::SafeTensors;

use super::codec::{dec_bf16, dec_f16, dec_f32, dec_i8};
use super::meta::{self, ParsedLayer, Role};
use super::{check_layer, LayerWeight, PackedLayer, PackedModel, Problem, Scheme};
use crate::error::{Error, Result};
use crate::pack::{unpack_i4, unpack_u4};
use crate::quant::dual_grained::DualGrainedWeight;
use crate::quant::sym::SymIntWeight;
use crate::quant::Bits;

/// Maps the safetensors crate's parse errors to [`Error::Format`].
pub(crate) fn st_error(e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let tensor = match &e {
        E::InvalidOffset(t) | E::TensorNotFound(t) => t.clone(),
        _ => "<header>".to_string(),
    };
    Error::format(tensor, format!("not a valid safetensors file: {e}"))
}

/// Reads and validates a packed file. See [`from_bytes`].
pub fn read(path: &Path) -> Result<PackedModel> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes)
}

/// Parses and validates a packed file held in memory.
///
/// Checks, in order: the safetensors container (header length, JSON, offsets covering the data
/// exactly), format name, format version ([`Error::UnsupportedVersion`]), metadata CRC, layer
/// JSON, per layer the logical shape, group size, activation mode and declared tensors, per
/// tensor presence, dtype, shape and data CRC, then the decoded values (ranges, the DGQ
/// overflow bound, finite positive scales), and finally that the file holds no undeclared
/// tensor. Every failure is an [`Error::Format`] naming the tensor (or metadata key).
pub fn from_bytes(bytes: &[u8]) -> Result<PackedModel> {
    let (n, st) = SafeTensors::read_metadata(bytes).map_err(st_error)?;
    let parsed = meta::parse(&st)?;
    let data = bytes
        .get(8 + n..)
        .ok_or_else(|| Error::format("<header>", "header extends past the end"))?;
    // Layers decode and validate independently; collecting every result before picking the
    // first error (in name order) keeps the reported error deterministic.
    let decoded: Vec<Result<PackedLayer>> = parsed
        .layers
        .par_iter()
        .map(|pl| {
            let layer = decode_layer(pl, data)?;
            check_layer(&pl.name, &layer).map_err(Problem::into_format)?;
            Ok(layer)
        })
        .collect();
    let mut layers = BTreeMap::new();
    for (pl, layer) in parsed.layers.iter().zip(decoded) {
        layers.insert(pl.name.clone(), layer?);
    }
    Ok(PackedModel {
        source_model: parsed.source_model,
        method: parsed.method,
        layers,
        metadata: parsed.extras,
    })
}

fn arr2<T>(name: &str, shape: (usize, usize), v: Vec<T>) -> Result<Array2<T>> {
    Array2::from_shape_vec(shape, v)
        .map_err(|e| Error::format(name, format!("element count does not fit the shape: {e}")))
}

fn arr_d<T>(name: &str, shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| Error::format(name, format!("element count does not fit the shape: {e}")))
}

fn decode_layer(pl: &ParsedLayer, data: &[u8]) -> Result<PackedLayer> {
    let mut raw: BTreeMap<Role, (&str, &[u8])> = BTreeMap::new();
    for (spec, (start, end)) in &pl.tensors {
        let bytes = data
            .get(*start..*end)
            .ok_or_else(|| Error::format(&spec.name, "data offsets out of bounds"))?;
        let crc = crc32fast::hash(bytes);
        if crc != spec.crc {
            return Err(Error::format(
                &spec.name,
                format!("data CRC-32 mismatch (stored {:08x}, computed {crc:08x}): the tensor data is corrupted", spec.crc),
            ));
        }
        raw.insert(spec.role, (spec.name.as_str(), bytes));
    }
    let get = |role: Role| {
        raw.get(&role)
            .copied()
            .ok_or_else(|| Error::format(format!("{}.{}", pl.name, role.as_str()), "missing"))
    };
    let shape = &pl.meta.shape;
    let (n, k) = match shape.as_slice() {
        &[n, k] => (n, k),
        _ => (0, 0),
    };
    let g = pl.meta.group_size.unwrap_or(1).max(1);
    let ng = k / g;
    let weight = match pl.meta.scheme {
        Scheme::DgqW4 => {
            let (qn, qb) = get(Role::QWeight)?;
            let (zn, zb) = get(Role::Zeros)?;
            let (sn, sb) = get(Role::S2)?;
            let (_, s1b) = get(Role::S1)?;
            LayerWeight::Dgq(DualGrainedWeight {
                group_size: g,
                q: unpack_u4(arr2(qn, (n, k / 2), qb.to_vec())?.view()),
                zeros: arr2(zn, (n, ng), dec_i8(zb))?,
                s2: arr2(sn, (n, ng), dec_i8(sb))?,
                s1: Array1::from_vec(dec_f16(s1b)),
            })
        }
        Scheme::SymInt4 | Scheme::SymInt8 => {
            let (qn, qb) = get(Role::QWeight)?;
            let (scn, scb) = get(Role::Scales)?;
            let (bits, q) = if pl.meta.scheme == Scheme::SymInt4 {
                (
                    Bits::Int4,
                    unpack_i4(arr2(qn, (n, k / 2), qb.to_vec())?.view()),
                )
            } else {
                (Bits::Int8, arr2(qn, (n, k), dec_i8(qb))?)
            };
            LayerWeight::SymInt(SymIntWeight {
                bits,
                group_size: g,
                q,
                scales: arr2(scn, (n, ng), dec_f16(scb))?,
            })
        }
        Scheme::F32 => {
            let (wn, wb) = get(Role::Weight)?;
            LayerWeight::Float(arr_d(wn, shape, dec_f32(wb))?)
        }
        Scheme::F16 => {
            let (wn, wb) = get(Role::Weight)?;
            LayerWeight::F16(arr_d::<f16>(wn, shape, dec_f16(wb))?)
        }
        Scheme::Bf16 => {
            let (wn, wb) = get(Role::Weight)?;
            LayerWeight::Bf16(arr_d::<bf16>(wn, shape, dec_bf16(wb))?)
        }
    };
    let vec1 = |role| raw.get(&role).map(|(_, b)| Array1::from_vec(dec_f32(b)));
    Ok(PackedLayer {
        weight,
        act: pl.act,
        bias: vec1(Role::Bias),
        smooth: vec1(Role::Smooth),
    })
}
