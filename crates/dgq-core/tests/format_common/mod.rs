//! Shared helpers for the format tests: deterministic model builders and a raw-file editor that
//! re-implements the CRC rules of `docs/FORMAT.md` independently of the library, so tests can
//! craft files that are corrupt in exactly one way.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use dgq_core::act::ActQuant;
use dgq_core::format::{LayerWeight, PackedLayer, PackedModel};
use dgq_core::quant::dual_grained::q_bounds;
use dgq_core::quant::Bits;
use dgq_core::{DualGrainedWeight, SymIntWeight};
use half::{bf16, f16};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// SplitMix64: a fixed, dependency-free generator so the golden file never depends on a crate's
/// RNG algorithm.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A multiple of 1/64 in [-15.625, 15.625]: exact in f16, bf16 and f32.
    pub fn small(&mut self) -> f32 {
        (self.below(2001) as f32 - 1000.0) / 64.0
    }
    /// A positive scale, exact in f16.
    pub fn scale(&mut self) -> f32 {
        (1 + self.below(1000)) as f32 / 4096.0
    }
    /// Any finite f32 bit pattern (subnormals, -0.0, huge values included).
    pub fn any_f32(&mut self) -> f32 {
        loop {
            let v = f32::from_bits(self.next() as u32);
            if v.is_finite() {
                return v;
            }
        }
    }
    pub fn any_f16(&mut self) -> f16 {
        loop {
            let v = f16::from_bits(self.next() as u16);
            if v.is_finite() {
                return v;
            }
        }
    }
    pub fn any_bf16(&mut self) -> bf16 {
        loop {
            let v = bf16::from_bits(self.next() as u16);
            if v.is_finite() {
                return v;
            }
        }
    }
    /// Any positive finite f16 (a valid scale).
    pub fn pos_f16(&mut self) -> f16 {
        loop {
            let v = f16::from_bits(self.next() as u16 & 0x7fff);
            if v.is_finite() && v.to_f32() > 0.0 {
                return v;
            }
        }
    }
}

/// A valid DGQ weight with every code inside its overflow-safe bounds.
pub fn dgq_weight(r: &mut Gen, n: usize, k: usize, g: usize) -> DualGrainedWeight {
    let ng = k / g;
    let zeros = Array2::from_shape_fn((n, ng), |_| r.below(16) as i8);
    let s2 = Array2::from_shape_fn((n, ng), |_| 1 + r.below(127) as i8);
    let q = Array2::from_shape_fn((n, k), |(i, c)| {
        let (lo, hi) = q_bounds(zeros[[i, c / g]] as i32, s2[[i, c / g]] as i32);
        (lo + r.below((hi - lo + 1) as u64) as i32) as u8
    });
    let s1 = Array1::from_shape_fn(n, |_| f16::from_f32(r.scale()));
    DualGrainedWeight::new(g, q, zeros, s2, s1).expect("generator makes valid weights")
}

/// A valid symmetric weight.
pub fn sym_weight(r: &mut Gen, bits: Bits, n: usize, k: usize, g: usize) -> SymIntWeight {
    let m = bits.sym_max() as u64;
    let q = Array2::from_shape_fn((n, k), |_| (r.below(2 * m + 1) as i64 - m as i64) as i8);
    let scales = Array2::from_shape_fn((n, k / g), |_| f16::from_f32(r.scale()));
    SymIntWeight::new(bits, g, q, scales).expect("generator makes valid weights")
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
    let mut r = Gen::new(0x00d6_9001);
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
