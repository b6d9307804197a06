//! Incremental decoding behind one trait, so generation, chat and benchmarks run the same way on
//! every device: the CPU reference ([`CpuDecoder`]) and the GPU decoder (crate `dgq-gpu`).
//!
//! A [`Decoder`] holds one sequence and its KV cache. [`Decoder::extend`] appends tokens (the
//! whole prompt at once is a prefill, one token a decode step) and returns the next-token logits
//! after the last of them.

use crate::error::{Error, Result};
use crate::model::{KvCache, Model};

/// One sequence being decoded, with its KV cache.
pub trait Decoder {
    /// Vocabulary size (logits width).
    fn vocab_size(&self) -> usize;
    /// Longest sequence (prompt and generated tokens together) this decoder can hold.
    fn max_context(&self) -> usize;
    /// Tokens held so far.
    fn len(&self) -> usize;
    /// True when nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets the sequence (the cache's memory stays allocated).
    fn reset(&mut self) -> Result<()>;
    /// Appends `tokens` (at least one) after the held ones and returns the logits `[vocab]`
    /// predicting the token after the last of them. An error, with nothing appended, if the
    /// sequence would exceed [`max_context`](Decoder::max_context).
    fn extend(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
}

/// The CPU reference model as a [`Decoder`] (f32, its KV cache on the host).
#[derive(Debug)]
pub struct CpuDecoder<'a> {
    model: &'a Model,
    cache: KvCache,
}

impl<'a> CpuDecoder<'a> {
    /// An empty sequence on `model`.
    pub fn new(model: &'a Model) -> Self {
        CpuDecoder {
            model,
            cache: model.new_cache(),
        }
    }
}

/// Checks that `adding` tokens fit after `held` in a context of `max`.
pub fn check_context(held: usize, adding: usize, max: usize) -> Result<()> {
    if held.checked_add(adding).is_none_or(|total| total > max) {
        return Err(Error::ContextOverflow { held, adding, max });
    }
    Ok(())
}

impl Decoder for CpuDecoder<'_> {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    fn max_context(&self) -> usize {
        self.model.config.max_position_embeddings
    }
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn reset(&mut self) -> Result<()> {
        self.cache = self.model.new_cache();
        Ok(())
    }
    fn extend(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::argument("tokens", "[]", "needs at least one token"));
        }
        check_context(self.len(), tokens.len(), self.max_context())?;
        let logits = self.model.forward_cached(tokens, &mut self.cache)?;
        Ok(logits.row(logits.nrows() - 1).to_vec())
    }
}
