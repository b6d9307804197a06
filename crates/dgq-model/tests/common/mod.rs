//! Test helpers: tiny random checkpoints written to disk (HF safetensors directories and GGUF
//! files, the latter with a small writer following the GGUF spec), and naive float64 forwards
//! written with plain loops, independent of the crate's ndarray/gemm code.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};

/// name → (shape slowest-first, row-major values)
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn rand_vec(r: &mut ChaCha8Rng, n: usize, center: f32, spread: f32) -> Vec<f32> {
    (0..n)
        .map(|_| center + r.random_range(-spread..spread))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// LLaMA family

#[derive(Debug, Clone)]
pub struct TinyLlama {
    pub vocab: usize,
    pub d: usize,
    pub ff: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
    pub theta: f64,
    pub eps: f64,
    /// Qwen2-style q/k/v biases.
    pub qkv_bias: bool,
    pub tied: bool,
}

impl Default for TinyLlama {
    fn default() -> Self {
        TinyLlama {
            vocab: 40,
            d: 16,
            ff: 24,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            hd: 4,
            theta: 10000.0,
            eps: 1e-5,
            qkv_bias: false,
            tied: false,
        }
    }
}

impl TinyLlama {
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": if self.qkv_bias { "qwen2" } else { "llama" },
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab,
            "hidden_size": self.d,
            "intermediate_size": self.ff,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "rms_norm_eps": self.eps,
            "rope_theta": self.theta,
            "max_position_embeddings": 64,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tied,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32"
        })
    }

    /// Random weights under Hugging Face names.
    pub fn tensors(&self, seed: u64) -> Tensors {
        let mut r = rng(seed);
        let mut t = Tensors::new();
        let (d, ff, qd, kvd) = (
            self.d,
            self.ff,
            self.heads * self.hd,
            self.kv_heads * self.hd,
        );
        let mut put =
            |t: &mut Tensors, name: String, shape: Vec<usize>, center: f32, spread: f32| {
                let n = shape.iter().product();
                t.insert(name, (shape, rand_vec(&mut r, n, center, spread)));
            };
        put(
            &mut t,
            "model.embed_tokens.weight".into(),
            vec![self.vocab, d],
            0.0,
            1.0,
        );
        for i in 0..self.layers {
            let p = format!("model.layers.{i}.");
            put(
                &mut t,
                format!("{p}input_layernorm.weight"),
                vec![d],
                1.0,
                0.3,
            );
            put(
                &mut t,
                format!("{p}post_attention_layernorm.weight"),
                vec![d],
                1.0,
                0.3,
            );
            put(
                &mut t,
                format!("{p}self_attn.q_proj.weight"),
                vec![qd, d],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}self_attn.k_proj.weight"),
                vec![kvd, d],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}self_attn.v_proj.weight"),
                vec![kvd, d],
                0.0,
                0.5,
            );
            if self.qkv_bias {
                put(
                    &mut t,
                    format!("{p}self_attn.q_proj.bias"),
                    vec![qd],
                    0.0,
                    0.5,
                );
                put(
                    &mut t,
                    format!("{p}self_attn.k_proj.bias"),
                    vec![kvd],
                    0.0,
                    0.5,
                );
                put(
                    &mut t,
                    format!("{p}self_attn.v_proj.bias"),
                    vec![kvd],
                    0.0,
                    0.5,
                );
            }
            put(
                &mut t,
                format!("{p}self_attn.o_proj.weight"),
                vec![d, qd],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}mlp.gate_proj.weight"),
                vec![ff, d],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}mlp.up_proj.weight"),
                vec![ff, d],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}mlp.down_proj.weight"),
                vec![d, ff],
                0.0,
                0.5,
            );
        }
        put(&mut t, "model.norm.weight".into(), vec![d], 1.0, 0.3);
        if !self.tied {
            put(
                &mut t,
                "lm_head.weight".into(),
                vec![self.vocab, d],
                0.0,
                0.5,
            );
        }
        t
    }

    /// Naive float64 forward: logits `[T][vocab]`.
    pub fn naive_forward(&self, w: &Tensors, tokens: &[u32]) -> Vec<Vec<f64>> {
        let g = |n: &str| -> Vec<f64> { w[n].1.iter().map(|&v| v as f64).collect() };
        let (d, hd) = (self.d, self.hd);
        let emb = g("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec())
            .collect();
        for i in 0..self.layers {
            let p = format!("model.layers.{i}.");
            let h: Vec<Vec<f64>> = x
                .iter()
                .map(|r| rms(r, &g(&format!("{p}input_layernorm.weight")), self.eps))
                .collect();
            let bias = |n: &str| self.qkv_bias.then(|| g(&format!("{p}self_attn.{n}.bias")));
            let mut q = linear(
                &h,
                &g(&format!("{p}self_attn.q_proj.weight")),
                bias("q_proj").as_deref(),
            );
            let mut k = linear(
                &h,
                &g(&format!("{p}self_attn.k_proj.weight")),
                bias("k_proj").as_deref(),
            );
            let v = linear(
                &h,
                &g(&format!("{p}self_attn.v_proj.weight")),
                bias("v_proj").as_deref(),
            );
            for (pos, (qr, kr)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
                rope_half(qr, hd, pos, self.theta);
                rope_half(kr, hd, pos, self.theta);
            }
            let ctx = attention(&q, &k, &v, self.heads, self.kv_heads, hd);
            let o = linear(&ctx, &g(&format!("{p}self_attn.o_proj.weight")), None);
            for (xr, or) in x.iter_mut().zip(&o) {
                for (a, b) in xr.iter_mut().zip(or) {
                    *a += b;
                }
            }
            let h: Vec<Vec<f64>> = x
                .iter()
                .map(|r| {
                    rms(
                        r,
                        &g(&format!("{p}post_attention_layernorm.weight")),
                        self.eps,
                    )
                })
                .collect();
            let gt = linear(&h, &g(&format!("{p}mlp.gate_proj.weight")), None);
            let up = linear(&h, &g(&format!("{p}mlp.up_proj.weight")), None);
            let act: Vec<Vec<f64>> = gt
                .iter()
                .zip(&up)
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b)
                        .collect()
                })
                .collect();
            let dn = linear(&act, &g(&format!("{p}mlp.down_proj.weight")), None);
            for (xr, dr) in x.iter_mut().zip(&dn) {
                for (a, b) in xr.iter_mut().zip(dr) {
                    *a += b;
                }
            }
        }
        let h: Vec<Vec<f64>> = x
            .iter()
            .map(|r| rms(r, &g("model.norm.weight"), self.eps))
            .collect();
        let head = if self.tied {
            g("model.embed_tokens.weight")
        } else {
            g("lm_head.weight")
        };
        linear(&h, &head, None)
    }
}

pub fn rms(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(a, g)| a * inv * g).collect()
}

pub fn layer_norm(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(w)
        .zip(b)
        .map(|((a, g), c)| (a - mean) * inv * g + c)
        .collect()
}

/// y[t][n] = Σ_k x[t][k]·w[n·K + k] + b[n]
pub fn linear(x: &[Vec<f64>], w: &[f64], b: Option<&[f64]>) -> Vec<Vec<f64>> {
    let k = x[0].len();
    let n = w.len() / k;
    x.iter()
        .map(|row| {
            (0..n)
                .map(|j| {
                    row.iter()
                        .zip(&w[j * k..(j + 1) * k])
                        .map(|(a, c)| a * c)
                        .sum::<f64>()
                        + b.map_or(0.0, |b| b[j])
                })
                .collect()
        })
        .collect()
}

/// Half-split rotary of every head of `x` at position `pos`.
pub fn rope_half(x: &mut [f64], hd: usize, pos: usize, theta: f64) {
    let half = hd / 2;
    for head in x.chunks_mut(hd) {
        for i in 0..half {
            let a = pos as f64 * theta.powf(-(2.0 * i as f64) / hd as f64);
            let (x1, x2) = (head[i], head[i + half]);
            head[i] = x1 * a.cos() - x2 * a.sin();
            head[i + half] = x2 * a.cos() + x1 * a.sin();
        }
    }
}

/// Interleaved (adjacent-pair) rotary, llama.cpp's convention for the `llama` architecture.
pub fn rope_interleaved(x: &mut [f64], hd: usize, pos: usize, theta: f64) {
    for head in x.chunks_mut(hd) {
        for i in 0..hd / 2 {
            let a = pos as f64 * theta.powf(-(2.0 * i as f64) / hd as f64);
            let (x1, x2) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = x1 * a.cos() - x2 * a.sin();
            head[2 * i + 1] = x2 * a.cos() + x1 * a.sin();
        }
    }
}

/// Causal GQA attention with loops; returns the concatenated heads.
pub fn attention(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    heads: usize,
    kv_heads: usize,
    hd: usize,
) -> Vec<Vec<f64>> {
    let t = q.len();
    let group = heads / kv_heads;
    let mut out = vec![vec![0.0; heads * hd]; t];
    for h in 0..heads {
        let kh = h / group;
        for i in 0..t {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..hd)
                        .map(|e| q[i][h * hd + e] * k[j][kh * hd + e])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let ex: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = ex.iter().sum();
            for e in 0..hd {
                out[i][h * hd + e] = (0..=i).map(|j| ex[j] / z * v[j][kh * hd + e]).sum();
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// OPT

#[derive(Debug, Clone)]
pub struct TinyOpt {
    pub vocab: usize,
    pub d: usize,
    pub ff: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_pos: usize,
    pub pre_ln: bool,
    /// OPT-350m-style embedding width (project_in/out) when different from `d`.
    pub embed_dim: usize,
    /// Prefix of tensor names: `model.decoder.` or `decoder.`.
    pub prefix: &'static str,
}

impl Default for TinyOpt {
    fn default() -> Self {
        TinyOpt {
            vocab: 30,
            d: 16,
            ff: 32,
            layers: 2,
            heads: 4,
            max_pos: 32,
            pre_ln: true,
            embed_dim: 16,
            prefix: "model.decoder.",
        }
    }
}

impl TinyOpt {
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": "opt",
            "architectures": ["OPTForCausalLM"],
            "vocab_size": self.vocab,
            "hidden_size": self.d,
            "ffn_dim": self.ff,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "max_position_embeddings": self.max_pos,
            "do_layer_norm_before": self.pre_ln,
            "word_embed_proj_dim": self.embed_dim,
            "activation_function": "relu",
            "enable_bias": true,
            "bos_token_id": 2,
            "eos_token_id": 2
        })
    }

    pub fn tensors(&self, seed: u64) -> Tensors {
        let mut r = rng(seed);
        let mut t = Tensors::new();
        let (d, ff, e, p) = (self.d, self.ff, self.embed_dim, self.prefix);
        let mut put =
            |t: &mut Tensors, name: String, shape: Vec<usize>, center: f32, spread: f32| {
                let n = shape.iter().product();
                t.insert(name, (shape, rand_vec(&mut r, n, center, spread)));
            };
        put(
            &mut t,
            format!("{p}embed_tokens.weight"),
            vec![self.vocab, e],
            0.0,
            1.0,
        );
        put(
            &mut t,
            format!("{p}embed_positions.weight"),
            vec![self.max_pos + 2, d],
            0.0,
            0.5,
        );
        if e != d {
            put(
                &mut t,
                format!("{p}project_in.weight"),
                vec![d, e],
                0.0,
                0.5,
            );
            put(
                &mut t,
                format!("{p}project_out.weight"),
                vec![e, d],
                0.0,
                0.5,
            );
        }
        for i in 0..self.layers {
            let l = format!("{p}layers.{i}.");
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
            ] {
                put(&mut t, format!("{l}{m}.weight"), vec![d, d], 0.0, 0.5);
                put(&mut t, format!("{l}{m}.bias"), vec![d], 0.0, 0.3);
            }
            put(&mut t, format!("{l}fc1.weight"), vec![ff, d], 0.0, 0.5);
            put(&mut t, format!("{l}fc1.bias"), vec![ff], 0.0, 0.3);
            put(&mut t, format!("{l}fc2.weight"), vec![d, ff], 0.0, 0.5);
            put(&mut t, format!("{l}fc2.bias"), vec![d], 0.0, 0.3);
            for n in ["self_attn_layer_norm", "final_layer_norm"] {
                put(&mut t, format!("{l}{n}.weight"), vec![d], 1.0, 0.3);
                put(&mut t, format!("{l}{n}.bias"), vec![d], 0.0, 0.3);
            }
        }
        if self.pre_ln {
            put(
                &mut t,
                format!("{p}final_layer_norm.weight"),
                vec![d],
                1.0,
                0.3,
            );
            put(
                &mut t,
                format!("{p}final_layer_norm.bias"),
                vec![d],
                0.0,
                0.3,
            );
        }
        t
    }

    /// Naive float64 forward of HF's OPTForCausalLM (tied head), logits `[T][vocab]`.
    pub fn naive_forward(&self, w: &Tensors, tokens: &[u32]) -> Vec<Vec<f64>> {
        let g = |n: &str| -> Vec<f64> { w[n].1.iter().map(|&v| v as f64).collect() };
        let (d, e, p) = (self.d, self.embed_dim, self.prefix);
        let hd = d / self.heads;
        let eps = 1e-5;
        let emb = g(&format!("{p}embed_tokens.weight"));
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| emb[t as usize * e..(t as usize + 1) * e].to_vec())
            .collect();
        if e != d {
            x = linear(&x, &g(&format!("{p}project_in.weight")), None);
        }
        let pos = g(&format!("{p}embed_positions.weight"));
        for (i, row) in x.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v += pos[(i + 2) * d + j];
            }
        }
        let ln = |x: &[Vec<f64>], n: &str| -> Vec<Vec<f64>> {
            let (wt, b) = (g(&format!("{n}.weight")), g(&format!("{n}.bias")));
            x.iter().map(|r| layer_norm(r, &wt, &b, eps)).collect()
        };
        let add = |x: &mut Vec<Vec<f64>>, y: &[Vec<f64>]| {
            for (a, b) in x.iter_mut().zip(y) {
                for (u, v) in a.iter_mut().zip(b) {
                    *u += v;
                }
            }
        };
        for i in 0..self.layers {
            let l = format!("{p}layers.{i}.");
            let lin = |x: &[Vec<f64>], m: &str| {
                linear(
                    x,
                    &g(&format!("{l}{m}.weight")),
                    Some(&g(&format!("{l}{m}.bias"))),
                )
            };
            let h = if self.pre_ln {
                ln(&x, &format!("{l}self_attn_layer_norm"))
            } else {
                x.clone()
            };
            // HF scales q (after its bias) by head_dim^-0.5; `attention` scales the scores instead.
            let q = lin(&h, "self_attn.q_proj");
            let k = lin(&h, "self_attn.k_proj");
            let v = lin(&h, "self_attn.v_proj");
            let ctx = attention(&q, &k, &v, self.heads, self.heads, hd);
            add(&mut x, &lin(&ctx, "self_attn.out_proj"));
            if !self.pre_ln {
                x = ln(&x, &format!("{l}self_attn_layer_norm"));
            }
            let h = if self.pre_ln {
                ln(&x, &format!("{l}final_layer_norm"))
            } else {
                x.clone()
            };
            let mut f = lin(&h, "fc1");
            for r in f.iter_mut() {
                for v in r.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            add(&mut x, &lin(&f, "fc2"));
            if !self.pre_ln {
                x = ln(&x, &format!("{l}final_layer_norm"));
            }
        }
        if self.pre_ln {
            x = ln(&x, &format!("{p}final_layer_norm"));
        }
        if e != d {
            x = linear(&x, &g(&format!("{p}project_out.weight")), None);
        }
        linear(&x, &emb, None)
    }
}

// ------------------------------------------------------------------------------------------------
// Writing checkpoints

/// Serializes tensors to a safetensors file, storing floats as `dtype` (F32, F16 or BF16).
pub fn write_safetensors(path: &Path, tensors: &Tensors, dtype: Dtype) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            let b: Vec<u8> = match dtype {
                Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                other => panic!("test writer does not do {other:?}"),
            };
            (n.clone(), s.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    let data = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Rounds every value as the stored dtype would (so naive references see the same weights).
pub fn round_to(tensors: &Tensors, dtype: Dtype) -> Tensors {
    tensors
        .iter()
        .map(|(n, (s, v))| {
            let v = v
                .iter()
                .map(|&x| match dtype {
                    Dtype::F16 => half::f16::from_f32(x).to_f32(),
                    Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
                    _ => x,
                })
                .collect();
            (n.clone(), (s.clone(), v))
        })
        .collect()
}

/// Writes `config.json` and the tensors, in one file or `shards` files with an index.
pub fn write_hf_dir(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &Tensors,
    shards: usize,
    dtype: Dtype,
) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    if shards <= 1 {
        write_safetensors(&dir.join("model.safetensors"), tensors, dtype);
        return;
    }
    let mut parts: Vec<Tensors> = vec![Tensors::new(); shards];
    for (i, (n, t)) in tensors.iter().enumerate() {
        parts[i % shards].insert(n.clone(), t.clone());
    }
    let mut map = serde_json::Map::new();
    for (s, part) in parts.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
        write_safetensors(&dir.join(&file), part, dtype);
        for n in part.keys() {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
}

// ------------------------------------------------------------------------------------------------
// GGUF writer (per the GGUF v3 spec; little endian, 32-byte alignment)

pub enum GgufValue {
    U32(u32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

pub struct GgufTensor {
    pub name: String,
    /// Dims slowest-first (as ndarray); written fastest-first as GGUF wants.
    pub shape: Vec<usize>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

pub const GGML_F32: u32 = 0;
pub const GGML_F16: u32 = 1;
pub const GGML_Q4_0: u32 = 2;
pub const GGML_Q4_1: u32 = 3;
pub const GGML_Q8_0: u32 = 8;
pub const GGML_Q4_K: u32 = 12;
pub const GGML_Q6_K: u32 = 14;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub fn gguf_bytes(kv: &[(&str, GgufValue)], tensors: &[GgufTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_str(&mut out, k);
        match v {
            GgufValue::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            GgufValue::U64(x) => {
                out.extend(10u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            GgufValue::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            GgufValue::Bool(x) => {
                out.extend(7u32.to_le_bytes());
                out.push(*x as u8);
            }
            GgufValue::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            GgufValue::StrArray(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for s in a {
                    put_str(&mut out, s);
                }
            }
            GgufValue::I32Array(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
    let align = |n: usize| n.div_ceil(32) * 32;
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ggml_type.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = align(offset + t.data.len());
    }
    out.resize(align(out.len()), 0);
    for t in tensors {
        out.extend(&t.data);
        out.resize(align(out.len()), 0);
    }
    out
}

/// Rows of `[heads·hd, cols]` in llama.cpp's interleaved-RoPE order (its converter's permutation).
pub fn permute_rows_f32(v: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let half = hd / 2;
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                let (dst, src) = (h * hd + i * 2 + two, h * hd + two * half + i);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The tiny model as llama.cpp would export it: GGUF names, Q/K permuted, F32/F16 storage.
pub fn tiny_gguf(t: &TinyLlama, w: &Tensors, f16_linears: bool, tokenizer: bool) -> Vec<u8> {
    let (kv, tensors) = tiny_gguf_parts(t, w, f16_linears, tokenizer);
    gguf_bytes(&kv, &tensors)
}

/// The metadata and tensors of [`tiny_gguf`], for tests that alter them before writing.
pub fn tiny_gguf_parts(
    t: &TinyLlama,
    w: &Tensors,
    f16_linears: bool,
    tokenizer: bool,
) -> (Vec<(&'static str, GgufValue)>, Vec<GgufTensor>) {
    let mut tensors = Vec::new();
    let mut push = |name: String, hf: &str, permute: Option<usize>| {
        let (shape, v) = &w[hf];
        let v = match permute {
            Some(heads) => permute_rows_f32(v, heads, t.hd, shape.get(1).copied().unwrap_or(1)),
            None => v.clone(),
        };
        let quant = f16_linears && shape.len() == 2;
        tensors.push(GgufTensor {
            name,
            shape: shape.clone(),
            ggml_type: if quant { GGML_F16 } else { GGML_F32 },
            data: if quant { f16_bytes(&v) } else { f32_bytes(&v) },
        });
    };
    push(
        "token_embd.weight".into(),
        "model.embed_tokens.weight",
        None,
    );
    for i in 0..t.layers {
        let p = format!("model.layers.{i}.");
        let b = format!("blk.{i}.");
        push(
            format!("{b}attn_norm.weight"),
            &format!("{p}input_layernorm.weight"),
            None,
        );
        push(
            format!("{b}ffn_norm.weight"),
            &format!("{p}post_attention_layernorm.weight"),
            None,
        );
        push(
            format!("{b}attn_q.weight"),
            &format!("{p}self_attn.q_proj.weight"),
            Some(t.heads),
        );
        push(
            format!("{b}attn_k.weight"),
            &format!("{p}self_attn.k_proj.weight"),
            Some(t.kv_heads),
        );
        push(
            format!("{b}attn_v.weight"),
            &format!("{p}self_attn.v_proj.weight"),
            None,
        );
        push(
            format!("{b}attn_output.weight"),
            &format!("{p}self_attn.o_proj.weight"),
            None,
        );
        push(
            format!("{b}ffn_gate.weight"),
            &format!("{p}mlp.gate_proj.weight"),
            None,
        );
        push(
            format!("{b}ffn_up.weight"),
            &format!("{p}mlp.up_proj.weight"),
            None,
        );
        push(
            format!("{b}ffn_down.weight"),
            &format!("{p}mlp.down_proj.weight"),
            None,
        );
    }
    push("output_norm.weight".into(), "model.norm.weight", None);
    if !t.tied {
        push("output.weight".into(), "lm_head.weight", None);
    }
    let mut kv = vec![
        ("general.architecture", GgufValue::Str("llama".into())),
        ("llama.block_count", GgufValue::U32(t.layers as u32)),
        ("llama.embedding_length", GgufValue::U32(t.d as u32)),
        ("llama.feed_forward_length", GgufValue::U32(t.ff as u32)),
        ("llama.attention.head_count", GgufValue::U32(t.heads as u32)),
        (
            "llama.attention.head_count_kv",
            GgufValue::U32(t.kv_heads as u32),
        ),
        ("llama.rope.freq_base", GgufValue::F32(t.theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(t.eps as f32),
        ),
        ("llama.context_length", GgufValue::U32(64)),
        ("llama.rope.dimension_count", GgufValue::U32(t.hd as u32)),
    ];
    if tokenizer {
        let (tokens, merges, types) = tiny_gpt2_vocab();
        assert!(tokens.len() <= t.vocab);
        let mut tokens = tokens;
        while tokens.len() < t.vocab {
            tokens.push(format!("<unused{}>", tokens.len()));
        }
        let mut types = types;
        types.resize(t.vocab, 1);
        kv.push(("tokenizer.ggml.model", GgufValue::Str("gpt2".into())));
        kv.push(("tokenizer.ggml.pre", GgufValue::Str("default".into())));
        kv.push(("tokenizer.ggml.tokens", GgufValue::StrArray(tokens)));
        kv.push(("tokenizer.ggml.merges", GgufValue::StrArray(merges)));
        kv.push(("tokenizer.ggml.token_type", GgufValue::I32Array(types)));
        kv.push(("tokenizer.ggml.bos_token_id", GgufValue::U32(1)));
        kv.push(("tokenizer.ggml.eos_token_id", GgufValue::U32(0)));
        kv.push(("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)));
    }
    (kv, tensors)
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

// Block encoders, from the ggml block layouts. Each takes integer codes and scales chosen by the
// test and returns (bytes, values the spec says they decode to).

fn h(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}
fn hf(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Q4_0: 32 values `d·(q − 8)`, q ∈ [0, 15]; byte j holds q[j] (low) and q[j+16] (high).
pub fn q4_0_block(d: f32, q: &[u8; 32]) -> (Vec<u8>, Vec<f32>) {
    let mut b = h(d).to_vec();
    b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    (b, q.iter().map(|&x| hf(d) * (x as f32 - 8.0)).collect())
}

/// Q4_1: 32 values `d·q + m`.
pub fn q4_1_block(d: f32, m: f32, q: &[u8; 32]) -> (Vec<u8>, Vec<f32>) {
    let mut b = h(d).to_vec();
    b.extend(h(m));
    b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    (b, q.iter().map(|&x| hf(d) * x as f32 + hf(m)).collect())
}

/// Q8_0: 32 values `d·q`, q ∈ i8.
pub fn q8_0_block(d: f32, q: &[i8; 32]) -> (Vec<u8>, Vec<f32>) {
    let mut b = h(d).to_vec();
    b.extend(q.iter().map(|&x| x as u8));
    (b, q.iter().map(|&x| hf(d) * x as f32).collect())
}

/// Q4_K: 256 values in 8 sub-blocks of 32, value `d·sc[j]·q − dmin·m[j]` with 6-bit sc, m and
/// 4-bit q. Scales packed in 12 bytes; qs: chunk c (64 values) low nibbles = values 64c..64c+32,
/// high nibbles = values 64c+32..64c+64.
pub fn q4_k_block(
    d: f32,
    dmin: f32,
    sc: &[u8; 8],
    m: &[u8; 8],
    q: &[u8; 256],
) -> (Vec<u8>, Vec<f32>) {
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
    b.extend(s);
    for c in 0..4 {
        for l in 0..32 {
            b.push(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
        }
    }
    let vals = (0..256)
        .map(|i| {
            let j = i / 32;
            hf(d) * sc[j] as f32 * q[i] as f32 - hf(dmin) * m[j] as f32
        })
        .collect();
    (b, vals)
}

/// Q6_K: 256 values `d·sc[i/16]·(q − 32)`, 6-bit q split into ql (low 4 bits) and qh (high 2),
/// int8 scales, f16 d last.
pub fn q6_k_block(d: f32, sc: &[i8; 16], q: &[u8; 256]) -> (Vec<u8>, Vec<f32>) {
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for n in 0..2 {
        let (y, l0, h0) = (128 * n, 64 * n, 32 * n);
        for l in 0..32 {
            let (q1, q2, q3, q4) = (q[y + l], q[y + l + 32], q[y + l + 64], q[y + l + 96]);
            ql[l0 + l] = (q1 & 15) | ((q3 & 15) << 4);
            ql[l0 + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
            qh[h0 + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    let mut b = ql.to_vec();
    b.extend(qh);
    b.extend(sc.iter().map(|&x| x as u8));
    b.extend(h(d));
    let vals = (0..256)
        .map(|i| hf(d) * sc[i / 16] as f32 * (q[i] as f32 - 32.0))
        .collect();
    (b, vals)
}

/// Tokenizer metadata for a tiny GPT-2-style vocabulary: bytes as tokens plus a few merges.
pub fn tiny_gpt2_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    // GPT-2's byte→unicode map restricted to printable ASCII (identity) and space → 'Ġ'.
    let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string()];
    for c in '!'..='~' {
        tokens.push(c.to_string());
    }
    tokens.push("Ġ".into());
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    types[0] = 3;
    types[1] = 3;
    (
        tokens,
        merges.iter().map(|s| s.to_string()).collect(),
        types,
    )
}
