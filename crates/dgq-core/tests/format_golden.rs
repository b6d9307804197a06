//! The committed golden file must keep loading bit-identically, and a minimal reader written
//! from `docs/FORMAT.md` alone (no safetensors crate, no dgq reader) must decode it to the same
//! values.
//!
//! Regenerate (only for a deliberate format change, together with `GOLDEN_LEN`/`GOLDEN_CRC`):
//! `cargo test -p dgq-core --test format_golden -- --ignored regenerate_golden`

mod format_common;

use std::path::PathBuf;

use dgq_core::act::ActQuant;
use dgq_core::format::{self, LayerWeight, Scheme};
use format_common::*;
use serde_json::Value;

/// Length and CRC-32 of the committed file; regenerating it must update these on purpose.
const GOLDEN_LEN: usize = 2462;
const GOLDEN_CRC: u32 = 0xb694_a25e;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/golden_v1.dgq.safetensors")
}

fn golden_file() -> Vec<u8> {
    std::fs::read(golden_path()).expect("tests/data/golden_v1.dgq.safetensors is committed")
}

#[test]
#[ignore = "writes tests/data/golden_v1.dgq.safetensors"]
fn regenerate_golden() {
    let p = golden_path();
    format::write(&p, &golden_model()).unwrap();
    let b = std::fs::read(&p).unwrap();
    println!(
        "wrote {} ({} bytes, crc32 {:08x})",
        p.display(),
        b.len(),
        crc32fast::hash(&b)
    );
}

#[test]
fn golden_file_is_pinned() {
    let b = golden_file();
    assert_eq!((b.len(), crc32fast::hash(&b)), (GOLDEN_LEN, GOLDEN_CRC));
}

#[test]
fn golden_file_loads_to_the_generator_model() {
    let b = golden_file();
    let m = format::from_bytes(&b).unwrap();
    assert_eq!(m, golden_model());
    assert_eq!(format::read(&golden_path()).unwrap(), m);
}

#[test]
fn golden_file_reserializes_bit_identically() {
    let b = golden_file();
    assert_eq!(
        format::to_bytes(&format::from_bytes(&b).unwrap()).unwrap(),
        b
    );
    assert_eq!(golden_bytes(), b);
}

#[test]
fn golden_file_inspects() {
    let info = format::inspect(&golden_path()).unwrap();
    assert_eq!(info.format_version, 1);
    assert_eq!(info.source_model, "dgq/golden");
    assert_eq!(
        info.metadata.get("calibration").map(String::as_str),
        Some("synthetic")
    );
    let l: Vec<_> = info
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.scheme, l.shape.clone(), l.bits))
        .collect();
    assert_eq!(
        l,
        vec![
            (GOLDEN_DGQ, Scheme::DgqW4, vec![4, 16], 4),
            (GOLDEN_BF16, Scheme::Bf16, vec![3], 16),
            (GOLDEN_INT8, Scheme::SymInt8, vec![2, 8], 8),
            (GOLDEN_INT4, Scheme::SymInt4, vec![3, 16], 4),
            (GOLDEN_NORM, Scheme::F32, vec![16], 32),
            (GOLDEN_F16, Scheme::F16, vec![3, 4], 16),
        ]
    );
    let dgq = &info.layers[0];
    assert_eq!(
        (dgq.group_size, dgq.act, dgq.has_bias, dgq.has_smooth),
        (Some(8), ActQuant::DynamicPerToken, true, false)
    );
    // qweight 4·8 + zeros 4·2 + s2 4·2 + s1 4·2 + bias 4·4 bytes.
    assert_eq!(dgq.bytes, 32 + 8 + 8 + 8 + 16);
    assert_eq!(
        info.layers[2].act,
        ActQuant::StaticPerTensor {
            scale: GOLDEN_ACT_SCALE
        }
    );
    let total: u64 = info.layers.iter().map(|l| l.bytes).sum();
    assert_eq!(total + 8 + info.header_bytes, info.file_bytes);
}

/// A reader written from docs/FORMAT.md: header length, JSON header, tensor slices, nibble and
/// byte order, CRCs. It shares nothing with the library but serde_json and crc32fast.
struct SpecReader<'a> {
    data: &'a [u8],
    header: Value,
    layers: Value,
}

impl<'a> SpecReader<'a> {
    fn new(b: &'a [u8]) -> Self {
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        let text = std::str::from_utf8(&b[8..8 + n]).unwrap();
        let header: Value = serde_json::from_str(text).unwrap();
        let md = &header["__metadata__"];
        assert_eq!(md["format"], "dgq");
        assert_eq!(md["format_version"], "1");
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_value(md.clone()).unwrap();
        assert_eq!(
            md["metadata_crc32"].as_str().unwrap(),
            spec_metadata_crc(&map)
        );
        let layers: Value = serde_json::from_str(md["layers"].as_str().unwrap()).unwrap();
        SpecReader {
            data: &b[8 + n..],
            header,
            layers,
        }
    }

    /// (dtype, shape, bytes) of `layer.role`, with its CRC checked against the layer entry.
    fn tensor(&self, layer: &str, role: &str) -> (String, Vec<usize>, &'a [u8]) {
        let t = &self.header[format!("{layer}.{role}")];
        let off: Vec<usize> = serde_json::from_value(t["data_offsets"].clone()).unwrap();
        let bytes = &self.data[off[0]..off[1]];
        assert_eq!(
            self.layers[layer]["tensors"][role].as_str().unwrap(),
            crc_hex(bytes),
            "{layer}.{role}"
        );
        (
            t["dtype"].as_str().unwrap().to_string(),
            serde_json::from_value(t["shape"].clone()).unwrap(),
            bytes,
        )
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32()
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
}

#[test]
fn golden_file_decodes_per_the_spec() {
    let b = golden_file();
    let r = SpecReader::new(&b);
    let m = golden_model();

    // Every tensor in the header is declared by a layer, and vice versa.
    let mut declared = 0;
    for (name, l) in r.layers.as_object().unwrap() {
        for role in l["tensors"].as_object().unwrap().keys() {
            r.tensor(name, role);
            declared += 1;
        }
    }
    assert_eq!(declared + 1, r.header.as_object().unwrap().len());

    // DGQ: u4 codes, low nibble = even column; zeros/s2 int8; s1 f16; bias f32.
    let LayerWeight::Dgq(w) = &m.layers[GOLDEN_DGQ].weight else {
        panic!()
    };
    let e = &r.layers[GOLDEN_DGQ];
    assert_eq!(
        (e["scheme"].as_str(), e["group_size"].as_u64()),
        (Some("dgq_w4"), Some(8))
    );
    assert_eq!(e["shape"], serde_json::json!([4, 16]));
    assert_eq!(e["act"], serde_json::json!({"mode": "dynamic_per_token"}));
    let (dt, shape, q) = r.tensor(GOLDEN_DGQ, "qweight");
    assert_eq!((dt.as_str(), shape), ("U8", vec![4, 8]));
    for row in 0..4 {
        for c in 0..16 {
            let byte = q[row * 8 + c / 2];
            let nib = if c % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            assert_eq!(nib, w.q[[row, c]], "q[{row}, {c}]");
        }
    }
    let (dt, shape, z) = r.tensor(GOLDEN_DGQ, "zeros");
    assert_eq!((dt.as_str(), shape), ("I8", vec![4, 2]));
    let (_, _, s2) = r.tensor(GOLDEN_DGQ, "s2");
    let (dt, _, s1) = r.tensor(GOLDEN_DGQ, "s1");
    assert_eq!(dt, "F16");
    for row in 0..4 {
        for g in 0..2 {
            assert_eq!(z[row * 2 + g] as i8, w.zeros[[row, g]]);
            assert_eq!(s2[row * 2 + g] as i8, w.s2[[row, g]]);
            // Dequantization as the spec states it: s1 · S2 · (q − z).
            for c in g * 8..g * 8 + 8 {
                let byte = q[row * 8 + c / 2];
                let code = if c % 2 == 0 { byte & 0x0f } else { byte >> 4 } as i32;
                let v = f16_at(s1, row)
                    * (s2[row * 2 + g] as i8 as i32 * (code - z[row * 2 + g] as i32)) as f32;
                assert_eq!(v, w.dequantize()[[row, c]]);
            }
        }
    }
    let (dt, _, bias) = r.tensor(GOLDEN_DGQ, "bias");
    assert_eq!(dt, "F32");
    let want = m.layers[GOLDEN_DGQ].bias.as_ref().unwrap();
    assert!((0..4).all(|i| f32_at(bias, i) == want[i]));

    // Sym int4: two's-complement nibbles, low nibble first; f16 scales [N, K/g].
    let LayerWeight::SymInt(w4) = &m.layers[GOLDEN_INT4].weight else {
        panic!()
    };
    let (dt, shape, q4) = r.tensor(GOLDEN_INT4, "qweight");
    assert_eq!((dt.as_str(), shape), ("U8", vec![3, 8]));
    for row in 0..3 {
        for c in 0..16 {
            let nib = (q4[row * 8 + c / 2] >> (4 * (c % 2))) & 0x0f;
            let v = if nib >= 8 { nib as i8 - 16 } else { nib as i8 };
            assert_eq!(v, w4.q[[row, c]]);
        }
    }
    let (dt, shape, sc) = r.tensor(GOLDEN_INT4, "scales");
    assert_eq!((dt.as_str(), shape), ("F16", vec![3, 2]));
    assert!((0..6).all(|i| f16_at(sc, i) == w4.scales[[i / 2, i % 2]].to_f32()));
    let (_, shape, sm) = r.tensor(GOLDEN_INT4, "smooth");
    assert_eq!(shape, vec![16]);
    assert!((0..16).all(|i| f32_at(sm, i) == m.layers[GOLDEN_INT4].smooth.as_ref().unwrap()[i]));

    // Sym int8 with a static activation scale, read as binary64 and narrowed.
    let LayerWeight::SymInt(w8) = &m.layers[GOLDEN_INT8].weight else {
        panic!()
    };
    let (dt, _, q8) = r.tensor(GOLDEN_INT8, "qweight");
    assert_eq!(dt, "I8");
    assert!((0..16).all(|i| q8[i] as i8 == w8.q[[i / 8, i % 8]]));
    let act = &r.layers[GOLDEN_INT8]["act"];
    assert_eq!(act["mode"], "static_per_tensor");
    assert_eq!(act["scale"].as_f64().unwrap() as f32, GOLDEN_ACT_SCALE);

    // Float tensors.
    let LayerWeight::Float(norm) = &m.layers[GOLDEN_NORM].weight else {
        panic!()
    };
    let (dt, _, nb) = r.tensor(GOLDEN_NORM, "weight");
    assert_eq!(dt, "F32");
    assert!((0..16).all(|i| f32_at(nb, i) == norm[[i]]));
    let LayerWeight::F16(emb) = &m.layers[GOLDEN_F16].weight else {
        panic!()
    };
    let (_, shape, eb) = r.tensor(GOLDEN_F16, "weight");
    assert_eq!(shape, vec![3, 4]);
    assert!((0..12).all(|i| f16_at(eb, i) == emb[[i / 4, i % 4]].to_f32()));
    let LayerWeight::Bf16(gs) = &m.layers[GOLDEN_BF16].weight else {
        panic!()
    };
    let (dt, _, gb) = r.tensor(GOLDEN_BF16, "weight");
    assert_eq!(dt, "BF16");
    assert!((0..3)
        .all(|i| half::bf16::from_bits(u16::from_le_bytes([gb[2 * i], gb[2 * i + 1]])) == gs[[i]]));
}
