//! Tiny hostile checkpoints, each written here from the format's definition: every one is a
//! typed error, returned before anything is allocated from the values the file declares.

mod common;

use common::*;
use dgq_model::{Error, GgufFile, Model, Tokenizer};
use safetensors::tensor::Dtype;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The tiny LLaMA GGUF with metadata `edits` applied (each key replaced or added).
fn gguf_with(edits: Vec<(&'static str, GgufValue)>) -> Vec<u8> {
    let t = TinyLlama::default();
    let (mut kv, tensors) = tiny_gguf_parts(&t, &t.tensors(5), false, false);
    for (key, v) in edits {
        kv.retain(|(k, _)| *k != key);
        kv.push((key, v));
    }
    gguf_bytes(&kv, &tensors)
}

fn config_error(r: dgq_model::Result<Model>, field_part: &str) {
    match r {
        Err(Error::Config { field, .. }) => assert!(field.contains(field_part), "{field}"),
        other => panic!("expected a config error on {field_part}, got {other:?}"),
    }
}

#[test]
fn tiny_gguf_itself_loads() {
    // The base every hostile variant below starts from is a valid model.
    let dir = tempfile::tempdir().unwrap();
    let t = TinyLlama::default();
    let p = write(&dir, "ok.gguf", &tiny_gguf(&t, &t.tensors(5), false, false));
    let m = Model::from_gguf(&p).unwrap();
    assert_eq!(m.layers.len(), t.layers);
}

/// Issue 22 item 1: `general.alignment = 0`, the 57-byte file (v3 header, no tensors, one u32
/// key); candle's reader divides by it.
#[test]
fn gguf_alignment_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gguf_bytes(&[("general.alignment", GgufValue::U32(0))], &[]);
    // The writer pads to 32 bytes; the reproducer ends right after the value.
    bytes.truncate(57);
    let p = write(&dir, "a0.gguf", &bytes);
    for r in [
        GgufFile::open(&p).map(|_| ()),
        Model::from_gguf(&p).map(|_| ()),
        Tokenizer::from_gguf(&p).map(|_| ()),
    ] {
        match r {
            Err(Error::Gguf { problem, .. }) => assert!(problem.contains("alignment"), "{problem}"),
            other => panic!("{other:?}"),
        }
    }
    // Not a power of two, or not an integer: refused too. A power of two is fine.
    for v in [GgufValue::U32(24), GgufValue::Str("32".into())] {
        let p = write(
            &dir,
            "a.gguf",
            &gguf_bytes(&[("general.alignment", v)], &[]),
        );
        assert!(matches!(GgufFile::open(&p), Err(Error::Gguf { .. })));
    }
    let p = write(
        &dir,
        "a64.gguf",
        &gguf_bytes(&[("general.alignment", GgufValue::U32(64))], &[]),
    );
    GgufFile::open(&p).unwrap();
}

/// Issue 22 item 2: a huge head size allocated the rotary tables (2^36: 256 GiB, abort).
#[test]
fn huge_head_dim() {
    let dir = tempfile::tempdir().unwrap();
    for v in [
        GgufValue::U64(1 << 36),
        GgufValue::U32(1 << 29),
        GgufValue::U64(u64::MAX),
    ] {
        let p = write(
            &dir,
            "h.gguf",
            &gguf_with(vec![("llama.attention.key_length", v)]),
        );
        config_error(Model::from_gguf(&p), "key_length");
    }
    // Within bounds but not what the tensors hold: the first projection's shape is named.
    let p = write(
        &dir,
        "h.gguf",
        &gguf_with(vec![
            ("llama.attention.key_length", GgufValue::U32(64)),
            ("llama.rope.dimension_count", GgufValue::U32(64)),
        ]),
    );
    match Model::from_gguf(&p) {
        Err(Error::TensorShape { name, .. }) => assert_eq!(name, "blk.0.attn_q.weight"),
        other => panic!("{other:?}"),
    }

    let t = TinyLlama::default();
    let w = t.tensors(6);
    for hd in [1u64 << 36, 1 << 29] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = t.config_json();
        cfg["head_dim"] = hd.into();
        write_hf_dir(dir.path(), &cfg, &w, 1, Dtype::F32);
        config_error(Model::from_hf_dir(dir.path()), "head_dim");
    }
}

/// Issue 22 item 3: a huge layer count reserved space for that many layers (abort).
#[test]
fn huge_layer_count() {
    let dir = tempfile::tempdir().unwrap();
    for v in [GgufValue::U64(1 << 26), GgufValue::U64(1 << 40)] {
        let p = write(&dir, "l.gguf", &gguf_with(vec![("llama.block_count", v)]));
        config_error(Model::from_gguf(&p), "num_hidden_layers");
    }
    for n in [1u64 << 26, 1 << 40] {
        let dir = tempfile::tempdir().unwrap();
        let t = TinyLlama::default();
        let mut cfg = t.config_json();
        cfg["num_hidden_layers"] = n.into();
        write_hf_dir(dir.path(), &cfg, &t.tensors(7), 1, Dtype::F32);
        config_error(Model::from_hf_dir(dir.path()), "num_hidden_layers");

        let o = TinyOpt::default();
        let mut cfg = o.config_json();
        cfg["num_hidden_layers"] = n.into();
        write_hf_dir(dir.path(), &cfg, &o.tensors(7), 1, Dtype::F32);
        config_error(Model::from_hf_dir(dir.path()), "num_hidden_layers");
    }
}

/// One layer more than the file holds: the missing layer is named before any tensor is read
/// (the NaN planted in layer 0 would otherwise be the first error).
#[test]
fn layer_count_checked_against_the_file_first() {
    let t = TinyLlama::default();
    let mut w = t.tensors(8);
    w.get_mut("model.layers.0.self_attn.q_proj.weight")
        .unwrap()
        .1[0] = f32::NAN;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = t.config_json();
    cfg["num_hidden_layers"] = (t.layers + 1).into();
    write_hf_dir(dir.path(), &cfg, &w, 1, Dtype::F32);
    match Model::from_hf_dir(dir.path()) {
        Err(Error::MissingTensor { name }) => {
            assert_eq!(
                name,
                format!("model.layers.{}.self_attn.q_proj.weight", t.layers)
            )
        }
        other => panic!("{other:?}"),
    }
    // With the right count, the NaN is what fails.
    write_hf_dir(dir.path(), &t.config_json(), &w, 1, Dtype::F32);
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::NonFinite { .. })
    ));

    let o = TinyOpt::default();
    let mut cfg = o.config_json();
    cfg["num_hidden_layers"] = (o.layers + 1).into();
    write_hf_dir(dir.path(), &cfg, &o.tensors(8), 1, Dtype::F32);
    match Model::from_hf_dir(dir.path()) {
        Err(Error::MissingTensor { name }) => assert!(
            name.starts_with(&format!("model.decoder.layers.{}.", o.layers)),
            "{name}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Issue 22 item 4: a zero-element tensor reached candle's `qtensor_from_ggml` with a dangling
/// pointer (through `rope_freqs.weight`, read while building the config).
#[test]
fn zero_element_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let t = TinyLlama::default();
    let (kv, mut tensors) = tiny_gguf_parts(&t, &t.tensors(9), false, false);
    tensors.push(GgufTensor {
        name: "rope_freqs.weight".into(),
        shape: vec![0],
        ggml_type: GGML_F32,
        data: vec![],
    });
    let p = write(&dir, "z.gguf", &gguf_bytes(&kv, &tensors));
    for r in [
        GgufFile::open(&p).map(|_| ()),
        Model::from_gguf(&p).map(|_| ()),
    ] {
        match r {
            Err(Error::Gguf { problem, .. }) => {
                assert!(problem.contains("rope_freqs.weight"), "{problem}");
                assert!(problem.contains("no elements"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
    }
    for (shape, ty) in [(vec![0, 32], GGML_Q8_0), (vec![4, 0], GGML_F16)] {
        let bytes = gguf_bytes(
            &[],
            &[GgufTensor {
                name: "w".into(),
                shape,
                ggml_type: ty,
                data: vec![],
            }],
        );
        let p = write(&dir, "z.gguf", &bytes);
        assert!(matches!(GgufFile::open(&p), Err(Error::Gguf { .. })));
    }
}

/// `rope_freqs.weight` of the wrong length is refused before it is read.
#[test]
fn rope_freqs_shape_checked_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let t = TinyLlama::default();
    let (kv, mut tensors) = tiny_gguf_parts(&t, &t.tensors(10), false, false);
    tensors.push(GgufTensor {
        name: "rope_freqs.weight".into(),
        shape: vec![t.hd],
        ggml_type: GGML_F32,
        data: f32_bytes(&vec![1.0; t.hd]),
    });
    let p = write(&dir, "r.gguf", &gguf_bytes(&kv, &tensors));
    match Model::from_gguf(&p) {
        Err(Error::TensorShape { name, expected, .. }) => {
            assert_eq!(
                (name.as_str(), expected),
                ("rope_freqs.weight", vec![t.hd / 2])
            )
        }
        other => panic!("{other:?}"),
    }
    // The right length loads, and counts as used.
    tensors.pop();
    tensors.push(GgufTensor {
        name: "rope_freqs.weight".into(),
        shape: vec![t.hd / 2],
        ggml_type: GGML_F32,
        data: f32_bytes(&vec![1.0; t.hd / 2]),
    });
    let p = write(&dir, "r.gguf", &gguf_bytes(&kv, &tensors));
    let m = Model::from_gguf(&p).unwrap();
    assert!(
        m.load_info.unused_tensors.is_empty(),
        "{:?}",
        m.load_info.unused_tensors
    );
}

/// Issue 22 item 5: OPT's `max_position_embeddings = u64::MAX` overflowed the position offset.
#[test]
fn opt_max_positions_overflow() {
    let o = TinyOpt::default();
    let dir = tempfile::tempdir().unwrap();
    for v in [u64::MAX, u64::MAX - 1, 1 << 40] {
        let mut cfg = o.config_json();
        cfg["max_position_embeddings"] = v.into();
        write_hf_dir(dir.path(), &cfg, &o.tensors(11), 1, Dtype::F32);
        config_error(Model::from_hf_dir(dir.path()), "max_position_embeddings");
    }
    // Within bounds but larger than the table in the file: the table is named.
    let mut cfg = o.config_json();
    cfg["max_position_embeddings"] = (o.max_pos + 1).into();
    write_hf_dir(dir.path(), &cfg, &o.tensors(11), 1, Dtype::F32);
    match Model::from_hf_dir(dir.path()) {
        Err(Error::TensorShape { name, .. }) => {
            assert_eq!(name, "model.decoder.embed_positions.weight")
        }
        other => panic!("{other:?}"),
    }
}

/// A small file that declares tensors far larger than itself fails at open.
#[test]
fn gguf_tensor_larger_than_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (shape, ty) in [
        (vec![1usize << 20, 1 << 10], GGML_F32),
        (vec![1 << 16, 1 << 16], GGML_Q4_0),
        (vec![1, 32], GGML_F32),
    ] {
        let bytes = gguf_bytes(
            &[("general.architecture", GgufValue::Str("llama".into()))],
            &[GgufTensor {
                name: "big".into(),
                shape,
                ggml_type: ty,
                data: vec![0; 64],
            }],
        );
        let p = write(&dir, "big.gguf", &bytes);
        match GgufFile::open(&p) {
            Err(Error::Gguf { problem, .. }) => {
                assert!(problem.contains("past the end"), "{problem}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Offsets must be aligned, and a block type's rows whole blocks.
    let mut bytes = gguf_bytes(
        &[],
        &[GgufTensor {
            name: "w".into(),
            shape: vec![1, 32],
            ggml_type: GGML_F32,
            data: vec![0; 128],
        }],
    );
    // Header (24 bytes), then the entry: name length and "w", dim count, two dims, type, offset.
    let offset_at = 24 + 8 + 1 + 4 + 2 * 8 + 4;
    assert_eq!(bytes[offset_at..offset_at + 8], 0u64.to_le_bytes());
    bytes[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    let p = write(&dir, "off.gguf", &bytes);
    match GgufFile::open(&p) {
        Err(Error::Gguf { problem, .. }) => assert!(problem.contains("alignment"), "{problem}"),
        other => panic!("{other:?}"),
    }
    let bytes = gguf_bytes(
        &[],
        &[GgufTensor {
            name: "w".into(),
            shape: vec![2, 16],
            ggml_type: GGML_Q8_0,
            data: vec![0; 68],
        }],
    );
    let p = write(&dir, "blk.gguf", &bytes);
    match GgufFile::open(&p) {
        Err(Error::Gguf { problem, .. }) => assert!(problem.contains("block"), "{problem}"),
        other => panic!("{other:?}"),
    }
}

/// Header counts and lengths are bounded by the bytes left in the file.
#[test]
fn gguf_counts_and_lengths_beyond_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = gguf_bytes(
        &[
            ("general.architecture", GgufValue::Str("llama".into())),
            (
                "tokenizer.ggml.tokens",
                GgufValue::StrArray(vec!["a".into()]),
            ),
        ],
        &[],
    );
    GgufFile::open(&write(&dir, "g.gguf", &good)).unwrap();
    let patch = |at: usize, v: u64| {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        write(&dir, "p.gguf", &b)
    };
    // Tensor count, metadata count, the first key's length, the array's length.
    let key_len_at = 24;
    let arch_len = "general.architecture".len();
    let str_len_at = key_len_at + 8 + arch_len + 4;
    let second_key_at = str_len_at + 8 + "llama".len();
    let array_len_at = second_key_at + 8 + "tokenizer.ggml.tokens".len() + 4 + 4;
    for at in [8, 16, key_len_at, str_len_at, array_len_at] {
        for v in [u64::MAX, 1 << 40, good.len() as u64] {
            assert!(
                matches!(GgufFile::open(&patch(at, v)), Err(Error::Gguf { .. })),
                "length at {at} = {v}"
            );
        }
    }
    // A duplicate key is refused.
    let dup = gguf_bytes(
        &[
            ("general.architecture", GgufValue::Str("llama".into())),
            ("general.architecture", GgufValue::Str("qwen2".into())),
        ],
        &[],
    );
    assert!(matches!(
        GgufFile::open(&write(&dir, "d.gguf", &dup)),
        Err(Error::Gguf { .. })
    ));
}
