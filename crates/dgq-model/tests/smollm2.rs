//! Checks against the real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by `scripts/fetch-model.sh`).
//!
//! The expected token ids and logits in `tests/data/smollm2_reference.json` were produced by
//! `scripts/reference_logits.sh`: the PyPI `gguf` package's own dequantizers, a naive byte-level
//! BPE written in Python, and a float64 numpy forward that applies llama.cpp's interleaved RoPE
//! to the Q/K weights as stored (we un-permute and use the half-split rotary instead).
//!
//! Skips (with a printed reason) when the model file is absent. Set `DGQ_SMOLLM2_GGUF` to point
//! at it, or leave it in `${DGQ_CACHE:-$HOME/.cache/dgq}/models/`.

use std::path::PathBuf;
use std::sync::OnceLock;

use dgq_model::{Model, SourceFormat, Tokenizer};

fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DGQ_SMOLLM2_GGUF") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let cache = std::env::var_os("DGQ_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dgq")))?;
    Some(cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")).filter(|p| p.is_file())
}

fn model() -> Option<&'static Model> {
    static M: OnceLock<Option<Model>> = OnceLock::new();
    M.get_or_init(|| model_path().map(|p| Model::from_gguf(&p).expect("load SmolLM2")))
        .as_ref()
}

macro_rules! need_model {
    () => {
        match model_path() {
            Some(p) => p,
            None => {
                eprintln!("skipping: SmolLM2 GGUF not found (run scripts/fetch-model.sh or set DGQ_SMOLLM2_GGUF)");
                return;
            }
        }
    };
}

#[derive(serde::Deserialize)]
struct Reference {
    encodings: Vec<Encoding>,
    tokens: Vec<u32>,
    sample_ids: Vec<usize>,
    positions: Vec<Position>,
}
#[derive(serde::Deserialize)]
struct Encoding {
    text: String,
    ids: Vec<u32>,
}
#[derive(serde::Deserialize)]
struct Position {
    logsumexp: f64,
    top_ids: Vec<usize>,
    top_logits: Vec<f64>,
    sample_logits: Vec<f64>,
}

fn reference() -> Reference {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn config_and_mapping() {
    let _ = need_model!();
    let m = model().unwrap();
    let c = &m.config;
    assert_eq!(
        (c.num_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.rope_theta, 100000.0);
    assert!(c.tie_word_embeddings && m.lm_head.is_none());
    assert_eq!(m.vocab_size(), 49152);
    assert_eq!(m.load_info.format, SourceFormat::Gguf);
    assert!(
        m.load_info.unused_tensors.is_empty(),
        "{:?}",
        m.load_info.unused_tensors
    );
    assert_eq!(m.load_info.tensor_types.get("Q4_1"), Some(&210));
    assert_eq!(m.load_info.tensor_types.get("Q8_0"), Some(&1));
}

#[test]
fn tokenizer_matches_independent_bpe() {
    let path = need_model!();
    let tok = Tokenizer::from_gguf(&path).unwrap();
    let r = reference();
    assert!(r.encodings.len() >= 4);
    for e in &r.encodings {
        assert_eq!(tok.encode(&e.text).unwrap(), e.ids, "text {:?}", e.text);
        assert_eq!(tok.decode(&e.ids).unwrap(), e.text);
    }
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    // add_bos_token is false in this GGUF.
    assert_eq!(
        tok.encode_for_model("Hello").unwrap(),
        tok.encode("Hello").unwrap()
    );
}

#[test]
fn logits_match_numpy_reference() {
    let _ = need_model!();
    let m = model().unwrap();
    let r = reference();
    let logits = m.forward(&r.tokens).unwrap();
    assert_eq!(logits.dim(), (r.tokens.len(), 49152));
    let mut max_abs = 0.0f64;
    let mut top1_agree = 0;
    for (p, pos) in r.positions.iter().enumerate() {
        let row = logits.row(p);
        // Compare log-probabilities (logit − logsumexp) and raw logits on a spread of ids.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        max_abs = max_abs.max((lse - pos.logsumexp).abs());
        for (&id, &l) in pos.top_ids.iter().zip(&pos.top_logits) {
            max_abs = max_abs.max((row[id] as f64 - l).abs());
        }
        for (&id, &l) in r.sample_ids.iter().zip(&pos.sample_logits) {
            max_abs = max_abs.max((row[id] as f64 - l).abs());
        }
        let ours = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        if ours == pos.top_ids[0] {
            top1_agree += 1;
        }
    }
    eprintln!(
        "max |Δlogit| vs numpy f64 reference: {max_abs:.3e}, top-1 agreement {top1_agree}/{}",
        r.positions.len()
    );
    // f32 over 30 layers vs float64, same dequantized weights: 7.3e-5 seen; logits are O(10).
    assert!(max_abs < 1e-3, "max abs logit difference {max_abs}");
    assert_eq!(top1_agree, r.positions.len());
}

#[test]
fn kv_cache_matches_full_forward_and_generates() {
    let path = need_model!();
    let m = model().unwrap();
    let tok = Tokenizer::from_gguf(&path).unwrap();
    let prompt = tok.encode("The capital of France is").unwrap();
    let full = m.forward(&prompt).unwrap();
    let mut cache = m.new_cache();
    let a = m.forward_cached(&prompt[..3], &mut cache).unwrap();
    let b = m.forward_cached(&prompt[3..], &mut cache).unwrap();
    assert_eq!(cache.len(), prompt.len());
    let mut diff = 0.0f32;
    for (p, row) in a.rows().into_iter().chain(b.rows()).enumerate() {
        for (x, y) in row.iter().zip(full.row(p)) {
            diff = diff.max((x - y).abs());
        }
    }
    assert!(diff < 1e-3, "cached vs full forward differ by {diff}");
    let out = m.generate_greedy(&prompt, 2, None).unwrap();
    let text = tok.decode(&out).unwrap();
    eprintln!("greedy continuation: {text:?}");
    assert!(text.contains("Paris"), "continuation {text:?}");
}
