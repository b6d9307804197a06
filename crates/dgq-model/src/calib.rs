//! Calibration data: token windows drawn from a text with a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How calibration windows are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibConfig {
    /// Number of windows.
    pub windows: usize,
    /// Tokens per window.
    pub ctx: usize,
    /// Seed of the window start positions (ChaCha8): same seed and text → same windows.
    pub seed: u64,
}

impl Default for CalibConfig {
    /// 32 windows × 512 tokens, seed 0.
    fn default() -> Self {
        CalibConfig {
            windows: 32,
            ctx: 512,
            seed: 0,
        }
    }
}

/// Draws `cfg.windows` windows of `cfg.ctx` consecutive tokens at uniformly random starts
/// (independently, as GPTQ/DGQ do; windows may overlap). Deterministic given the seed.
///
/// Errors: zero windows, `ctx < 1`, or fewer tokens than one window.
pub fn sample_windows(tokens: &[u32], cfg: &CalibConfig) -> Result<Vec<Vec<u32>>> {
    if cfg.windows == 0 {
        return Err(Error::argument(
            "windows",
            0,
            "need at least one calibration window",
        ));
    }
    if cfg.ctx == 0 {
        return Err(Error::argument(
            "ctx",
            0,
            "calibration windows need at least one token",
        ));
    }
    if tokens.len() < cfg.ctx {
        return Err(Error::argument(
            "calibration text",
            format!("{} tokens", tokens.len()),
            "shorter than one calibration window (ctx)",
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let last = tokens.len() - cfg.ctx;
    Ok((0..cfg.windows)
        .map(|_| {
            let start = rng.random_range(0..=last);
            tokens[start..start + cfg.ctx].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_deterministic_and_in_range() {
        let toks: Vec<u32> = (0..1000).collect();
        let cfg = CalibConfig {
            windows: 5,
            ctx: 64,
            seed: 7,
        };
        let a = sample_windows(&toks, &cfg).unwrap();
        let b = sample_windows(&toks, &cfg).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        for w in &a {
            assert_eq!(w.len(), 64);
            // Consecutive tokens of the text.
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
        }
        let c = sample_windows(&toks, &CalibConfig { seed: 8, ..cfg }).unwrap();
        assert_ne!(a, c);
        assert!(sample_windows(&toks[..10], &cfg).is_err());
    }
}
