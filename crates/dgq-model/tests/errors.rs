//! Malformed, missing or unsupported inputs give typed errors, never panics.

mod common;

use common::*;
use dgq_model::{Error, GgufFile, Model, Tokenizer};
use safetensors::tensor::Dtype;

fn hf_dir(t: &TinyLlama, w: &Tensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &t.config_json(), w, 1, Dtype::F32);
    dir
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Io { .. })
    ));
    let t = TinyLlama::default();
    std::fs::write(dir.path().join("config.json"), t.config_json().to_string()).unwrap();
    match Model::from_hf_dir(dir.path()) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("model.safetensors")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Model::load(&dir.path().join("nope.gguf")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(Tokenizer::load(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn bad_config_json() {
    let t = TinyLlama::default();
    let w = t.tensors(31);
    let dir = hf_dir(&t, &w);
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, "{ not json").unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Json { .. })
    ));

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = t.config_json();
        f(&mut v);
        std::fs::write(&cfg, v.to_string()).unwrap();
        Model::from_hf_dir(dir.path())
    };
    match edit(&|v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    }) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "hidden_size"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        edit(&|v| v["hidden_size"] = "big".into()),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        edit(&|v| v["num_key_value_heads"] = 3.into()),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        edit(&|v| v["num_attention_heads"] = 0.into()),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        edit(&|v| v["model_type"] = "gpt_neox".into()),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        edit(&|v| v["hidden_act"] = "gelu".into()),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        edit(&|v| v["rope_theta"] = (-1.0).into()),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        edit(&|v| v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})),
        Err(Error::Unsupported(_))
    ));
    // A config whose sizes disagree with the tensors: wrong shape, named.
    match edit(&|v| v["intermediate_size"] = 20.into()) {
        Err(Error::TensorShape {
            name,
            expected,
            got,
        }) => {
            assert!(name.ends_with("gate_proj.weight"), "{name}");
            assert_eq!((expected, got), (vec![20, 16], vec![24, 16]));
        }
        other => panic!("{other:?}"),
    }
    // Mistral's sliding window: loads, but sequences longer than the window are refused.
    let m = edit(&|v| {
        v["model_type"] = "mistral".into();
        v["sliding_window"] = 4.into();
    })
    .unwrap();
    assert_eq!(m.config.sliding_window, Some(4));
    assert!(m.forward(&[1, 2, 3, 4]).is_ok());
    assert!(matches!(
        m.forward(&[1, 2, 3, 4, 5]),
        Err(Error::TooLong { max: 4, .. })
    ));
    // Supported rope scaling parses and loads.
    assert!(edit(
        &|v| v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    )
    .is_ok());
}

#[test]
fn missing_wrong_and_unsupported_tensors() {
    let t = TinyLlama::default();
    let mut w = t.tensors(32);
    w.remove("model.layers.1.mlp.up_proj.weight");
    let dir = hf_dir(&t, &w);
    match Model::from_hf_dir(dir.path()) {
        Err(Error::MissingTensor { name }) => assert_eq!(name, "model.layers.1.mlp.up_proj.weight"),
        other => panic!("{other:?}"),
    }

    let mut w = t.tensors(32);
    w.insert("model.norm.weight".into(), (vec![15], vec![1.0; 15]));
    let dir = hf_dir(&t, &w);
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::TensorShape { .. })
    ));

    let mut w = t.tensors(32);
    w.get_mut("model.layers.0.self_attn.k_proj.weight")
        .unwrap()
        .1[5] = f32::NAN;
    let dir = hf_dir(&t, &w);
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::NonFinite { .. })
    ));

    // An integer tensor where floats are expected.
    let dir = hf_dir(&t, &t.tensors(32));
    let st = dir.path().join("model.safetensors");
    let bytes: Vec<u8> = (0..16i32).flat_map(|x| x.to_le_bytes()).collect();
    let mut all: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    let owned: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = t
        .tensors(32)
        .into_iter()
        .map(|(n, (s, v))| {
            if n == "model.norm.weight" {
                (n, s, bytes.clone(), Dtype::I32)
            } else {
                (n, s, f32_bytes(&v), Dtype::F32)
            }
        })
        .collect();
    for (n, s, b, d) in &owned {
        all.push((
            n.clone(),
            safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
        ));
    }
    std::fs::write(&st, safetensors::serialize(all, None).unwrap()).unwrap();
    match Model::from_hf_dir(dir.path()) {
        Err(Error::UnsupportedDtype { name, dtype }) => assert_eq!(
            (name.as_str(), dtype.as_str()),
            ("model.norm.weight", "I32")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_or_garbage_safetensors() {
    let t = TinyLlama::default();
    let dir = hf_dir(&t, &t.tensors(33));
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    for cut in [0, 5, 100, bytes.len() - 1] {
        std::fs::write(&st, &bytes[..cut]).unwrap();
        assert!(
            matches!(
                Model::from_hf_dir(dir.path()),
                Err(Error::Safetensors { .. })
            ),
            "cut at {cut}"
        );
    }
    // A header length far beyond the file.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&st, &bad).unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Safetensors { .. })
    ));
}

#[test]
fn broken_sharded_index() {
    let t = TinyLlama::default();
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &t.config_json(), &t.tensors(34), 2, Dtype::F32);
    let idx = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx).unwrap();
    // A shard that is not there.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Io { .. })
    ));
    // An index that names a tensor its shard lacks.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"] = serde_json::json!({"model.norm.weight": "model-00001-of-00002.safetensors", "ghost": "model-00001-of-00002.safetensors"});
    std::fs::write(&idx, v.to_string()).unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Safetensors { .. })
    ));
    // Shard names that leave the directory are refused.
    v["weight_map"] = serde_json::json!({"model.norm.weight": "../x.safetensors"});
    std::fs::write(&idx, v.to_string()).unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Safetensors { .. })
    ));
    std::fs::write(&idx, "[]").unwrap();
    assert!(matches!(
        Model::from_hf_dir(dir.path()),
        Err(Error::Safetensors { .. })
    ));
}

fn small_gguf(ty: u32, data: Vec<u8>, arch: &str) -> Vec<u8> {
    gguf_bytes(
        &[("general.architecture", GgufValue::Str(arch.into()))],
        &[GgufTensor {
            name: "w".into(),
            shape: vec![1, 32],
            ggml_type: ty,
            data,
        }],
    )
}

#[test]
fn malformed_and_unsupported_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    // Not a GGUF at all.
    std::fs::write(&p, b"definitely not a gguf file").unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::Gguf { .. })));
    // Truncated in the header, and truncated in the tensor data.
    let good = small_gguf(GGML_F32, f32_bytes(&[0.5; 32]), "llama");
    std::fs::write(&p, &good[..20]).unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::Gguf { .. })));
    // Data cut short: refused at open, before any tensor is read.
    std::fs::write(&p, &good[..good.len() - 64]).unwrap();
    match GgufFile::open(&p) {
        Err(Error::Gguf { problem, .. }) => assert!(problem.contains("tensor w"), "{problem}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&p, &good).unwrap();
    let mut f = GgufFile::open(&p).unwrap();
    assert_eq!(f.read_tensor("w").unwrap().len(), 32);
    assert!(matches!(
        f.read_tensor("missing"),
        Err(Error::MissingTensor { .. })
    ));
    // An IQ type (id 16, IQ2_XXS) this build does not dequantize.
    std::fs::write(&p, small_gguf(16, vec![0; 66], "llama")).unwrap();
    assert!(matches!(
        GgufFile::open(&p),
        Err(Error::UnsupportedGgufType { .. })
    ));
    // Q8_1 parses but is not a storage type we dequantize.
    std::fs::write(&p, small_gguf(9, vec![0; 36], "llama")).unwrap();
    let mut f = GgufFile::open(&p).unwrap();
    assert!(matches!(
        f.read_tensor("w"),
        Err(Error::UnsupportedGgufType { .. })
    ));
    // Valid file, but not a model we can build: unsupported arch, missing metadata.
    std::fs::write(&p, small_gguf(GGML_F32, f32_bytes(&[0.5; 32]), "gemma")).unwrap();
    assert!(matches!(Model::from_gguf(&p), Err(Error::Unsupported(_))));
    std::fs::write(&p, small_gguf(GGML_F32, f32_bytes(&[0.5; 32]), "llama")).unwrap();
    assert!(matches!(Model::from_gguf(&p), Err(Error::Gguf { .. })));
    assert!(matches!(
        Tokenizer::from_gguf(&p),
        Err(Error::Unsupported(_))
    ));
    // Dims whose product overflows.
    let mut bytes = small_gguf(GGML_F32, f32_bytes(&[0.5; 32]), "llama");
    let pos = bytes
        .windows(8)
        .position(|w| w == 32u64.to_le_bytes())
        .unwrap();
    bytes[pos..pos + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert!(GgufFile::open(&p).is_err());
}
