//! LLaMA-family loading and forward on tiny checkpoints written by the tests: HF directories
//! (single file, sharded, f32/f16/bf16, Qwen2 biases, tied head) and GGUF (llama.cpp's permuted
//! Q/K, quantized block types, embedded tokenizer).

mod common;

use common::*;
use dgq_model::{GgufFile, Model, SourceFormat, Tokenizer};
use safetensors::tensor::Dtype;

fn max_diff(ours: &ndarray::Array2<f32>, naive: &[Vec<f64>]) -> f64 {
    assert_eq!(ours.nrows(), naive.len());
    let mut m = 0.0f64;
    for (r, n) in ours.rows().into_iter().zip(naive) {
        assert_eq!(r.len(), n.len());
        for (a, b) in r.iter().zip(n) {
            m = m.max((*a as f64 - b).abs());
        }
    }
    m
}

const TOKENS: [u32; 9] = [3, 17, 0, 39, 5, 5, 22, 1, 30];

#[test]
fn hf_single_file_f32_matches_naive() {
    let t = TinyLlama::default();
    let w = t.tensors(1);
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &t.config_json(), &w, 1, Dtype::F32);
    let m = Model::from_hf_dir(dir.path()).unwrap();
    assert_eq!(m.load_info.format, SourceFormat::HfSafetensors);
    assert!(
        m.load_info.unused_tensors.is_empty(),
        "{:?}",
        m.load_info.unused_tensors
    );
    assert_eq!(m.load_info.tensor_types.get("F32"), Some(&w.len()));
    assert_eq!(
        (m.config.num_heads, m.config.num_kv_heads, m.config.head_dim),
        (4, 2, 4)
    );
    let d = max_diff(&m.forward(&TOKENS).unwrap(), &t.naive_forward(&w, &TOKENS));
    assert!(d < 1e-4, "max |Δlogit| {d}");
}

#[test]
fn hf_sharded_half_precision_qwen2_biases_tied_head() {
    for (dtype, shards) in [(Dtype::BF16, 3), (Dtype::F16, 2)] {
        let t = TinyLlama {
            qkv_bias: true,
            tied: true,
            theta: 1000.0,
            ..TinyLlama::default()
        };
        let w = t.tensors(2);
        let dir = tempfile::tempdir().unwrap();
        write_hf_dir(dir.path(), &t.config_json(), &w, shards, dtype);
        assert!(dir.path().join("model.safetensors.index.json").is_file());
        let m = Model::from_hf_dir(dir.path()).unwrap();
        assert!(m.lm_head.is_none() && m.config.qkv_bias && m.config.model_type == "qwen2");
        assert!(
            m.load_info.unused_tensors.is_empty(),
            "{:?}",
            m.load_info.unused_tensors
        );
        let expect = t.naive_forward(&round_to(&w, dtype), &TOKENS);
        let d = max_diff(&m.forward(&TOKENS).unwrap(), &expect);
        assert!(d < 1e-4, "{dtype:?}: max |Δlogit| {d}");
    }
}

#[test]
fn interleaved_rope_on_permuted_weights_equals_half_split() {
    // The identity the GGUF loader relies on: llama.cpp's row permutation P turns the
    // half-split rotary R_half into the interleaved one: R_inter(P·q) = P·R_half(q).
    let (heads, hd) = (3, 8);
    let mut r = rng(5);
    let q: Vec<f64> = (0..heads * hd)
        .map(|_| rand::Rng::random_range(&mut r, -1.0..1.0))
        .collect();
    for pos in [0usize, 1, 7, 300] {
        let mut a = permute_vec(&q, heads, hd);
        rope_interleaved(&mut a, hd, pos, 10000.0);
        let mut b = q.clone();
        rope_half(&mut b, hd, pos, 10000.0);
        let b = permute_vec(&b, heads, hd);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "pos {pos}");
        }
    }
    // And the library's permutation is llama.cpp's, and un-permuting inverts it.
    let w = ndarray::Array2::from_shape_fn((heads * hd, 5), |(i, j)| (i * 10 + j) as f32);
    let p = dgq_model::rope::permute_rows(&w, heads, hd).unwrap();
    for c in 0..5 {
        let col: Vec<f64> = w.column(c).iter().map(|&v| v as f64).collect();
        let expect = permute_vec(&col, heads, hd);
        for (i, &v) in p.column(c).iter().enumerate() {
            assert_eq!(v as f64, expect[i]);
        }
    }
    assert_eq!(dgq_model::rope::unpermute_rows(&p, heads, hd).unwrap(), w);
}

/// llama.cpp's converter: `w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2).reshape(w.shape)`.
fn permute_vec(x: &[f64], heads: usize, hd: usize) -> Vec<f64> {
    let half = hd / 2;
    let mut out = vec![0.0; x.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                // source index [h, two, i] → destination [h, i, two]
                out[h * hd + i * 2 + two] = x[h * hd + two * half + i];
            }
        }
    }
    out
}

#[test]
fn gguf_with_permuted_qk_matches_hf_checkpoint() {
    for tied in [false, true] {
        let t = TinyLlama {
            tied,
            ..TinyLlama::default()
        };
        let w = t.tensors(3);
        let dir = tempfile::tempdir().unwrap();
        write_hf_dir(dir.path(), &t.config_json(), &w, 1, Dtype::F32);
        let gguf = dir.path().join("tiny.gguf");
        std::fs::write(&gguf, tiny_gguf(&t, &w, false, false)).unwrap();
        let hf = Model::from_hf_dir(dir.path()).unwrap();
        let gg = Model::load(&gguf).unwrap();
        assert_eq!(gg.load_info.format, SourceFormat::Gguf);
        assert!(gg.load_info.unused_tensors.is_empty());
        assert_eq!(gg.config.tie_word_embeddings, tied);
        let (a, b) = (hf.forward(&TOKENS).unwrap(), gg.forward(&TOKENS).unwrap());
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-6, "HF vs GGUF logits differ by {d}");
        // Against the naive reference too (so neither path can be wrong in the same way).
        let dn = max_diff(&b, &t.naive_forward(&w, &TOKENS));
        assert!(dn < 1e-4, "GGUF vs naive {dn}");
    }
}

#[test]
fn gguf_without_unpermute_would_be_wrong() {
    // Guard against the test above passing vacuously: treating the permuted weights as HF
    // layout (qwen2 architecture = no un-permute) must change the logits.
    let t = TinyLlama::default();
    let w = t.tensors(3);
    let bytes = tiny_gguf(&t, &w, false, false);
    let needle = b"llama";
    // Rewrite general.architecture's value and the arch prefix of every key: "llama" → "qwen2"
    // (same length, so offsets are unchanged).
    let mut patched = bytes.clone();
    let mut i = 0;
    while i + needle.len() <= patched.len() {
        if &patched[i..i + needle.len()] == needle {
            patched[i..i + needle.len()].copy_from_slice(b"qwen2");
        }
        i += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    std::fs::write(&a, bytes).unwrap();
    std::fs::write(&b, patched).unwrap();
    let ma = Model::from_gguf(&a).unwrap();
    let mb = Model::from_gguf(&b).unwrap();
    assert_eq!(mb.config.model_type, "qwen2");
    let (la, lb) = (ma.forward(&TOKENS).unwrap(), mb.forward(&TOKENS).unwrap());
    let d = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(d > 1e-2, "permutation had no effect ({d})");
}

#[test]
fn gguf_f16_storage_and_embedded_tokenizer() {
    let t = TinyLlama {
        vocab: 120,
        ..TinyLlama::default()
    };
    let w = t.tensors(4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_gguf(&t, &w, true, true)).unwrap();
    let m = Model::from_gguf(&path).unwrap();
    assert!(m.load_info.tensor_types.get("F16").is_some_and(|&n| n > 0));
    // Naive reference on f16-rounded 2-D weights.
    let rounded: Tensors = w
        .iter()
        .map(|(n, (s, v))| {
            let v = if s.len() == 2 {
                v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
            } else {
                v.clone()
            };
            (n.clone(), (s.clone(), v))
        })
        .collect();
    let d = max_diff(
        &m.forward(&TOKENS).unwrap(),
        &t.naive_forward(&rounded, &TOKENS),
    );
    assert!(d < 1e-4, "f16 GGUF vs naive {d}");

    let tok = Tokenizer::from_gguf(&path).unwrap();
    let (tokens, _, _) = tiny_gpt2_vocab();
    let id = |s: &str| tokens.iter().position(|t| t == s).unwrap() as u32;
    // "hello world": merges build "hello" and "Ġworld"; '!' stays a byte token.
    assert_eq!(
        tok.encode("hello world!").unwrap(),
        vec![id("hello"), id("Ġworld"), id("!")]
    );
    // Control tokens are matched as specials; "helo" only merges "h e" (no "he l" merge).
    assert_eq!(
        tok.encode("<|im_start|>helo").unwrap(),
        vec![1, id("he"), id("l"), id("o")]
    );
    assert_eq!(
        tok.decode(&[id("hello"), id("Ġworld")]).unwrap(),
        "hello world"
    );
    assert_eq!(tok.encode_for_model("hello").unwrap(), vec![1, id("hello")]);
    assert_eq!(tok.bos_token_id(), Some(1));

    // The same tokenizer through a tokenizer.json in a model directory; config.json's special
    // ids (bos 1, eos 2) win over the name-based guess (<|endoftext|> = 0).
    let hf = tempfile::tempdir().unwrap();
    write_hf_dir(hf.path(), &t.config_json(), &w, 1, Dtype::F32);
    tok.inner()
        .save(hf.path().join("tokenizer.json"), false)
        .unwrap();
    let tj = Tokenizer::load(hf.path()).unwrap();
    assert_eq!(
        tj.encode("hello world!").unwrap(),
        tok.encode("hello world!").unwrap()
    );
    assert_eq!(
        tj.encode("<|im_start|>helo").unwrap(),
        tok.encode("<|im_start|>helo").unwrap()
    );
    assert_eq!((tj.bos_token_id(), tj.eos_token_id()), (Some(1), Some(2)));
    assert!(matches!(
        Tokenizer::from_json_file(&hf.path().join("config.json")),
        Err(dgq_model::Error::Tokenizer(_))
    ));
}

#[test]
fn gguf_quantized_blocks_dequantize_per_spec() {
    let mut r = rng(7);
    let mut u = |hi: u8| rand::Rng::random_range(&mut r, 0..hi);
    // Two rows of 256 values for every type (K-quants need 256 per block).
    let mut tensors = Vec::new();
    let mut expect: Vec<(String, Vec<f32>)> = Vec::new();
    let mut add = |name: &str, ty: u32, rows: Vec<(Vec<u8>, Vec<f32>)>| {
        let data: Vec<u8> = rows.iter().flat_map(|(b, _)| b.clone()).collect();
        let vals: Vec<f32> = rows.iter().flat_map(|(_, v)| v.clone()).collect();
        tensors.push(GgufTensor {
            name: name.into(),
            shape: vec![2, 256],
            ggml_type: ty,
            data,
        });
        expect.push((name.into(), vals));
    };
    let blocks32 = |f: &mut dyn FnMut() -> (Vec<u8>, Vec<f32>)| -> Vec<(Vec<u8>, Vec<f32>)> {
        (0..16).map(|_| f()).collect()
    };
    add(
        "q4_0",
        GGML_Q4_0,
        blocks32(&mut || {
            let q: [u8; 32] = std::array::from_fn(|_| u(16));
            q4_0_block(0.37 + u(10) as f32 * 0.01, &q)
        }),
    );
    add(
        "q4_1",
        GGML_Q4_1,
        blocks32(&mut || {
            let q: [u8; 32] = std::array::from_fn(|_| u(16));
            q4_1_block(0.21, -1.5 + u(10) as f32 * 0.1, &q)
        }),
    );
    add(
        "q8_0",
        GGML_Q8_0,
        blocks32(&mut || {
            let q: [i8; 32] = std::array::from_fn(|_| u(255) as i8);
            q8_0_block(0.013, &q)
        }),
    );
    add(
        "q4_k",
        GGML_Q4_K,
        (0..2)
            .map(|_| {
                let sc: [u8; 8] = std::array::from_fn(|_| u(64));
                let m: [u8; 8] = std::array::from_fn(|_| u(64));
                let q: [u8; 256] = std::array::from_fn(|_| u(16));
                q4_k_block(0.05, 0.02, &sc, &m, &q)
            })
            .collect(),
    );
    add(
        "q6_k",
        GGML_Q6_K,
        (0..2)
            .map(|_| {
                let sc: [i8; 16] = std::array::from_fn(|_| u(200) as i8);
                let q: [u8; 256] = std::array::from_fn(|_| u(64));
                q6_k_block(0.004, &sc, &q)
            })
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    std::fs::write(
        &path,
        gguf_bytes(
            &[("general.architecture", GgufValue::Str("llama".into()))],
            &tensors,
        ),
    )
    .unwrap();
    let mut f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.tensor_names(),
        vec!["q4_0", "q4_1", "q4_k", "q6_k", "q8_0"]
    );
    for (name, vals) in &expect {
        assert_eq!(f.tensor_shape(name), Some(vec![2, 256]));
        let got = f.read_tensor(name).unwrap();
        assert_eq!(got.shape(), &[2, 256]);
        for (i, (g, e)) in got.iter().zip(vals).enumerate() {
            assert!(
                (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{name}[{i}]: got {g}, spec says {e}"
            );
        }
    }
    assert_eq!(f.tensor_type("q4_k").as_deref(), Some("Q4K"));
}
