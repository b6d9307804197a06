//! Round-to-nearest (RTN) quantization primitives: symmetric or asymmetric, int4 or int8,
//! per-tensor, per-channel or per-group.
//!
//! Conventions, shared by every quantizer of the crate:
//! - Rounding is round-half-to-even (`f32::round_ties_even`), so every implementation (CPU, GPU)
//!   can reproduce codes bit for bit.
//! - Symmetric: `scale = amax / qmax` (`qmax` = 7 or 127), `q = clamp(rne(w / scale), −qmax, qmax)`.
//! - Asymmetric: the range is widened to include 0 (`lo = min(min, 0)`, `hi = max(max, 0)`) so that
//!   the zero point is always a valid code: `scale = (hi − lo) / qmax` (`qmax` = 15 or 255),
//!   `z = clamp(rne(−lo / scale), 0, qmax)`, `q = clamp(rne(w / scale) + z, 0, qmax)`, `w ≈ scale·(q − z)`.
//! - An all-zero group gets scale 1 and codes 0 (any positive scale reproduces it exactly).

use ndarray::{Array2, ArrayView2};

use super::{Bits, Granularity};
use crate::error::{check_finite, check_group_size, check_range, Error, Result};

/// What to quantize and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtnConfig {
    /// Code width.
    pub bits: Bits,
    /// Symmetric (no zero point) or asymmetric.
    pub symmetric: bool,
    /// Which elements share a scale.
    pub granularity: Granularity,
}

impl Default for RtnConfig {
    /// Asymmetric int4, group size 128: the usual W4 baseline.
    fn default() -> Self {
        RtnConfig {
            bits: Bits::Int4,
            symmetric: false,
            granularity: Granularity::PerGroup(128),
        }
    }
}

/// An RTN-quantized `[N, K]` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RtnQuantized {
    /// The configuration that produced it.
    pub config: RtnConfig,
    /// Codes `[N, K]`: in `[−qmax, qmax]` (symmetric) or `[0, qmax]` (asymmetric).
    pub codes: Array2<i32>,
    /// Scales `[N, K/g]` (per-group), `[N, 1]` (per-channel) or `[1, 1]` (per-tensor).
    pub scales: Array2<f32>,
    /// Zero points, same shape as `scales`; all 0 when symmetric.
    pub zeros: Array2<i32>,
}

/// Asymmetric scale and zero point for the range `[min, max]` (widened to include 0).
#[inline]
pub fn asym_params(min: f32, max: f32, qmax: i32) -> (f32, i32) {
    let lo = min.min(0.0);
    let hi = max.max(0.0);
    let range = hi - lo;
    if range <= 0.0 || !range.is_finite() {
        return (1.0, 0);
    }
    let scale = range / qmax as f32;
    let z = (-lo / scale).round_ties_even().clamp(0.0, qmax as f32) as i32;
    (scale, z)
}

/// Symmetric scale for the magnitude `amax`.
#[inline]
pub fn sym_scale(amax: f32, qmax: i32) -> f32 {
    if amax > 0.0 && amax.is_finite() {
        amax / qmax as f32
    } else {
        1.0
    }
}

/// Asymmetric code of `w` for a given scale and zero point, clamped to `[lo, hi]`.
#[inline]
pub fn asym_code(w: f32, scale: f32, z: i32, lo: i32, hi: i32) -> i32 {
    // `as` saturates on huge quotients; saturating_add keeps the sum from wrapping.
    ((w / scale).round_ties_even() as i32)
        .saturating_add(z)
        .clamp(lo, hi)
}

/// Symmetric code of `w` for a given scale.
#[inline]
pub fn sym_code(w: f32, scale: f32, qmax: i32) -> i32 {
    ((w / scale).round_ties_even() as i32).clamp(-qmax, qmax)
}

/// Minimum and maximum of a slice of finite values (`(0, 0)` when empty).
#[inline]
pub fn min_max(v: impl IntoIterator<Item = f32>) -> (f32, f32) {
    let mut it = v.into_iter();
    let Some(first) = it.next() else {
        return (0.0, 0.0);
    };
    it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

/// Largest max|w| the f32 RTN quantizer takes: the asymmetric range `hi − lo` must stay finite.
pub const AMAX_MAX: f32 = f32::MAX / 2.0;

/// Quantizes `w` `[N, K]` with RTN.
///
/// Errors: non-finite weights, |w| above [`AMAX_MAX`] ([`Error::OutOfRange`] naming the row), a
/// group size that is zero or does not divide K.
pub fn quantize(w: ArrayView2<f32>, cfg: &RtnConfig) -> Result<RtnQuantized> {
    check_finite("weight", w)?;
    check_range("weight", w, w.ncols(), 0.0, AMAX_MAX)?;
    let (n, k) = w.dim();
    if n == 0 || k == 0 {
        return Err(Error::shape(
            "weight",
            "a non-empty [N, K] matrix",
            format!("[{n}, {k}]"),
        ));
    }
    let qmax = if cfg.symmetric {
        cfg.bits.sym_max()
    } else {
        cfg.bits.asym_max()
    };
    let (rows, g) = match cfg.granularity {
        Granularity::PerTensor => (1, k),
        Granularity::PerChannel => (n, k),
        Granularity::PerGroup(g) => {
            check_group_size(k, g)?;
            (n, g)
        }
    };
    let ng = k / g;
    let mut scales = Array2::<f32>::zeros((rows, ng));
    let mut zeros = Array2::<i32>::zeros((rows, ng));
    for r in 0..rows {
        for gi in 0..ng {
            // Per-tensor: the single "group" spans every row.
            let block = if cfg.granularity == Granularity::PerTensor {
                w.view()
            } else {
                w.slice(ndarray::s![r..r + 1, gi * g..(gi + 1) * g])
            };
            let (s, z) = if cfg.symmetric {
                let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
                (sym_scale(amax, qmax), 0)
            } else {
                let (lo, hi) = min_max(block.iter().copied());
                asym_params(lo, hi, qmax)
            };
            scales[[r, gi]] = s;
            zeros[[r, gi]] = z;
        }
    }
    let codes = Array2::from_shape_fn((n, k), |(r, c)| {
        let (sr, gi) = if cfg.granularity == Granularity::PerTensor {
            (0, 0)
        } else {
            (r, c / g)
        };
        let s = scales[[sr, gi]];
        if cfg.symmetric {
            sym_code(w[[r, c]], s, qmax)
        } else {
            asym_code(w[[r, c]], s, zeros[[sr, gi]], 0, qmax)
        }
    });
    Ok(RtnQuantized {
        config: *cfg,
        codes,
        scales,
        zeros,
    })
}

impl RtnQuantized {
    /// Dequantized `[N, K]` matrix: `scale · (q − z)`.
    pub fn dequantize(&self) -> Array2<f32> {
        let (n, k) = self.codes.dim();
        let per_tensor = self.config.granularity == Granularity::PerTensor;
        let g = if per_tensor {
            k
        } else {
            k / self.scales.ncols().max(1)
        };
        Array2::from_shape_fn((n, k), |(r, c)| {
            let (sr, gi) = if per_tensor { (0, 0) } else { (r, c / g) };
            self.scales[[sr, gi]] * (self.codes[[r, c]] - self.zeros[[sr, gi]]) as f32
        })
    }
}

/// Quantize-dequantize in one step (fake quantization).
pub fn fake_quantize(w: ArrayView2<f32>, cfg: &RtnConfig) -> Result<Array2<f32>> {
    Ok(quantize(w, cfg)?.dequantize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    fn mat(n: usize, k: usize, seed: u64) -> Array2<f32> {
        // Small deterministic LCG so the tests need no RNG crate.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Array2::from_shape_fn((n, k), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    proptest! {
        #[test]
        fn error_is_at_most_half_a_step(n in 1usize..5, groups in 1usize..4, g in prop::sample::select(vec![2usize, 8, 32]),
                                         sym in any::<bool>(), int8 in any::<bool>(), seed in any::<u64>()) {
            let k = groups * g;
            let w = mat(n, k, seed);
            let cfg = RtnConfig { bits: if int8 { Bits::Int8 } else { Bits::Int4 }, symmetric: sym, granularity: Granularity::PerGroup(g) };
            let q = quantize(w.view(), &cfg).unwrap();
            let d = q.dequantize();
            let qmax = if sym { cfg.bits.sym_max() } else { cfg.bits.asym_max() };
            for r in 0..n {
                for c in 0..k {
                    let s = q.scales[[r, c / g]];
                    let code = q.codes[[r, c]];
                    let in_range = if sym { (-qmax..=qmax).contains(&code) } else { (0..=qmax).contains(&code) };
                    prop_assert!(in_range, "code {} out of range", code);
                    // Zero is inside the asymmetric range, so nothing is clipped: |err| ≤ s/2 (+ fp slack).
                    prop_assert!((d[[r, c]] - w[[r, c]]).abs() <= s * 0.5 + 1e-5, "r{r} c{c}: {} vs {}", d[[r, c]], w[[r, c]]);
                }
            }
        }
    }

    #[test]
    fn granularities_have_the_documented_scale_shapes() {
        let w = mat(4, 16, 3);
        for (gran, shape) in [
            (Granularity::PerTensor, (1, 1)),
            (Granularity::PerChannel, (4, 1)),
            (Granularity::PerGroup(4), (4, 4)),
        ] {
            let q = quantize(
                w.view(),
                &RtnConfig {
                    bits: Bits::Int8,
                    symmetric: true,
                    granularity: gran,
                },
            )
            .unwrap();
            assert_eq!(q.scales.dim(), shape, "{gran:?}");
        }
    }

    #[test]
    fn per_tensor_uses_the_global_range() {
        let mut w = mat(3, 8, 9);
        w[[2, 5]] = 10.0;
        let q = quantize(
            w.view(),
            &RtnConfig {
                bits: Bits::Int8,
                symmetric: true,
                granularity: Granularity::PerTensor,
            },
        )
        .unwrap();
        assert!((q.scales[[0, 0]] - 10.0 / 127.0).abs() < 1e-7);
        assert_eq!(q.codes[[2, 5]], 127);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let w = mat(2, 10, 1);
        let cfg = RtnConfig {
            granularity: Granularity::PerGroup(4),
            ..Default::default()
        };
        assert!(matches!(
            quantize(w.view(), &cfg),
            Err(Error::GroupSize { .. })
        ));
        let cfg = RtnConfig {
            granularity: Granularity::PerGroup(0),
            ..Default::default()
        };
        assert!(matches!(
            quantize(w.view(), &cfg),
            Err(Error::GroupSize { .. })
        ));
        let mut w = mat(2, 8, 1);
        w[[1, 3]] = f32::NAN;
        match quantize(w.view(), &RtnConfig::default()) {
            Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![1, 3]),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }

    #[test]
    fn all_zero_group_round_trips() {
        let w = Array2::<f32>::zeros((2, 8));
        let q = quantize(
            w.view(),
            &RtnConfig {
                granularity: Granularity::PerGroup(4),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(q.dequantize(), w);
    }

    #[test]
    fn ties_round_to_even() {
        // scale 1 (amax 7 over qmax 7): 2.5 → 2, 3.5 → 4, −2.5 → −2.
        let w = ndarray::arr2(&[[7.0f32, 2.5, 3.5, -2.5]]);
        let q = quantize(
            w.view(),
            &RtnConfig {
                bits: Bits::Int4,
                symmetric: true,
                granularity: Granularity::PerChannel,
            },
        )
        .unwrap();
        assert_eq!(q.codes.row(0).to_vec(), vec![7, 2, 4, -2]);
    }
}
