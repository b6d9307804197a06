//! The whole decoder: embeddings, layers, final norm and output head, with loaders for Hugging
//! Face safetensors directories and GGUF files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2, Axis};

use crate::config::{gguf_config, Family, ModelConfig};
use crate::error::{Error, Result};
use crate::layer::{AttentionSpec, CaptureHook, DecoderLayer, LayerKvCache, Mlp};
use crate::linear::{Linear, LinearSlot};
use crate::norm::{Norm, NormKind};
use crate::ops::{self, Par};
use crate::rope::{self, Rope, RopeScaling};
use crate::weights::{GgufFile, SafetensorsSource, TensorSource, Weights};

/// The checkpoint format a model was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// A Hugging Face directory (`config.json` + safetensors).
    HfSafetensors,
    /// A GGUF file.
    Gguf,
    /// Built in memory (tests, synthetic models).
    InMemory,
}

/// What the loader saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadInfo {
    /// Directory or file the model came from.
    pub path: PathBuf,
    /// Its format.
    pub format: SourceFormat,
    /// Tensors in the checkpoint that the model does not use (empty for a complete mapping).
    pub unused_tensors: Vec<String>,
    /// How many of the used tensors were stored in each type (`F32`, `BF16`, `Q4_1`...).
    pub tensor_types: BTreeMap<String, usize>,
}

/// A decoder-only language model with float (or swapped-in quantized) linears.
#[derive(Debug)]
pub struct Model {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Token embedding `[vocab, word_embed_proj_dim]`.
    pub embed_tokens: Array2<f32>,
    /// OPT's learned positions `[max_position_embeddings + 2, hidden]` (row `p + 2` for position p).
    pub embed_positions: Option<Array2<f32>>,
    /// OPT-350m's projection of embeddings to the hidden width.
    pub project_in: Option<Linear>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Norm after the last layer (absent in post-LN OPT).
    pub final_norm: Option<Norm>,
    /// OPT-350m's projection back to the embedding width.
    pub project_out: Option<Linear>,
    /// Output head `[vocab, width]`; `None` means tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// Provenance.
    pub load_info: LoadInfo,
}

/// KV caches for all layers of a model (for incremental decoding).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One cache per layer.
    pub layers: Vec<LayerKvCache>,
}

impl KvCache {
    /// Cached positions (equal in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len())
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// OPT's learned position table is indexed with this offset (a fairseq legacy).
pub const OPT_POSITION_OFFSET: usize = 2;

impl Model {
    /// Loads a model from a Hugging Face directory or a `.gguf` file, by what `path` is.
    pub fn load(path: &Path) -> Result<Model> {
        if path.is_dir() {
            Self::from_hf_dir(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// Loads `config.json` and `model.safetensors` (or the shards of
    /// `model.safetensors.index.json`) from a Hugging Face model directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Model> {
        let config = ModelConfig::from_hf_json_file(&dir.join("config.json"))?;
        let mut w = Weights::new(SafetensorsSource::open_dir(dir)?);
        let mut model = match config.family {
            Family::Llama => build_llama(config, &mut w, &HF_LLAMA, false)?,
            Family::Opt => build_opt(config, &mut w)?,
        };
        model.load_info = LoadInfo {
            path: dir.to_path_buf(),
            format: SourceFormat::HfSafetensors,
            unused_tensors: w.unused(),
            tensor_types: w.dtype_counts(),
        };
        Ok(model)
    }

    /// Loads a LLaMA-family model (`llama`, `qwen2` architectures) from a GGUF file,
    /// dequantizing every tensor to f32 and undoing llama.cpp's Q/K row permutation.
    pub fn from_gguf(path: &Path) -> Result<Model> {
        let mut src = GgufFile::open(path)?;
        let (config, permuted) = gguf_config(&mut src)?;
        let mut w = Weights::new(src);
        if matches!(config.rope_scaling, Some(RopeScaling::Factors(_))) {
            w.skip("rope_freqs.weight");
        }
        let mut model = build_llama(config, &mut w, &GGUF_LLAMA, permuted)?;
        model.load_info = LoadInfo {
            path: path.to_path_buf(),
            format: SourceFormat::Gguf,
            unused_tensors: w.unused(),
            tensor_types: w.dtype_counts(),
        };
        Ok(model)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.nrows()
    }

    /// Residual width.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Checks token ids against the vocabulary and the position limit.
    fn check_tokens(&self, tokens: &[u32], start_pos: usize) -> Result<()> {
        let vocab = self.vocab_size();
        if let Some((position, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(Error::TokenOutOfRange {
                token,
                position,
                vocab_size: vocab,
            });
        }
        if let Some(w) = self.config.sliding_window {
            if start_pos + tokens.len() > w {
                return Err(Error::TooLong {
                    len: start_pos + tokens.len(),
                    max: w,
                    reason: "sliding-window attention is not implemented (exact up to the window)",
                });
            }
        }
        if self.config.family == Family::Opt
            && start_pos + tokens.len() > self.config.max_position_embeddings
        {
            return Err(Error::TooLong {
                len: start_pos + tokens.len(),
                max: self.config.max_position_embeddings,
                reason: "OPT's learned position table has no more rows",
            });
        }
        Ok(())
    }

    /// Embeds `tokens` at positions `start_pos..`: the residual stream entering layer 0,
    /// `[T, hidden]` (token embedding, OPT's projection and learned positions).
    pub fn embed(&self, tokens: &[u32], start_pos: usize) -> Result<Array2<f32>> {
        self.check_tokens(tokens, start_pos)?;
        let idx: Vec<usize> = tokens.iter().map(|&t| t as usize).collect();
        let mut h = self.embed_tokens.select(Axis(0), &idx);
        if let Some(p) = &self.project_in {
            h = p.forward(h.view())?;
        }
        if let Some(pos) = &self.embed_positions {
            let a = start_pos + OPT_POSITION_OFFSET;
            let b = a + tokens.len();
            if b > pos.nrows() || pos.ncols() != h.ncols() {
                return Err(Error::shape(
                    "position embedding table",
                    format!("at least [{b}, {}]", h.ncols()),
                    format!("{:?}", pos.dim()),
                ));
            }
            let rows = pos.slice(ndarray::s![a..b, ..]);
            h += &rows;
        }
        Ok(h)
    }

    /// Final norm, OPT's projection and the output head: logits `[T, vocab]` from the residual
    /// stream after the last layer.
    pub fn head(&self, hidden: ArrayView2<f32>) -> Result<Array2<f32>> {
        let mut h = match &self.final_norm {
            Some(n) => n.forward(hidden)?,
            None => hidden.to_owned(),
        };
        if let Some(p) = &self.project_out {
            h = p.forward(h.view())?;
        }
        match &self.lm_head {
            Some(head) => head.forward(h.view()),
            None => {
                if h.ncols() != self.embed_tokens.ncols() {
                    return Err(Error::shape(
                        "tied head input",
                        self.embed_tokens.ncols(),
                        h.ncols(),
                    ));
                }
                ops::matmul_nt(h.view(), self.embed_tokens.view(), Par::Rayon)
            }
        }
    }

    /// Logits `[T, vocab]` for one sequence starting at position 0 (causal).
    pub fn forward(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        let mut h = self.embed(tokens, 0)?;
        for layer in &self.layers {
            h = layer.forward(h.view(), 0)?;
        }
        self.head(h.view())
    }

    /// [`forward`](Self::forward) calling `hook(layer_index, slot, input)` for every linear of
    /// every layer (the head is not captured).
    pub fn forward_capture(
        &self,
        tokens: &[u32],
        hook: &mut dyn FnMut(usize, LinearSlot, ArrayView2<f32>),
    ) -> Result<Array2<f32>> {
        let mut h = self.embed(tokens, 0)?;
        for layer in &self.layers {
            let i = layer.index;
            let mut per_layer = |slot: LinearSlot, x: ArrayView2<f32>| hook(i, slot, x);
            let hook_ref: &mut CaptureHook<'_> = &mut per_layer;
            h = layer.forward_capture(h.view(), 0, hook_ref)?;
        }
        self.head(h.view())
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![LayerKvCache::default(); self.layers.len()],
        }
    }

    /// Logits `[T, vocab]` of new tokens appended after the cached ones.
    pub fn forward_cached(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Array2<f32>> {
        if cache.layers.len() != self.layers.len() {
            return Err(Error::shape(
                "KV cache layers",
                self.layers.len(),
                cache.layers.len(),
            ));
        }
        let start = cache.len();
        let mut h = self.embed(tokens, start)?;
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            h = layer.forward_cached(h.view(), c)?;
        }
        self.head(h.view())
    }

    /// Greedy decoding: appends up to `max_new` tokens to `prompt`, stopping after `stop` if
    /// given. Returns only the new tokens.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: Option<u32>,
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::argument("prompt", "[]", "needs at least one token"));
        }
        let mut cache = self.new_cache();
        let mut logits = self.forward_cached(prompt, &mut cache)?;
        let mut out = Vec::with_capacity(max_new);
        for _ in 0..max_new {
            let last = logits.row(logits.nrows() - 1);
            let next = argmax(last.iter().copied()).ok_or_else(|| Error::NonFinite {
                what: "logits".into(),
            })?;
            out.push(next);
            if Some(next) == stop {
                break;
            }
            logits = self.forward_cached(&[next], &mut cache)?;
        }
        Ok(out)
    }
}

/// Index of the largest finite value.
fn argmax(it: impl Iterator<Item = f32>) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, v) in it.enumerate() {
        if v.is_finite() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i as u32, v));
        }
    }
    best.map(|(i, _)| i)
}

// ------------------------------------------------------------------------------------------------
// LLaMA family

/// Tensor names of one LLaMA-family checkpoint flavour.
struct LlamaNames {
    embed: &'static str,
    final_norm: &'static str,
    lm_head: &'static str,
    /// `(layer, part)` → name, parts being `attn_norm`, `mlp_norm`, `q`, `k`, `v`, `o`, `gate`,
    /// `up`, `down`, each optionally followed by `.bias`.
    layer: fn(usize, &str) -> String,
}

const HF_LLAMA: LlamaNames = LlamaNames {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    layer: |i, part| {
        let (part, kind) = part.split_once('.').unwrap_or((part, "weight"));
        let module = match part {
            "attn_norm" => "input_layernorm",
            "mlp_norm" => "post_attention_layernorm",
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            _ => "mlp.down_proj",
        };
        format!("model.layers.{i}.{module}.{kind}")
    },
};

const GGUF_LLAMA: LlamaNames = LlamaNames {
    embed: "token_embd.weight",
    final_norm: "output_norm.weight",
    lm_head: "output.weight",
    layer: |i, part| {
        let (part, kind) = part.split_once('.').unwrap_or((part, "weight"));
        let module = match part {
            "attn_norm" => "attn_norm",
            "mlp_norm" => "ffn_norm",
            "q" => "attn_q",
            "k" => "attn_k",
            "v" => "attn_v",
            "o" => "attn_output",
            "gate" => "ffn_gate",
            "up" => "ffn_up",
            _ => "ffn_down",
        };
        format!("blk.{i}.{module}.{kind}")
    },
};

fn linear<S: TensorSource>(
    w: &mut Weights<S>,
    weight: &str,
    bias: Option<&str>,
    n: usize,
    k: usize,
) -> Result<Linear> {
    let wt = w.take2(weight, n, k)?;
    let b = match bias {
        Some(b) => Some(w.take1(b, n)?),
        None => None,
    };
    Linear::float(wt, b)
}

fn build_llama<S: TensorSource>(
    config: ModelConfig,
    w: &mut Weights<S>,
    names: &LlamaNames,
    unpermute_qk: bool,
) -> Result<Model> {
    config.validate()?;
    check_llama_tensors(&config, w, names)?;
    let c = &config;
    let (d, ff, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let embed_tokens = w.take2(names.embed, c.vocab_size, d)?;
    let rope = Rope::new(c.head_dim, c.rope_theta, c.rope_scaling.as_ref())?;
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let n = |part: &str| (names.layer)(i, part);
        let bias = |on: bool, part: &str| on.then(|| n(&format!("{part}.bias")));
        let mut q = linear(w, &n("q"), bias(c.qkv_bias, "q").as_deref(), qd, d)?;
        let mut k = linear(w, &n("k"), bias(c.qkv_bias, "k").as_deref(), kvd, d)?;
        if unpermute_qk {
            unpermute_linear(&mut q, c.num_heads, c.head_dim)?;
            unpermute_linear(&mut k, c.num_kv_heads, c.head_dim)?;
        }
        let v = linear(w, &n("v"), bias(c.qkv_bias, "v").as_deref(), kvd, d)?;
        let o = linear(w, &n("o"), bias(c.o_bias, "o").as_deref(), d, qd)?;
        let gate = linear(w, &n("gate"), bias(c.mlp_bias, "gate").as_deref(), ff, d)?;
        let up = linear(w, &n("up"), bias(c.mlp_bias, "up").as_deref(), ff, d)?;
        let down = linear(w, &n("down"), bias(c.mlp_bias, "down").as_deref(), d, ff)?;
        layers.push(DecoderLayer {
            index: i,
            family: Family::Llama,
            norm_before: true,
            attn: AttentionSpec {
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                rope: Some(rope.clone()),
            },
            attn_norm: Norm::new(
                NormKind::Rms,
                w.take1(&n("attn_norm"), d)?,
                None,
                c.norm_eps,
            )?,
            mlp_norm: Norm::new(NormKind::Rms, w.take1(&n("mlp_norm"), d)?, None, c.norm_eps)?,
            q_proj: q,
            k_proj: k,
            v_proj: v,
            o_proj: o,
            mlp: Mlp::SwiGlu { gate, up, down },
        });
    }
    let final_norm = Norm::new(
        NormKind::Rms,
        w.take1(names.final_norm, d)?,
        None,
        c.norm_eps,
    )?;
    let lm_head = if c.tie_word_embeddings {
        // Some exporters keep a duplicate of the tied head; the embedding is authoritative.
        w.skip(names.lm_head);
        None
    } else {
        Some(linear(w, names.lm_head, None, c.vocab_size, d)?)
    };
    Ok(Model {
        config,
        embed_tokens,
        embed_positions: None,
        project_in: None,
        layers,
        final_norm: Some(final_norm),
        project_out: None,
        lm_head,
        load_info: in_memory_info(),
    })
}

/// Checks the shape of every tensor [`build_llama`] takes, in the order it takes them, before
/// any is read: sizes and layer counts from the config are only allocated once the file is
/// known to hold tensors of those sizes.
fn check_llama_tensors<S: TensorSource>(
    c: &ModelConfig,
    w: &Weights<S>,
    names: &LlamaNames,
) -> Result<()> {
    let (d, ff, qd, kvd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    w.check(names.embed, &[c.vocab_size, d])?;
    for i in 0..c.num_layers {
        let n = |part: &str| (names.layer)(i, part);
        let lin = |part: &str, bias: bool, rows: usize, cols: usize| -> Result<()> {
            w.check(&n(part), &[rows, cols])?;
            if bias {
                w.check(&n(&format!("{part}.bias")), &[rows])?;
            }
            Ok(())
        };
        lin("q", c.qkv_bias, qd, d)?;
        lin("k", c.qkv_bias, kvd, d)?;
        lin("v", c.qkv_bias, kvd, d)?;
        lin("o", c.o_bias, d, qd)?;
        lin("gate", c.mlp_bias, ff, d)?;
        lin("up", c.mlp_bias, ff, d)?;
        lin("down", c.mlp_bias, d, ff)?;
        w.check(&n("attn_norm"), &[d])?;
        w.check(&n("mlp_norm"), &[d])?;
    }
    w.check(names.final_norm, &[d])?;
    if !c.tie_word_embeddings {
        w.check(names.lm_head, &[c.vocab_size, d])?;
    }
    Ok(())
}

fn in_memory_info() -> LoadInfo {
    LoadInfo {
        path: PathBuf::new(),
        format: SourceFormat::InMemory,
        unused_tensors: Vec::new(),
        tensor_types: BTreeMap::new(),
    }
}

fn unpermute_linear(l: &mut Linear, heads: usize, head_dim: usize) -> Result<()> {
    if let Some(f) = l.as_float_mut() {
        f.weight = rope::unpermute_rows(&f.weight, heads, head_dim)?;
        if let Some(b) = &f.bias {
            let col = b.clone().insert_axis(Axis(1));
            f.bias = Some(
                rope::unpermute_rows(&col, heads, head_dim)?
                    .column(0)
                    .to_owned(),
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// OPT

/// Rows of OPT's learned position table.
fn opt_position_rows(c: &ModelConfig) -> Result<usize> {
    c.max_position_embeddings
        .checked_add(OPT_POSITION_OFFSET)
        .ok_or_else(|| {
            Error::config(
                "max_position_embeddings",
                c.max_position_embeddings,
                "too large",
            )
        })
}

/// Checks the shape of every tensor [`build_opt`] takes, before any is read (see
/// [`check_llama_tensors`]).
fn check_opt_tensors<S: TensorSource>(c: &ModelConfig, w: &Weights<S>, p: &str) -> Result<()> {
    let (d, ff, e) = (c.hidden_size, c.intermediate_size, c.word_embed_proj_dim);
    w.check(&format!("{p}embed_tokens.weight"), &[c.vocab_size, e])?;
    w.check(
        &format!("{p}embed_positions.weight"),
        &[opt_position_rows(c)?, d],
    )?;
    if e != d {
        w.check(&format!("{p}project_in.weight"), &[d, e])?;
        w.check(&format!("{p}project_out.weight"), &[e, d])?;
    }
    let ln = |name: &str| -> Result<()> {
        w.check(&format!("{name}.weight"), &[d])?;
        w.check(&format!("{name}.bias"), &[d])
    };
    for i in 0..c.num_layers {
        let l = format!("{p}layers.{i}.");
        let lin = |m: &str, rows: usize, cols: usize, bias: bool| -> Result<()> {
            w.check(&format!("{l}{m}.weight"), &[rows, cols])?;
            if bias {
                w.check(&format!("{l}{m}.bias"), &[rows])?;
            }
            Ok(())
        };
        lin("self_attn.q_proj", d, d, c.qkv_bias)?;
        lin("self_attn.k_proj", d, d, c.qkv_bias)?;
        lin("self_attn.v_proj", d, d, c.qkv_bias)?;
        lin("self_attn.out_proj", d, d, c.o_bias)?;
        lin("fc1", ff, d, c.mlp_bias)?;
        lin("fc2", d, ff, c.mlp_bias)?;
        ln(&format!("{l}self_attn_layer_norm"))?;
        ln(&format!("{l}final_layer_norm"))?;
    }
    if c.norm_before {
        ln(&format!("{p}final_layer_norm"))?;
    }
    if !c.tie_word_embeddings {
        w.check("lm_head.weight", &[c.vocab_size, e])?;
    }
    Ok(())
}

fn build_opt<S: TensorSource>(config: ModelConfig, w: &mut Weights<S>) -> Result<Model> {
    config.validate()?;
    let c = &config;
    // Checkpoints saved from OPTForCausalLM prefix `model.`; older ones saved OPTModel without it.
    let p = if w.has("model.decoder.embed_tokens.weight") {
        "model.decoder."
    } else {
        "decoder."
    };
    check_opt_tensors(c, w, p)?;
    let (d, ff, e) = (c.hidden_size, c.intermediate_size, c.word_embed_proj_dim);
    let embed_tokens = w.take2(&format!("{p}embed_tokens.weight"), c.vocab_size, e)?;
    let embed_positions = w.take2(
        &format!("{p}embed_positions.weight"),
        opt_position_rows(c)?,
        d,
    )?;
    let (project_in, project_out) = if e != d {
        (
            Some(linear(w, &format!("{p}project_in.weight"), None, d, e)?),
            Some(linear(w, &format!("{p}project_out.weight"), None, e, d)?),
        )
    } else {
        (None, None)
    };
    let ln = |w: &mut Weights<S>, name: &str| -> Result<Norm> {
        let g = w.take1(&format!("{name}.weight"), d)?;
        let b = w.take1(&format!("{name}.bias"), d)?;
        Norm::new(NormKind::Layer, g, Some(b), c.norm_eps)
    };
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let l = format!("{p}layers.{i}.");
        let lin = |w: &mut Weights<S>, m: &str, n: usize, k: usize, bias: bool| {
            let b = bias.then(|| format!("{l}{m}.bias"));
            linear(w, &format!("{l}{m}.weight"), b.as_deref(), n, k)
        };
        let q_proj = lin(w, "self_attn.q_proj", d, d, c.qkv_bias)?;
        let k_proj = lin(w, "self_attn.k_proj", d, d, c.qkv_bias)?;
        let v_proj = lin(w, "self_attn.v_proj", d, d, c.qkv_bias)?;
        let o_proj = lin(w, "self_attn.out_proj", d, d, c.o_bias)?;
        let fc1 = lin(w, "fc1", ff, d, c.mlp_bias)?;
        let fc2 = lin(w, "fc2", d, ff, c.mlp_bias)?;
        layers.push(DecoderLayer {
            index: i,
            family: Family::Opt,
            norm_before: c.norm_before,
            attn: AttentionSpec {
                num_heads: c.num_heads,
                num_kv_heads: c.num_heads,
                head_dim: c.head_dim,
                rope: None,
            },
            attn_norm: ln(w, &format!("{l}self_attn_layer_norm"))?,
            mlp_norm: ln(w, &format!("{l}final_layer_norm"))?,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            mlp: Mlp::Relu { fc1, fc2 },
        });
    }
    // HF builds the decoder's final LayerNorm only for pre-LN models.
    let final_norm = if c.norm_before {
        Some(ln(w, &format!("{p}final_layer_norm"))?)
    } else {
        None
    };
    let lm_head = if c.tie_word_embeddings {
        w.skip("lm_head.weight");
        None
    } else {
        Some(linear(w, "lm_head.weight", None, c.vocab_size, e)?)
    };
    Ok(Model {
        config,
        embed_tokens,
        embed_positions: Some(embed_positions),
        project_in,
        layers,
        final_norm,
        project_out,
        lm_head,
        load_info: in_memory_info(),
    })
}
