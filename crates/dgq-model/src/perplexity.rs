//! Perplexity over a token stream, the common ("GPTQ / HF") way.
//!
//! The whole text is tokenized at once (no BOS) and cut into windows of `ctx` tokens starting
//! every `stride` tokens (default `stride = ctx`: non-overlapping windows, and a final partial
//! window is dropped). Each window is run from position 0. In a non-overlapping window every
//! token but the first is scored (`ctx − 1` predictions); with `stride < ctx` only the tokens not
//! scored by the previous window are (as in the Hugging Face perplexity guide).
//! `ppl = exp(Σ NLL / scored tokens)`, with NLL accumulated in f64.

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::model::Model;

/// Anything that maps a token window to next-token logits `[T, vocab]`.
pub trait CausalLm {
    /// Vocabulary size (logits width).
    fn vocab_size(&self) -> usize;
    /// Logits for `tokens` as one sequence from position 0.
    fn logits(&self, tokens: &[u32]) -> Result<Array2<f32>>;
}

impl CausalLm for Model {
    fn vocab_size(&self) -> usize {
        Model::vocab_size(self)
    }
    fn logits(&self, tokens: &[u32]) -> Result<Array2<f32>> {
        self.forward(tokens)
    }
}

/// Window layout of a perplexity run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PplConfig {
    /// Tokens per window.
    pub ctx: usize,
    /// Distance between window starts; `None` means `ctx` (non-overlapping).
    pub stride: Option<usize>,
    /// Evaluate at most this many windows (the first ones); `None` for all.
    pub max_windows: Option<usize>,
}

impl Default for PplConfig {
    fn default() -> Self {
        PplConfig {
            ctx: 2048,
            stride: None,
            max_windows: None,
        }
    }
}

/// Progress after each window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PplProgress {
    /// Windows done.
    pub window: usize,
    /// Windows in the run.
    pub windows: usize,
    /// Perplexity over the windows done so far.
    pub running_ppl: f64,
}

/// Outcome of a perplexity run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PplResult {
    /// `exp(nll / tokens)`.
    pub ppl: f64,
    /// Summed negative log-likelihood (nats).
    pub nll: f64,
    /// Scored tokens.
    pub tokens: usize,
    /// Windows evaluated.
    pub windows: usize,
}

/// Start offsets and first scored offset (within the window) of every window.
fn windows(n: usize, cfg: &PplConfig) -> Result<Vec<(usize, usize)>> {
    if cfg.ctx < 2 {
        return Err(Error::argument(
            "ctx",
            cfg.ctx,
            "a window needs at least 2 tokens",
        ));
    }
    let stride = cfg.stride.unwrap_or(cfg.ctx);
    if stride == 0 || stride > cfg.ctx {
        return Err(Error::argument("stride", stride, "must be in 1..=ctx"));
    }
    if cfg.max_windows == Some(0) {
        return Err(Error::argument(
            "max_windows",
            0,
            "need at least one window (None for all)",
        ));
    }
    let mut out = Vec::new();
    let mut prev_end = 0usize;
    let mut begin = 0usize;
    while begin + cfg.ctx <= n {
        let end = begin + cfg.ctx;
        let first = prev_end.saturating_sub(begin).max(1);
        out.push((begin, first));
        prev_end = end;
        begin += stride;
        if cfg.max_windows.is_some_and(|m| out.len() >= m) {
            break;
        }
    }
    if out.is_empty() {
        return Err(Error::argument(
            "tokens",
            n,
            "fewer tokens than one window of ctx",
        ));
    }
    Ok(out)
}

/// Perplexity of `model` on `tokens` (see the module docs for the protocol); `progress` is
/// called after every window.
pub fn perplexity<M: CausalLm + ?Sized>(
    model: &M,
    tokens: &[u32],
    cfg: &PplConfig,
    progress: &mut dyn FnMut(PplProgress),
) -> Result<PplResult> {
    let wins = windows(tokens.len(), cfg)?;
    let vocab = model.vocab_size();
    let (mut nll, mut count) = (0.0f64, 0usize);
    for (w, &(begin, first)) in wins.iter().enumerate() {
        let win = &tokens[begin..begin + cfg.ctx];
        let logits = model.logits(win)?;
        if logits.dim() != (win.len(), vocab) {
            return Err(Error::shape(
                "logits",
                format!("{:?}", (win.len(), vocab)),
                format!("{:?}", logits.dim()),
            ));
        }
        // Row j − 1 of the logits predicts token j.
        for (j, &token) in win.iter().enumerate().skip(first) {
            let row = logits.row(j - 1);
            let target = token as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let t = row.get(target).copied().ok_or(Error::TokenOutOfRange {
                token,
                position: begin + j,
                vocab_size: vocab,
            })?;
            let l = lse - t as f64;
            if !l.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("logits of window {w}"),
                });
            }
            nll += l;
            count += 1;
        }
        progress(PplProgress {
            window: w + 1,
            windows: wins.len(),
            running_ppl: (nll / count as f64).exp(),
        });
    }
    Ok(PplResult {
        ppl: (nll / count as f64).exp(),
        nll,
        tokens: count,
        windows: wins.len(),
    })
}

/// Reads a text file for evaluation (WikiText-2's `wiki.test.tokens`, or any UTF-8 text), as is.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_overlapping_windows_score_all_but_first() {
        let cfg = PplConfig {
            ctx: 4,
            stride: None,
            max_windows: None,
        };
        assert_eq!(windows(10, &cfg).unwrap(), vec![(0, 1), (4, 1)]);
    }

    #[test]
    fn zero_max_windows_is_an_error_not_one_window() {
        let cfg = PplConfig {
            ctx: 4,
            stride: None,
            max_windows: Some(0),
        };
        assert!(matches!(
            windows(10, &cfg),
            Err(Error::Argument {
                name: "max_windows",
                ..
            })
        ));
    }

    #[test]
    fn strided_windows_score_only_new_tokens() {
        let cfg = PplConfig {
            ctx: 4,
            stride: Some(2),
            max_windows: Some(3),
        };
        // Window 0 scores 1..4; window 1 (2..6) scores its offsets 2,3 (tokens 4,5); window 2 likewise.
        assert_eq!(windows(10, &cfg).unwrap(), vec![(0, 1), (2, 2), (4, 2)]);
    }

    #[test]
    fn bad_window_arguments_are_errors() {
        let c = |ctx, stride| PplConfig {
            ctx,
            stride,
            max_windows: None,
        };
        assert!(matches!(
            windows(10, &c(1, None)),
            Err(Error::Argument { .. })
        ));
        assert!(matches!(
            windows(10, &c(4, Some(0))),
            Err(Error::Argument { .. })
        ));
        assert!(matches!(
            windows(10, &c(4, Some(5))),
            Err(Error::Argument { .. })
        ));
        assert!(matches!(
            windows(3, &c(4, None)),
            Err(Error::Argument { .. })
        ));
    }

    /// A model whose logits put probability p on the true next token: ppl must be 1/p.
    struct Oracle {
        next: Vec<u32>,
        vocab: usize,
        p: f64,
    }
    impl CausalLm for Oracle {
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn logits(&self, tokens: &[u32]) -> Result<Array2<f32>> {
            // logit of target = ln(p·(V−1)/(1−p)), others 0 → softmax gives p on the target.
            let hit = (self.p * (self.vocab as f64 - 1.0) / (1.0 - self.p)).ln() as f32;
            let mut l = Array2::zeros((tokens.len(), self.vocab));
            for (j, &t) in tokens.iter().enumerate() {
                l[[j, self.next[t as usize] as usize]] = hit;
            }
            Ok(l)
        }
    }

    #[test]
    fn oracle_perplexity_is_inverse_probability() {
        let vocab = 7;
        let next: Vec<u32> = (0..vocab as u32)
            .map(|t| (t * 3 + 1) % vocab as u32)
            .collect();
        let mut toks = vec![0u32];
        for _ in 0..40 {
            let last = *toks.last().unwrap();
            toks.push(next[last as usize]);
        }
        let m = Oracle {
            next,
            vocab,
            p: 0.25,
        };
        let mut calls = 0;
        let r = perplexity(
            &m,
            &toks,
            &PplConfig {
                ctx: 8,
                stride: None,
                max_windows: None,
            },
            &mut |_| calls += 1,
        )
        .unwrap();
        assert_eq!(r.windows, 5);
        assert_eq!(calls, 5);
        assert_eq!(r.tokens, 5 * 7);
        assert!((r.ppl - 4.0).abs() < 1e-5, "ppl {}", r.ppl);
    }
}
