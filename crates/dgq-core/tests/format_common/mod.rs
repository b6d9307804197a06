//! Shared helpers for the format tests: deterministic model builders and a raw-file editor that
//! re-implements the CRC rules of `docs/FORMAT.md` independently of the library, so tests can
//! craft files that are corrupt in exactly one way.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use dgq_core::act::ActQuant;
use dgq_core::format::{LayerWeight, PackedLayer, PackedModel};
use dgq_core::quant::Bits;
use dgq_core::{DualGrainedWeight, SymIntWeight};
use dgq_testkit::TestRng;
use half::{bf16, f16};
use ndarray::{Array1, ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// The generator of every format test, golden file included: SplitMix64, a fixed algorithm, so
/// the golden file never depends on a crate's RNG.
pub use dgq_testkit::SplitMix64;

/// A valid DGQ weight with every code inside its overflow-safe bounds: S2 uniform in 1..=127,
/// S1 exact in f16.
pub fn dgq_weight(r: &mut SplitMix64, n: usize, k: usize, g: usize) -> DualGrainedWeight {
    dgq_testkit::dgq_weight(r, n, k, g, |r| r.int_in(1, 127) as i8, SplitMix64::scale)
}

/// A valid symmetric weight with scales exact in f16.
pub fn sym_weight(r: &mut SplitMix64, bits: Bits, n: usize, k: usize, g: usize) -> SymIntWeight {
    dgq_testkit::sym_weight(r, bits, n, k, g, SplitMix64::scale)
}

pub const GOLDEN_DGQ: &str = "blk.0.attn.qkv";
pub const GOLDEN_INT4: &str = "blk.0.mlp.up";
pub const GOLDEN_INT8: &str = "blk.0.mlp.down";
pub const GOLDEN_NORM: &str = "blk.0.norm";
pub const GOLDEN_F16: &str = "embed";
pub const GOLDEN_BF16: &str = "blk.0.gate_scale";
pub const GOLDEN_ACT_SCALE: f32 = 0.0125;

/// The model in `tests/data/golden_v1.dgq.safetensors`: one DGQ layer (2 groups, dynamic
/// activations, bias), one int4 layer (smoothing divisor), one int8 layer with a static
/// activation scale, and f32/f16/bf16 float tensors.
pub fn golden_model() -> PackedModel {
    let mut r = SplitMix64::new(0x00d6_9001);
    let mut m = PackedModel::new("dgq/golden", "golden-v1 generator");
    m.metadata.insert("calibration".into(), "synthetic".into());
    let dgq = dgq_weight(&mut r, 4, 16, 8);
    let bias = Array1::from_shape_fn(4, |_| r.small());
    m.layers.insert(
        GOLDEN_DGQ.into(),
        PackedLayer::new(LayerWeight::Dgq(dgq))
            .with_act(ActQuant::DynamicPerToken)
            .with_bias(bias),
    );
    let up = sym_weight(&mut r, Bits::Int4, 3, 16, 8);
    let smooth = Array1::from_shape_fn(16, |_| (1 + r.below(100)) as f32 / 16.0);
    m.layers.insert(
        GOLDEN_INT4.into(),
        PackedLayer::new(LayerWeight::SymInt(up)).with_smooth(smooth),
    );
    let down = sym_weight(&mut r, Bits::Int8, 2, 8, 8);
    m.layers.insert(
        GOLDEN_INT8.into(),
        PackedLayer::new(LayerWeight::SymInt(down)).with_act(ActQuant::StaticPerTensor {
            scale: GOLDEN_ACT_SCALE,
        }),
    );
    let norm = ArrayD::from_shape_fn(IxDyn(&[16]), |_| r.small());
    m.layers.insert(
        GOLDEN_NORM.into(),
        PackedLayer::new(LayerWeight::Float(norm)),
    );
    let emb = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |_| f16::from_f32(r.small()));
    m.layers
        .insert(GOLDEN_F16.into(), PackedLayer::new(LayerWeight::F16(emb)));
    let gs = ArrayD::from_shape_fn(IxDyn(&[3]), |_| bf16::from_f32(r.small()));
    m.layers
        .insert(GOLDEN_BF16.into(), PackedLayer::new(LayerWeight::Bf16(gs)));
    m
}

/// Bytes of the golden model as this build writes them.
pub fn golden_bytes() -> Vec<u8> {
    dgq_core::format::to_bytes(&golden_model()).expect("golden model is valid")
}

/// CRC-32 per the spec, as 8 lowercase hex digits.
pub fn crc_hex(b: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(b))
}

/// Metadata CRC per the spec: entries other than `metadata_crc32`, ascending byte order of
/// keys, each `key 0x00 value 0x00`.
pub fn spec_metadata_crc(meta: &BTreeMap<String, String>) -> String {
    let mut buf = Vec::new();
    for (k, v) in meta.iter().filter(|(k, _)| *k != "metadata_crc32") {
        buf.extend_from_slice(k.as_bytes());
        buf.push(0);
        buf.extend_from_slice(v.as_bytes());
        buf.push(0);
    }
    crc_hex(&buf)
}

/// A packed file taken apart, for editing.
#[derive(Clone, Debug)]
pub struct Raw {
    pub meta: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Raw {
    pub fn parse(b: &[u8]) -> Raw {
        let st = safetensors::SafeTensors::deserialize(b).expect("valid safetensors");
        let (_, md) = safetensors::SafeTensors::read_metadata(b).expect("valid safetensors");
        let meta = md
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
            .collect();
        Raw { meta, tensors }
    }

    /// Serializes with the safetensors crate (hash-ordered metadata, its own tensor order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(n, (d, s, b))| {
                (
                    n.clone(),
                    TensorView::new(*d, s.clone(), b).expect("consistent view"),
                )
            })
            .collect();
        let meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).expect("serializable")
    }

    pub fn layers(&self) -> serde_json::Value {
        serde_json::from_str(&self.meta["layers"]).expect("layers JSON")
    }

    pub fn set_layers(&mut self, v: &serde_json::Value) {
        self.meta.insert("layers".into(), v.to_string());
    }

    /// Edits one layer's JSON entry.
    pub fn edit_layer(&mut self, layer: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let mut l = self.layers();
        f(&mut l[layer]);
        self.set_layers(&l);
    }

    pub fn data_mut(&mut self, tensor: &str) -> &mut Vec<u8> {
        &mut self.tensors.get_mut(tensor).expect("tensor exists").2
    }

    /// Recomputes every tensor CRC in the layers JSON and then the metadata CRC, so that only
    /// the deliberate corruption remains.
    pub fn fix_crcs(&mut self) {
        let mut l = self.layers();
        if let Some(obj) = l.as_object_mut() {
            for (name, entry) in obj.iter_mut() {
                if let Some(ts) = entry["tensors"].as_object_mut() {
                    for (role, crc) in ts.iter_mut() {
                        if let Some((_, _, b)) = self.tensors.get(&format!("{name}.{role}")) {
                            *crc = serde_json::Value::String(crc_hex(b));
                        }
                    }
                }
            }
        }
        self.set_layers(&l);
        self.fix_meta_crc();
    }

    pub fn fix_meta_crc(&mut self) {
        let c = spec_metadata_crc(&self.meta);
        self.meta.insert("metadata_crc32".into(), c);
    }
}

/// Byte offset where the data section starts (8 + header length).
pub fn data_start(b: &[u8]) -> usize {
    8 + u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize
}
