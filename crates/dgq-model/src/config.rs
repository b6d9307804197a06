//! Model configuration: one plain struct for every supported decoder, read from a Hugging Face
//! `config.json` or from GGUF metadata, validated once.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::rope::RopeScaling;
use crate::weights::{GgufFile, TensorSource};

/// Largest head size accepted: real models stay at or below 256, and the rotary tables are
/// allocated from it before any tensor is read.
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Largest layer count accepted (real models: up to ~130).
pub const MAX_LAYERS: usize = 1 << 12;
/// Largest `max_position_embeddings` accepted (OPT allocates its position table from it).
pub const MAX_POSITIONS: usize = 1 << 30;

/// Decoder family: the layer structure the forward implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// LLaMA and its relatives (Mistral, Qwen2, SmolLM): RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
    /// OPT: LayerNorm, learned positions (offset 2), ReLU FFN, biases everywhere.
    Opt,
}

/// Hyper-parameters of a decoder-only model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Layer structure.
    pub family: Family,
    /// The checkpoint's own name for its architecture (`llama`, `qwen2`, `mistral`, `opt`...).
    pub model_type: String,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual stream width d.
    pub hidden_size: usize,
    /// MLP hidden width (LLaMA `intermediate_size`, OPT `ffn_dim`).
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA; equal to `num_heads` for MHA).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Longest sequence the position encoding supports (OPT: hard limit of its table).
    pub max_position_embeddings: usize,
    /// Epsilon of RMSNorm / LayerNorm.
    pub norm_eps: f32,
    /// RoPE base (LLaMA family only).
    pub rope_theta: f32,
    /// RoPE frequency rescaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// The output head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Q/K/V projections have biases (Qwen2; OPT).
    pub qkv_bias: bool,
    /// The attention output projection has a bias (OPT; LLaMA `attention_bias`).
    pub o_bias: bool,
    /// MLP projections have biases (OPT; LLaMA `mlp_bias`).
    pub mlp_bias: bool,
    /// Norms come before attention/MLP (pre-LN). False only for OPT-350m-style post-LN.
    pub norm_before: bool,
    /// OPT: width of the token embedding when it differs from `hidden_size` (OPT-350m projects
    /// 512 → 1024 with `project_in`/`project_out`). Equal to `hidden_size` otherwise.
    pub word_embed_proj_dim: usize,
    /// Sliding-window attention span (Mistral v0.1, Qwen2 with `use_sliding_window`). These
    /// decoders attend to the whole causal prefix, which equals sliding-window attention only
    /// for sequences up to the window, so longer ones are refused.
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence token, if the checkpoint names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token, if the checkpoint names one.
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Checks internal consistency (positive sizes, heads dividing, GQA grouping...).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("word_embed_proj_dim", self.word_embed_proj_dim),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(field, v, "must be positive"));
            }
        }
        // Bounds no real checkpoint comes near, checked before anything is allocated from them
        // (the tensors in the file are checked against the config separately, by the loader).
        let bounded = [
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ];
        for (field, v, max) in bounded {
            if v > max {
                return Err(Error::config(field, v, format!("must be at most {max}")));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                self.num_kv_heads,
                format!("must divide num_attention_heads = {}", self.num_heads),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config(
                "norm_eps",
                self.norm_eps,
                "must be finite and > 0",
            ));
        }
        // Guard the products the loader allocates from, so a hostile config cannot overflow.
        let sizes = [
            self.vocab_size
                .checked_mul(self.word_embed_proj_dim.max(self.hidden_size)),
            self.num_heads.checked_mul(self.head_dim),
            self.hidden_size.checked_mul(self.intermediate_size),
        ];
        if sizes.iter().any(|s| s.is_none_or(|s| s > (1usize << 40))) {
            return Err(Error::config(
                "sizes",
                format!("{self:?}"),
                "implausibly large tensors",
            ));
        }
        match self.family {
            Family::Llama => {
                if self.head_dim % 2 != 0 {
                    return Err(Error::config(
                        "head_dim",
                        self.head_dim,
                        "RoPE needs an even head size",
                    ));
                }
                crate::rope::Rope::new(self.head_dim, self.rope_theta, self.rope_scaling.as_ref())?;
            }
            Family::Opt => {
                if self.num_heads * self.head_dim != self.hidden_size {
                    return Err(Error::config(
                        "num_attention_heads",
                        self.num_heads,
                        format!("must divide hidden_size = {}", self.hidden_size),
                    ));
                }
                if self.num_kv_heads != self.num_heads {
                    return Err(Error::config(
                        "num_key_value_heads",
                        self.num_kv_heads,
                        "OPT has no GQA",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Width of the attention projection `num_heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the K/V projections `num_kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_hf_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&v)
    }

    /// Builds and validates a config from a parsed Hugging Face `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let j = Json(v);
        let model_type = j.string("model_type")?;
        let cfg = match model_type.as_str() {
            "llama" | "mistral" | "qwen2" => {
                let hidden_size = j.usize("hidden_size")?;
                let num_heads = j.usize("num_attention_heads")?;
                if num_heads == 0 {
                    return Err(Error::config("num_attention_heads", 0, "must be positive"));
                }
                let num_kv_heads = j.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
                let head_dim = j.opt_usize("head_dim")?.unwrap_or(hidden_size / num_heads);
                let act = j.opt_string("hidden_act")?.unwrap_or_else(|| "silu".into());
                if act != "silu" {
                    return Err(Error::Unsupported(format!("hidden_act {act} (only silu)")));
                }
                let qwen = model_type == "qwen2";
                let attention_bias = j.opt_bool("attention_bias")?.unwrap_or(false);
                let tied = j.opt_bool("tie_word_embeddings")?.unwrap_or(false);
                ModelConfig {
                    family: Family::Llama,
                    vocab_size: j.usize("vocab_size")?,
                    hidden_size,
                    intermediate_size: j.usize("intermediate_size")?,
                    num_layers: j.usize("num_hidden_layers")?,
                    num_heads,
                    num_kv_heads,
                    head_dim,
                    max_position_embeddings: j
                        .opt_usize("max_position_embeddings")?
                        .unwrap_or(2048),
                    norm_eps: j.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
                    rope_theta: j.opt_f32("rope_theta")?.unwrap_or(10000.0),
                    rope_scaling: parse_rope_scaling(v.get("rope_scaling"))?,
                    tie_word_embeddings: tied,
                    qkv_bias: qwen || attention_bias,
                    o_bias: attention_bias,
                    mlp_bias: j.opt_bool("mlp_bias")?.unwrap_or(false),
                    norm_before: true,
                    word_embed_proj_dim: hidden_size,
                    sliding_window: match model_type.as_str() {
                        "mistral" => j.opt_usize("sliding_window")?,
                        "qwen2" if j.opt_bool("use_sliding_window")? == Some(true) => {
                            j.opt_usize("sliding_window")?
                        }
                        _ => None,
                    },
                    bos_token_id: j.opt_token("bos_token_id")?,
                    eos_token_id: j.opt_token("eos_token_id")?,
                    model_type,
                }
            }
            "opt" => {
                let hidden_size = j.usize("hidden_size")?;
                let num_heads = j.usize("num_attention_heads")?;
                if num_heads == 0 {
                    return Err(Error::config("num_attention_heads", 0, "must be positive"));
                }
                let act = j
                    .opt_string("activation_function")?
                    .unwrap_or_else(|| "relu".into());
                if act != "relu" {
                    return Err(Error::Unsupported(format!(
                        "OPT activation_function {act} (only relu)"
                    )));
                }
                if j.opt_bool("layer_norm_elementwise_affine")? == Some(false) {
                    return Err(Error::Unsupported(
                        "OPT without LayerNorm affine parameters".into(),
                    ));
                }
                let bias = j.opt_bool("enable_bias")?.unwrap_or(true);
                ModelConfig {
                    family: Family::Opt,
                    vocab_size: j.usize("vocab_size")?,
                    hidden_size,
                    intermediate_size: j.usize("ffn_dim")?,
                    num_layers: j.usize("num_hidden_layers")?,
                    num_heads,
                    num_kv_heads: num_heads,
                    head_dim: hidden_size / num_heads,
                    max_position_embeddings: j.usize("max_position_embeddings")?,
                    norm_eps: 1e-5,
                    rope_theta: 10000.0,
                    rope_scaling: None,
                    // PretrainedConfig's default, which OPT checkpoints rely on.
                    tie_word_embeddings: j.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                    qkv_bias: bias,
                    o_bias: bias,
                    mlp_bias: bias,
                    norm_before: j.opt_bool("do_layer_norm_before")?.unwrap_or(true),
                    word_embed_proj_dim: j.opt_usize("word_embed_proj_dim")?.unwrap_or(hidden_size),
                    sliding_window: None,
                    bos_token_id: j.opt_token("bos_token_id")?,
                    eos_token_id: j.opt_token("eos_token_id")?,
                    model_type,
                }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type {other} (supported: llama, mistral, qwen2, opt)"
                )))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn parse_rope_scaling(v: Option<&Value>) -> Result<Option<RopeScaling>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let j = Json(v);
    let kind = match j.opt_string("rope_type")? {
        Some(k) => k,
        None => j.string("type")?,
    };
    match kind.as_str() {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: j.f32("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: j.f32("factor")?,
            low_freq_factor: j.f32("low_freq_factor")?,
            high_freq_factor: j.f32("high_freq_factor")?,
            original_max_position_embeddings: j.usize("original_max_position_embeddings")?,
        })),
        other => Err(Error::Unsupported(format!(
            "rope_scaling type {other} (supported: linear, llama3)"
        ))),
    }
}

/// Typed access to JSON fields with errors naming the field.
struct Json<'a>(&'a Value);

impl Json<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?
            .ok_or_else(|| Error::config(key, "(missing)", "required"))
    }
    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Error::config(key, v, "expected a string")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| Error::config(key, "(missing)", "required"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| Error::config(key, v, "expected a non-negative integer")),
        }
    }
    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            // Some configs list several EOS ids; the first one is the canonical one.
            Some(Value::Array(a)) => match a.first() {
                None => Ok(None),
                Some(v) => as_u32(key, v).map(Some),
            },
            Some(v) => as_u32(key, v).map(Some),
        }
    }
    fn f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?
            .ok_or_else(|| Error::config(key, "(missing)", "required"))
    }
    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f as f32)),
                _ => Err(Error::config(key, v, "expected a finite number")),
            },
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::config(key, v, "expected true or false")),
        }
    }
}

fn as_u32(key: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|u| u32::try_from(u).ok())
        .ok_or_else(|| Error::config(key, v, "expected a token id"))
}

/// Reads the LLaMA-family hyper-parameters from GGUF metadata (and the `rope_freqs.weight`
/// tensor, when present). The flag says whether Q/K are stored permuted for interleaved RoPE
/// (llama.cpp's `llama` architecture; not `qwen2`).
pub(crate) fn gguf_config(src: &mut GgufFile) -> Result<(ModelConfig, bool)> {
    let path = src.path().to_path_buf();
    let arch = src
        .meta_str("general.architecture")?
        .ok_or_else(|| Error::gguf(&path, "missing general.architecture"))?
        .to_string();
    let permuted = match arch.as_str() {
        "llama" | "mistral" => true,
        "qwen2" => false,
        other => {
            return Err(Error::Unsupported(format!(
                "GGUF architecture {other} (supported: llama, mistral, qwen2)"
            )))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let hidden_size = src.req_usize(&key("embedding_length"))?;
    let num_heads = src.req_usize(&key("attention.head_count"))?;
    if num_heads == 0 {
        return Err(Error::config(
            key("attention.head_count"),
            0,
            "must be positive",
        ));
    }
    let num_kv_heads = src
        .meta_usize(&key("attention.head_count_kv"))?
        .unwrap_or(num_heads);
    let head_dim = src
        .meta_usize(&key("attention.key_length"))?
        .unwrap_or(hidden_size / num_heads);
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::config(
            key("attention.key_length"),
            head_dim,
            format!("must be at most {MAX_HEAD_DIM}"),
        ));
    }
    if let Some(rot) = src.meta_usize(&key("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(Error::Unsupported(format!(
                "partial rotary ({rot} of {head_dim} dims)"
            )));
        }
    }
    let embed_shape = src
        .shape("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
    let vocab_size = match src.meta_usize(&key("vocab_size"))? {
        Some(v) => v,
        None => embed_shape.first().copied().unwrap_or(0),
    };
    let mut rope_scaling = match src.meta_str(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: src
                .meta_f32(&key("rope.scaling.factor"))?
                .ok_or_else(|| Error::gguf(&path, "linear rope scaling without a factor"))?,
        }),
        Some(other) => return Err(Error::Unsupported(format!("GGUF rope scaling {other}"))),
    };
    const ROPE_FREQS: &str = "rope_freqs.weight";
    if let Some(shape) = src.shape(ROPE_FREQS) {
        if rope_scaling.is_some() {
            return Err(Error::Unsupported(
                "rope_freqs together with rope scaling".into(),
            ));
        }
        // Per-frequency divisors (LLaMA 3.1), `[head_dim / 2]`: checked before it is read.
        if shape != [head_dim / 2] {
            return Err(Error::TensorShape {
                name: ROPE_FREQS.into(),
                expected: vec![head_dim / 2],
                got: shape,
            });
        }
        rope_scaling = Some(RopeScaling::Factors(src.read_f32(ROPE_FREQS)?));
    }
    let token = |k: &str| -> Result<Option<u32>> {
        Ok(match src.meta_u64(k)? {
            Some(v) => Some(
                u32::try_from(v)
                    .map_err(|_| Error::gguf(&path, format!("{k} = {v} out of range")))?,
            ),
            None => None,
        })
    };
    let cfg = ModelConfig {
        family: Family::Llama,
        model_type: arch.clone(),
        vocab_size,
        hidden_size,
        intermediate_size: src.req_usize(&key("feed_forward_length"))?,
        num_layers: src.req_usize(&key("block_count"))?,
        num_heads,
        num_kv_heads,
        head_dim,
        max_position_embeddings: src.meta_usize(&key("context_length"))?.unwrap_or(2048),
        norm_eps: src
            .meta_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: src.meta_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
        rope_scaling,
        tie_word_embeddings: src.shape("output.weight").is_none(),
        qkv_bias: src.shape("blk.0.attn_q.bias").is_some(),
        o_bias: src.shape("blk.0.attn_output.bias").is_some(),
        mlp_bias: src.shape("blk.0.ffn_up.bias").is_some(),
        norm_before: true,
        word_embed_proj_dim: hidden_size,
        sliding_window: None,
        bos_token_id: token("tokenizer.ggml.bos_token_id")?,
        eos_token_id: token("tokenizer.ggml.eos_token_id")?,
    };
    cfg.validate()?;
    Ok((cfg, permuted))
}
