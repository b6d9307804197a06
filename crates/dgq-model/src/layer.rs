//! One decoder layer (attention + MLP) of either family, runnable on its own so a layer-wise
//! calibration driver can feed it captured inputs, swap its linears and run it again.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::config::Family;
use crate::error::{Error, Result};
use crate::linear::{Linear, LinearSlot};
use crate::norm::Norm;
use crate::ops::{self, Par};
use crate::rope::Rope;
use crate::stages::{run_layer, Block, LayerBackend, Wiring};

/// Shape of the attention of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; each serves `num_heads / num_kv_heads` query heads (GQA).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Rotary embedding (LLaMA family); `None` for OPT's learned absolute positions.
    pub rope: Option<Rope>,
}

/// The feed-forward block.
#[derive(Debug)]
pub enum Mlp {
    /// LLaMA family: `down(silu(gate(x)) ⊙ up(x))`.
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// OPT: `fc2(relu(fc1(x)))`.
    Relu { fc1: Linear, fc2: Linear },
}

/// Names one of the two norms of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormSlot {
    /// Before attention (`input_layernorm`, OPT `self_attn_layer_norm`).
    Attn,
    /// Before the MLP (`post_attention_layernorm`, OPT `final_layer_norm`).
    Mlp,
}

/// Keys and values of the positions already processed by one layer (rotated keys).
#[derive(Debug, Clone, Default)]
pub struct LayerKvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
}

impl LayerKvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Drops every cached position.
    pub fn clear(&mut self) {
        self.k.clear();
        self.v.clear();
        self.len = 0;
    }
}

/// Receives the input of every linear layer right before it runs: `(slot, x[M, K])`.
/// Q, K and V receive the same matrix (as do Gate and Up); see [`LinearSlot::input_site`].
pub type CaptureHook<'a> = dyn FnMut(LinearSlot, ArrayView2<f32>) + 'a;

/// A decoder layer: norms, attention projections and the MLP, all public so calibration can
/// edit norms and swap linears in place.
#[derive(Debug)]
pub struct DecoderLayer {
    /// Position of the layer in the model.
    pub index: usize,
    /// Layer structure.
    pub family: Family,
    /// Pre-LN (norm, sublayer, residual add) or post-LN (sublayer, residual add, norm).
    pub norm_before: bool,
    /// Attention shape and rotary.
    pub attn: AttentionSpec,
    /// Norm of the attention block.
    pub attn_norm: Norm,
    /// Norm of the MLP block.
    pub mlp_norm: Norm,
    /// Query projection `[num_heads·head_dim, d]`.
    pub q_proj: Linear,
    /// Key projection `[num_kv_heads·head_dim, d]`.
    pub k_proj: Linear,
    /// Value projection `[num_kv_heads·head_dim, d]`.
    pub v_proj: Linear,
    /// Output projection `[d, num_heads·head_dim]`.
    pub o_proj: Linear,
    /// Feed-forward block.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// Residual width d.
    pub fn hidden_size(&self) -> usize {
        self.attn_norm.dim()
    }

    /// The slots of this layer, in execution order.
    pub fn slots(&self) -> &'static [LinearSlot] {
        match self.mlp {
            Mlp::SwiGlu { .. } => &LinearSlot::LLAMA,
            Mlp::Relu { .. } => &LinearSlot::OPT,
        }
    }

    /// The linear in `slot`; an error if this family has no such slot.
    pub fn linear(&self, slot: LinearSlot) -> Result<&Linear> {
        match (slot, &self.mlp) {
            (LinearSlot::Q, _) => Ok(&self.q_proj),
            (LinearSlot::K, _) => Ok(&self.k_proj),
            (LinearSlot::V, _) => Ok(&self.v_proj),
            (LinearSlot::O, _) => Ok(&self.o_proj),
            (LinearSlot::Gate, Mlp::SwiGlu { gate, .. }) => Ok(gate),
            (LinearSlot::Up, Mlp::SwiGlu { up, .. }) => Ok(up),
            (LinearSlot::Down, Mlp::SwiGlu { down, .. }) => Ok(down),
            (LinearSlot::Fc1, Mlp::Relu { fc1, .. }) => Ok(fc1),
            (LinearSlot::Fc2, Mlp::Relu { fc2, .. }) => Ok(fc2),
            _ => Err(self.no_slot(slot)),
        }
    }

    /// Mutable access to the linear in `slot` (to edit float weights or [`Linear::replace`] it).
    pub fn linear_mut(&mut self, slot: LinearSlot) -> Result<&mut Linear> {
        let err = self.no_slot(slot);
        match (slot, &mut self.mlp) {
            (LinearSlot::Q, _) => Ok(&mut self.q_proj),
            (LinearSlot::K, _) => Ok(&mut self.k_proj),
            (LinearSlot::V, _) => Ok(&mut self.v_proj),
            (LinearSlot::O, _) => Ok(&mut self.o_proj),
            (LinearSlot::Gate, Mlp::SwiGlu { gate, .. }) => Ok(gate),
            (LinearSlot::Up, Mlp::SwiGlu { up, .. }) => Ok(up),
            (LinearSlot::Down, Mlp::SwiGlu { down, .. }) => Ok(down),
            (LinearSlot::Fc1, Mlp::Relu { fc1, .. }) => Ok(fc1),
            (LinearSlot::Fc2, Mlp::Relu { fc2, .. }) => Ok(fc2),
            _ => Err(err),
        }
    }

    fn no_slot(&self, slot: LinearSlot) -> Error {
        Error::argument(
            "slot",
            format!("{slot:?}"),
            "this layer's family has no such projection",
        )
    }

    /// The norm in `slot`.
    pub fn norm(&self, slot: NormSlot) -> &Norm {
        match slot {
            NormSlot::Attn => &self.attn_norm,
            NormSlot::Mlp => &self.mlp_norm,
        }
    }

    /// Mutable norm (smoothing folds divisors into its weight/bias).
    pub fn norm_mut(&mut self, slot: NormSlot) -> &mut Norm {
        match slot {
            NormSlot::Attn => &mut self.attn_norm,
            NormSlot::Mlp => &mut self.mlp_norm,
        }
    }

    /// The wiring of this layer: its family and where its norms sit.
    pub fn wiring(&self) -> Wiring {
        Wiring {
            family: self.family,
            norm_before: self.norm_before,
        }
    }

    /// The norm whose output is exactly `slot`'s input, if any: Attn for Q/K/V, Mlp for
    /// Gate/Up/Fc1 — only in pre-LN layers (in post-LN ones the norm sits after the residual).
    pub fn input_norm(&self, slot: LinearSlot) -> Option<NormSlot> {
        self.wiring().norm_feeding(slot)
    }

    /// Checks a residual-stream input `h[T, d]`: its width and that it is finite.
    pub fn check_input(&self, hidden: ArrayView2<f32>) -> Result<()> {
        let d = self.hidden_size();
        if hidden.ncols() != d {
            return Err(Error::shape(
                format!("layer {} input columns", self.index),
                d,
                hidden.ncols(),
            ));
        }
        if hidden.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("input of layer {}", self.index),
            });
        }
        Ok(())
    }

    /// A block's input from the residual stream `h`: `norm(h)` for `Some(norm)` (pre-LN), a copy
    /// of `h` for `None` (see [`Wiring::input_norm`]).
    pub fn block_input(&self, norm: Option<NormSlot>, h: ArrayView2<f32>) -> Result<Array2<f32>> {
        match norm {
            Some(n) => self.norm(n).forward(h),
            None => Ok(h.to_owned()),
        }
    }

    /// The attention sub-block up to O's input: Q/K/V projections of the (already normed) `x[T, d]`,
    /// rotary at positions `start_pos..`, causal attention; returns the context `[T, H·hd]`.
    /// With [`mlp_hidden`](Self::mlp_hidden) and [`add_residual`](Self::add_residual) this lets a
    /// calibration driver run a layer piece by piece ("true sequential": later linears see
    /// earlier quantized ones).
    pub fn attention_context(&self, x: ArrayView2<f32>, start_pos: usize) -> Result<Array2<f32>> {
        self.attention_with(x, start_pos, None)
    }

    /// [`attention_context`](Self::attention_context) that attends to (and extends) `cache` when
    /// given; `start_pos` must then equal the cache length.
    fn attention_with(
        &self,
        x: ArrayView2<f32>,
        start_pos: usize,
        cache: Option<&mut LayerKvCache>,
    ) -> Result<Array2<f32>> {
        let (q, k, v) = self.qkv(x, start_pos)?;
        let spec = &self.attn;
        match cache {
            Some(c) => {
                c.k.extend(k.iter());
                c.v.extend(v.iter());
                c.len += k.nrows();
                let kv = spec.num_kv_heads * spec.head_dim;
                let ks = ArrayView2::from_shape((c.len, kv), &c.k)
                    .map_err(|e| Error::shape("KV cache", kv, e))?;
                let vs = ArrayView2::from_shape((c.len, kv), &c.v)
                    .map_err(|e| Error::shape("KV cache", kv, e))?;
                attention(spec, q.view(), ks, vs, start_pos)
            }
            None => attention(spec, q.view(), k.view(), v.view(), 0),
        }
    }

    /// The MLP sub-block up to the last linear's input: `silu(gate(x)) ⊙ up(x)` (LLaMA) or
    /// `relu(fc1(x))` (OPT) of the (already normed) `x[T, d]`.
    pub fn mlp_hidden(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        match &self.mlp {
            Mlp::SwiGlu { gate, up, .. } => {
                let mut g = gate.forward(x)?;
                let u = up.forward(x)?;
                if g.dim() != u.dim() {
                    return Err(Error::shape(
                        "gate/up outputs",
                        format!("{:?}", g.dim()),
                        format!("{:?}", u.dim()),
                    ));
                }
                g.zip_mut_with(&u, |g, &u| *g = ops::silu(*g) * u);
                Ok(g)
            }
            Mlp::Relu { fc1, .. } => {
                let mut f = fc1.forward(x)?;
                f.mapv_inplace(|v| v.max(0.0));
                Ok(f)
            }
        }
    }

    /// The residual add of a block: `h += slot(x)` for its last linear (O, Down or Fc2). An
    /// output of another shape than `h` is an error (never broadcast).
    pub fn add_residual(
        &self,
        slot: LinearSlot,
        x: ArrayView2<f32>,
        h: &mut Array2<f32>,
    ) -> Result<()> {
        let y = self.linear(slot)?.forward(x)?;
        if y.dim() != h.dim() {
            return Err(Error::shape(
                format!("layer {} {slot:?} output (residual add)", self.index),
                format!("{:?}", h.dim()),
                format!("{:?}", y.dim()),
            ));
        }
        *h += &y;
        Ok(())
    }

    /// Q, K, V of `x` with rotary applied at positions `start_pos..`, widths checked.
    fn qkv(
        &self,
        x: ArrayView2<f32>,
        start_pos: usize,
    ) -> Result<(Array2<f32>, Array2<f32>, Array2<f32>)> {
        let mut q = self.q_proj.forward(x)?;
        let mut k = self.k_proj.forward(x)?;
        let v = self.v_proj.forward(x)?;
        let spec = &self.attn;
        // The fields are public, so a caller may have installed projections of other widths.
        let (qd, kvd) = (
            spec.num_heads * spec.head_dim,
            spec.num_kv_heads * spec.head_dim,
        );
        if q.ncols() != qd || k.ncols() != kvd || v.ncols() != kvd {
            return Err(Error::shape(
                format!("layer {} q/k/v widths", self.index),
                format!("{qd} / {kvd} / {kvd}"),
                format!("{} / {} / {}", q.ncols(), k.ncols(), v.ncols()),
            ));
        }
        if let Some(rope) = &spec.rope {
            let (cos, sin) = rope.tables(start_pos, q.nrows());
            rope.apply_with(q.view_mut(), &cos, &sin);
            rope.apply_with(k.view_mut(), &cos, &sin);
        }
        Ok((q, k, v))
    }

    /// Runs the layer on one sequence `hidden[T, d]` at positions `start_pos..start_pos+T`
    /// (causal attention within the window).
    pub fn forward(&self, hidden: ArrayView2<f32>, start_pos: usize) -> Result<Array2<f32>> {
        self.forward_with(hidden, start_pos, None, None)
    }

    /// [`forward`](Self::forward), calling `hook(slot, x)` with the input of every linear.
    pub fn forward_capture(
        &self,
        hidden: ArrayView2<f32>,
        start_pos: usize,
        hook: &mut CaptureHook<'_>,
    ) -> Result<Array2<f32>> {
        self.forward_with(hidden, start_pos, None, Some(hook))
    }

    /// Runs the layer on new positions, attending to (and extending) `cache`; the new tokens sit
    /// at positions `cache.len()..`.
    pub fn forward_cached(
        &self,
        hidden: ArrayView2<f32>,
        cache: &mut LayerKvCache,
    ) -> Result<Array2<f32>> {
        let start = cache.len;
        self.forward_with(hidden, start, Some(cache), None)
    }

    /// The general form: optional KV cache (then `start_pos` must equal `cache.len()`) and
    /// optional capture hook. Runs [`run_layer`] on the CPU backend.
    pub fn forward_with(
        &self,
        hidden: ArrayView2<f32>,
        start_pos: usize,
        cache: Option<&mut LayerKvCache>,
        hook: Option<&mut CaptureHook<'_>>,
    ) -> Result<Array2<f32>> {
        self.check_input(hidden)?;
        if let Some(c) = &cache {
            if c.len != start_pos {
                return Err(Error::argument(
                    "start_pos",
                    start_pos,
                    "must equal the KV cache length",
                ));
            }
        }
        let mut cpu = CpuLayer {
            layer: self,
            start_pos,
            cache,
            hook,
        };
        let mut h = hidden.to_owned();
        run_layer(self.wiring(), &mut cpu, &mut h)?;
        Ok(h)
    }
}

/// The f32 CPU backend of one sequence: optional KV cache, optional capture of linear inputs.
struct CpuLayer<'a, 'c, 'h, 'f> {
    layer: &'a DecoderLayer,
    start_pos: usize,
    cache: Option<&'c mut LayerKvCache>,
    hook: Option<&'h mut CaptureHook<'f>>,
}

impl CpuLayer<'_, '_, '_, '_> {
    fn capture(&mut self, slots: &[LinearSlot], x: ArrayView2<f32>) {
        if let Some(h) = self.hook.as_mut() {
            for &s in slots {
                h(s, x);
            }
        }
    }
}

impl LayerBackend for CpuLayer<'_, '_, '_, '_> {
    type Hidden = Array2<f32>;
    type Act = Array2<f32>;

    fn block_input(
        &mut self,
        _block: Block,
        norm: Option<NormSlot>,
        h: &Array2<f32>,
    ) -> Result<Array2<f32>> {
        self.layer.block_input(norm, h.view())
    }

    fn attention(&mut self, x: Array2<f32>) -> Result<Array2<f32>> {
        let wiring = self.layer.wiring();
        self.capture(wiring.first_linears(Block::Attn), x.view());
        self.layer
            .attention_with(x.view(), self.start_pos, self.cache.as_deref_mut())
    }

    fn mlp(&mut self, x: Array2<f32>) -> Result<Array2<f32>> {
        let wiring = self.layer.wiring();
        self.capture(wiring.first_linears(Block::Mlp), x.view());
        self.layer.mlp_hidden(x.view())
    }

    fn add_linear(&mut self, slot: LinearSlot, x: Array2<f32>, h: &mut Array2<f32>) -> Result<()> {
        self.capture(&[slot], x.view());
        self.layer.add_residual(slot, x.view(), h)
    }

    fn norm_hidden(&mut self, norm: NormSlot, h: &mut Array2<f32>) -> Result<()> {
        *h = self.layer.norm(norm).forward(h.view())?;
        Ok(())
    }
}

/// Causal multi-head attention with GQA. `q[T, H·hd]` for positions `past..past+T`,
/// `k, v[S, Hkv·hd]` for positions `0..S` where `S = past + T` (or `S = T`, `past = 0`).
fn attention(
    spec: &AttentionSpec,
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    past: usize,
) -> Result<Array2<f32>> {
    let (t, s) = (q.nrows(), k.nrows());
    let hd = spec.head_dim;
    if spec.num_kv_heads == 0 || spec.num_heads % spec.num_kv_heads != 0 || past + t != s {
        return Err(Error::shape(
            "attention (heads / cached length)",
            past + t,
            s,
        ));
    }
    let group = spec.num_heads / spec.num_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads: Vec<Result<Array2<f32>>> = (0..spec.num_heads)
        .into_par_iter()
        .map(|h| {
            let kvh = h / group;
            let qh = q.slice(s![.., h * hd..(h + 1) * hd]);
            let kh = k.slice(s![.., kvh * hd..(kvh + 1) * hd]);
            let vh = v.slice(s![.., kvh * hd..(kvh + 1) * hd]);
            let mut scores = ops::matmul_nt(qh, kh, Par::Single)?;
            for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                let visible = past + i + 1;
                let row = row
                    .as_slice_mut()
                    .ok_or_else(|| Error::shape("score row", "contiguous", "strided"))?;
                let (seen, future) = row.split_at_mut(visible);
                for x in seen.iter_mut() {
                    *x *= scale;
                }
                ops::softmax_in_place(seen);
                future.fill(0.0);
            }
            ops::matmul_nn(scores.view(), vh, Par::Single)
        })
        .collect();
    let mut out = Array2::<f32>::zeros((t, spec.num_heads * hd));
    for (h, ctx) in heads.into_iter().enumerate() {
        out.slice_mut(s![.., h * hd..(h + 1) * hd]).assign(&ctx?);
    }
    Ok(out)
}
