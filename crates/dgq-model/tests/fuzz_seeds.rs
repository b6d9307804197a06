//! The seed corpora of the `gguf` and `hf_dir` fuzz targets (fuzz/seeds/gguf, fuzz/seeds/hf_dir),
//! made from the same tiny checkpoints the loader tests use, plus the hostile files of issue 22.
//! Seeds named `ok-*` must load, `bad-*` must fail with a typed error; every input the fuzzer
//! found a crash with (fuzz/regressions/<target>) must now load or fail without a panic.
//!
//! Regenerate: `cargo test -p dgq-model --test fuzz_seeds -- --ignored write_fuzz_seeds`

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dgq_model::{GgufFile, Model, Tokenizer};
use safetensors::tensor::Dtype;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The smallest LLaMA with GQA the loader accepts (a few KB on disk).
fn small_llama() -> TinyLlama {
    TinyLlama {
        vocab: 8,
        d: 8,
        ff: 8,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        hd: 4,
        ..TinyLlama::default()
    }
}

fn small_opt() -> TinyOpt {
    TinyOpt {
        vocab: 8,
        d: 8,
        ff: 8,
        layers: 1,
        heads: 2,
        max_pos: 4,
        ..TinyOpt::default()
    }
}

fn with_kv(
    mut parts: (Vec<(&'static str, GgufValue)>, Vec<GgufTensor>),
    key: &'static str,
    v: GgufValue,
) -> Vec<u8> {
    parts.0.retain(|(k, _)| *k != key);
    parts.0.push((key, v));
    gguf_bytes(&parts.0, &parts.1)
}

fn gguf_seeds() -> Vec<(String, Vec<u8>)> {
    let t = small_llama();
    let w = t.tensors(1);
    let parts = || tiny_gguf_parts(&t, &w, false, false);
    let tied = TinyLlama {
        tied: true,
        ..t.clone()
    };
    let (tokens, merges, types) = tiny_gpt2_vocab();
    let tokenizer = gguf_bytes(
        &[
            ("general.architecture", GgufValue::Str("llama".into())),
            ("tokenizer.ggml.model", GgufValue::Str("gpt2".into())),
            ("tokenizer.ggml.tokens", GgufValue::StrArray(tokens)),
            ("tokenizer.ggml.merges", GgufValue::StrArray(merges)),
            ("tokenizer.ggml.token_type", GgufValue::I32Array(types)),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::U32(0)),
        ],
        &[],
    );
    let q = [3u8; 32];
    let quant = gguf_bytes(
        &[("general.architecture", GgufValue::Str("llama".into()))],
        &[
            GgufTensor {
                name: "q4_0".into(),
                shape: vec![1, 32],
                ggml_type: GGML_Q4_0,
                data: q4_0_block(0.5, &q).0,
            },
            GgufTensor {
                name: "q8_0".into(),
                shape: vec![1, 32],
                ggml_type: GGML_Q8_0,
                data: q8_0_block(0.25, &[-3; 32]).0,
            },
            GgufTensor {
                name: "q6_k".into(),
                shape: vec![1, 256],
                ggml_type: GGML_Q6_K,
                data: q6_k_block(0.01, &[2; 16], &[40; 256]).0,
            },
        ],
    );
    let mut zero_rope = parts();
    zero_rope.1.push(GgufTensor {
        name: "rope_freqs.weight".into(),
        shape: vec![0],
        ggml_type: GGML_F32,
        data: vec![],
    });
    vec![
        ("ok-llama-f32.gguf".into(), tiny_gguf(&t, &w, false, false)),
        (
            "ok-llama-f16-tied.gguf".into(),
            tiny_gguf(&tied, &tied.tensors(2), true, false),
        ),
        ("ok-tokenizer.gguf".into(), tokenizer),
        ("ok-quant-blocks.gguf".into(), quant),
        (
            "bad-alignment-0.gguf".into(),
            gguf_bytes(&[("general.alignment", GgufValue::U32(0))], &[]),
        ),
        (
            "bad-key-length-2e36.gguf".into(),
            with_kv(
                parts(),
                "llama.attention.key_length",
                GgufValue::U64(1 << 36),
            ),
        ),
        (
            "bad-block-count-2e40.gguf".into(),
            with_kv(parts(), "llama.block_count", GgufValue::U64(1 << 40)),
        ),
        (
            "bad-zero-element-rope-freqs.gguf".into(),
            gguf_bytes(&zero_rope.0, &zero_rope.1),
        ),
    ]
}

/// The `hf_dir` target's input framing: records `[file id: u8][length: u32 LE][bytes]`.
const HF_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

fn frame_dir(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, name) in HF_FILES.iter().enumerate() {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            out.push(id as u8);
            out.extend((b.len() as u32).to_le_bytes());
            out.extend(b);
        }
    }
    out
}

fn unframe_into(bytes: &[u8], dir: &Path) {
    let mut rest = bytes;
    while let Some((&id, tail)) = rest.split_first() {
        let (len, tail) = match tail.split_first_chunk::<4>() {
            Some((len, tail)) => (u32::from_le_bytes(*len) as usize, tail),
            None => (tail.len(), &[][..]),
        };
        let (part, tail) = tail.split_at(len.min(tail.len()));
        std::fs::write(dir.join(HF_FILES[id as usize % HF_FILES.len()]), part).unwrap();
        rest = tail;
    }
}

fn hf_seed(config: &serde_json::Value, tensors: &Tensors, shards: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), config, tensors, shards, Dtype::F16);
    frame_dir(dir.path())
}

fn hf_seeds() -> Vec<(String, Vec<u8>)> {
    let t = small_llama();
    let w = t.tensors(3);
    let qwen = TinyLlama {
        qkv_bias: true,
        tied: true,
        ..t.clone()
    };
    let o = small_opt();
    let o350 = TinyOpt {
        embed_dim: 4,
        pre_ln: false,
        prefix: "decoder.",
        ..o.clone()
    };
    let edit = |mut v: serde_json::Value, key: &str, x: u64| {
        v[key] = x.into();
        v
    };
    vec![
        ("ok-llama".into(), hf_seed(&t.config_json(), &w, 1)),
        (
            "ok-qwen2-sharded".into(),
            hf_seed(&qwen.config_json(), &qwen.tensors(4), 2),
        ),
        ("ok-opt".into(), hf_seed(&o.config_json(), &o.tensors(5), 1)),
        (
            "ok-opt-projected-post-ln".into(),
            hf_seed(&o350.config_json(), &o350.tensors(6), 1),
        ),
        (
            "bad-head-dim-2e36".into(),
            hf_seed(&edit(t.config_json(), "head_dim", 1 << 36), &w, 1),
        ),
        (
            "bad-layers-2e26".into(),
            hf_seed(&edit(t.config_json(), "num_hidden_layers", 1 << 26), &w, 1),
        ),
        (
            "bad-opt-max-positions-u64-max".into(),
            hf_seed(
                &edit(o.config_json(), "max_position_embeddings", u64::MAX),
                &o.tensors(5),
                1,
            ),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/seeds/gguf and fuzz/seeds/hf_dir"]
fn write_fuzz_seeds() {
    for (target, seeds) in [("gguf", gguf_seeds()), ("hf_dir", hf_seeds())] {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(&name), &bytes).unwrap();
            println!("{target}/{name}: {} bytes", bytes.len());
        }
    }
}

/// What the `gguf` target does with one input; `Ok` when the model loaded.
fn run_gguf(p: &Path) -> dgq_model::Result<()> {
    if let Ok(mut f) = GgufFile::open(p) {
        for name in f.tensor_names() {
            let _ = f.read_tensor(&name);
        }
        let _ = Tokenizer::from_gguf_file(&f);
    }
    Model::from_gguf(p).map(|m| {
        let _ = m.forward(&[0]);
    })
}

/// What the `hf_dir` target does with one input.
fn run_hf(bytes: &[u8]) -> dgq_model::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    unframe_into(bytes, dir.path());
    Model::from_hf_dir(dir.path()).map(|m| {
        let _ = m.forward(&[0]);
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn committed_gguf_seeds_behave() {
    let dir = fuzz_dir().join("seeds/gguf");
    let seeds = files(&dir);
    assert_eq!(seeds.len(), gguf_seeds().len(), "{}", dir.display());
    for p in seeds {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "ok-tokenizer.gguf" {
            Tokenizer::from_gguf(&p).unwrap();
            continue;
        }
        if name == "ok-quant-blocks.gguf" {
            let mut f = GgufFile::open(&p).unwrap();
            for t in f.tensor_names() {
                f.read_tensor(&t).unwrap();
            }
            continue;
        }
        let r = run_gguf(&p);
        assert_eq!(r.is_ok(), name.starts_with("ok-"), "{name}: {r:?}");
    }
}

#[test]
fn committed_hf_seeds_behave() {
    let dir = fuzz_dir().join("seeds/hf_dir");
    let seeds = files(&dir);
    assert_eq!(seeds.len(), hf_seeds().len(), "{}", dir.display());
    for p in seeds {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let r = run_hf(&std::fs::read(&p).unwrap());
        assert_eq!(r.is_ok(), name.starts_with("ok-"), "{name}: {r:?}");
    }
}

#[test]
fn fuzz_regressions_do_not_panic() {
    for p in files(&fuzz_dir().join("regressions/gguf")) {
        let _ = run_gguf(&p);
    }
    for p in files(&fuzz_dir().join("regressions/hf_dir")) {
        let _ = run_hf(&std::fs::read(&p).unwrap());
    }
}
