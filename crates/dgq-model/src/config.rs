//! Model configuration: one plain struct for every supported decoder, read from a Hugging Face
//! `config.json` or from GGUF metadata, validated once.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::rope::RopeScaling;

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
