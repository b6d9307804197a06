//! The stages of a decoder layer, stated once for every device and every use.
//!
//! A LLaMA or OPT layer is two residual blocks, attention then MLP, each of the same shape:
//!
//! ```text
//! x = norm(h)  if pre-LN, else h              block input   (Q/K/V or Gate/Up/Fc1 read it)
//! y = attention(x) | mlp_hidden(x)            last input    (O or Down/Fc2 reads it)
//! h = h + last(y)                             residual add  (shapes checked, no broadcasting)
//! h = norm(h)  if post-LN                     (OPT with do_layer_norm_before = false)
//! ```
//!
//! [`run_layer`] is that recipe; what runs each stage is a [`LayerBackend`]. The CPU forward
//! ([`DecoderLayer::forward_with`](crate::DecoderLayer::forward_with)) runs one sequence in f32
//! and reports each linear's input to a capture hook; the calibration
//! ([`quantize_model`](crate::quantize_model)) runs all calibration windows at once and, at each
//! stage, measures the stage's input, folds smoothing into the producer and quantizes the
//! consumers before running them ("true sequential"); a GPU backend runs fused kernels (norm +
//! activation quantization, the residual add in the GEMM epilogue), its `Act` being quantized
//! codes rather than f32.
//!
//! The methods are coarse on purpose — a whole attention or MLP body per call — so a backend can
//! fuse inside a stage, while the wiring between stages (where the norms sit, what is added to
//! the residual stream) stays here.

use crate::config::Family;
use crate::error::Result;
use crate::layer::NormSlot;
use crate::linear::{InputSite, LinearSlot};

/// One of the two residual blocks of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Block {
    /// Self-attention: Q/K/V, attention, O.
    Attn,
    /// Feed-forward: Gate/Up and Down (LLaMA), Fc1 and Fc2 (OPT).
    Mlp,
}

impl Block {
    /// Both blocks, in execution order.
    pub const ALL: [Block; 2] = [Block::Attn, Block::Mlp];

    /// The norm that belongs to this block (before it in pre-LN, after it in post-LN).
    pub fn norm(self) -> NormSlot {
        match self {
            Block::Attn => NormSlot::Attn,
            Block::Mlp => NormSlot::Mlp,
        }
    }

    /// The activation the block's first linears read.
    pub fn input_site(self) -> InputSite {
        match self {
            Block::Attn => InputSite::AttnIn,
            Block::Mlp => InputSite::MlpIn,
        }
    }

    /// The activation the block's last linear reads.
    pub fn last_site(self) -> InputSite {
        match self {
            Block::Attn => InputSite::AttnOut,
            Block::Mlp => InputSite::MlpHidden,
        }
    }
}

/// What fixes the wiring of a layer: its family (which MLP) and where its norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    /// Layer structure (LLaMA family: SwiGLU MLP; OPT: ReLU MLP).
    pub family: Family,
    /// Pre-LN (norm, sublayer, residual add) or post-LN (sublayer, residual add, norm).
    pub norm_before: bool,
}

impl Wiring {
    /// The norm applied to the residual stream to make `block`'s input: only in pre-LN layers.
    pub fn input_norm(self, block: Block) -> Option<NormSlot> {
        self.norm_before.then_some(block.norm())
    }

    /// The norm applied to the residual stream after `block`'s residual add: only in post-LN.
    pub fn output_norm(self, block: Block) -> Option<NormSlot> {
        (!self.norm_before).then_some(block.norm())
    }

    /// The linears that read `block`'s input, in execution order.
    pub fn first_linears(self, block: Block) -> &'static [LinearSlot] {
        match (block, self.family) {
            (Block::Attn, _) => &[LinearSlot::Q, LinearSlot::K, LinearSlot::V],
            (Block::Mlp, Family::Opt) => &[LinearSlot::Fc1],
            (Block::Mlp, _) => &[LinearSlot::Gate, LinearSlot::Up],
        }
    }

    /// The linear whose output is added to the residual stream: O, Down or Fc2.
    pub fn last_linear(self, block: Block) -> LinearSlot {
        match (block, self.family) {
            (Block::Attn, _) => LinearSlot::O,
            (Block::Mlp, Family::Opt) => LinearSlot::Fc2,
            (Block::Mlp, _) => LinearSlot::Down,
        }
    }

    /// The norm whose output is exactly `slot`'s input, if any (pre-LN: Attn for Q/K/V, Mlp for
    /// Gate/Up/Fc1): where a smoothing divisor for that input can be folded.
    pub fn norm_feeding(self, slot: LinearSlot) -> Option<NormSlot> {
        Block::ALL
            .into_iter()
            .find(|&b| self.first_linears(b).contains(&slot))
            .and_then(|b| self.input_norm(b))
    }
}

/// Runs the stages of one layer; implemented once per device (and per use of the CPU).
///
/// `Hidden` is the residual stream, `Act` the input of a linear. [`run_layer`] calls, per block:
/// `block_input`, then `attention` or `mlp`, then `add_linear`, then `norm_hidden` if post-LN.
pub trait LayerBackend {
    /// The residual stream (the layer's input and output).
    type Hidden;
    /// The input of a linear (f32 on the CPU; may be quantized codes on a device).
    type Act;

    /// `block`'s input from the residual stream: `norm(h)` when `norm` is given (pre-LN), else
    /// `h` itself.
    fn block_input(
        &mut self,
        block: Block,
        norm: Option<NormSlot>,
        h: &Self::Hidden,
    ) -> Result<Self::Act>;

    /// Attention from its input to O's input: Q/K/V, rotary, causal attention over the cache.
    fn attention(&mut self, x: Self::Act) -> Result<Self::Act>;

    /// MLP from its input to the last linear's input: `silu(gate(x)) ⊙ up(x)` or `relu(fc1(x))`.
    fn mlp(&mut self, x: Self::Act) -> Result<Self::Act>;

    /// `h += slot(x)` for the block's last linear; an error if the output does not have the
    /// residual stream's shape.
    fn add_linear(&mut self, slot: LinearSlot, x: Self::Act, h: &mut Self::Hidden) -> Result<()>;

    /// `h = norm(h)` (post-LN only).
    fn norm_hidden(&mut self, norm: NormSlot, h: &mut Self::Hidden) -> Result<()>;
}

/// One decoder layer on `backend`: both residual blocks on the stream `h`, in place.
pub fn run_layer<B: LayerBackend>(
    wiring: Wiring,
    backend: &mut B,
    h: &mut B::Hidden,
) -> Result<()> {
    for block in Block::ALL {
        let x = backend.block_input(block, wiring.input_norm(block), h)?;
        let y = match block {
            Block::Attn => backend.attention(x)?,
            Block::Mlp => backend.mlp(x)?,
        };
        backend.add_linear(wiring.last_linear(block), y, h)?;
        if let Some(norm) = wiring.output_norm(block) {
            backend.norm_hidden(norm, h)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls the driver makes.
    struct Trace(Vec<String>);

    impl LayerBackend for Trace {
        type Hidden = ();
        type Act = ();
        fn block_input(&mut self, b: Block, n: Option<NormSlot>, _: &()) -> Result<()> {
            self.0.push(format!("in {b:?} {n:?}"));
            Ok(())
        }
        fn attention(&mut self, _: ()) -> Result<()> {
            self.0.push("attention".into());
            Ok(())
        }
        fn mlp(&mut self, _: ()) -> Result<()> {
            self.0.push("mlp".into());
            Ok(())
        }
        fn add_linear(&mut self, s: LinearSlot, _: (), _: &mut ()) -> Result<()> {
            self.0.push(format!("add {s:?}"));
            Ok(())
        }
        fn norm_hidden(&mut self, n: NormSlot, _: &mut ()) -> Result<()> {
            self.0.push(format!("norm {n:?}"));
            Ok(())
        }
    }

    fn trace(family: Family, norm_before: bool) -> Vec<String> {
        let mut t = Trace(Vec::new());
        run_layer(
            Wiring {
                family,
                norm_before,
            },
            &mut t,
            &mut (),
        )
        .unwrap();
        t.0
    }

    #[test]
    fn pre_and_post_ln_orders() {
        assert_eq!(
            trace(Family::Llama, true),
            [
                "in Attn Some(Attn)",
                "attention",
                "add O",
                "in Mlp Some(Mlp)",
                "mlp",
                "add Down"
            ]
        );
        assert_eq!(
            trace(Family::Opt, false),
            [
                "in Attn None",
                "attention",
                "add O",
                "norm Attn",
                "in Mlp None",
                "mlp",
                "add Fc2",
                "norm Mlp"
            ]
        );
    }

    #[test]
    fn norms_feed_only_first_linears_in_pre_ln() {
        let pre = Wiring {
            family: Family::Opt,
            norm_before: true,
        };
        assert_eq!(pre.norm_feeding(LinearSlot::K), Some(NormSlot::Attn));
        assert_eq!(pre.norm_feeding(LinearSlot::Fc1), Some(NormSlot::Mlp));
        assert_eq!(pre.norm_feeding(LinearSlot::O), None);
        assert_eq!(pre.norm_feeding(LinearSlot::Fc2), None);
        let post = Wiring {
            norm_before: false,
            ..pre
        };
        assert_eq!(post.norm_feeding(LinearSlot::Q), None);
    }
}
