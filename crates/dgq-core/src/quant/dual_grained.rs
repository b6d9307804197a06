//! The DGQ dual-grained weight (paper §3.2, eq. 4–5, appendix A2).
//!
//! A group-wise asymmetric u4 weight `W ≈ s_g · (q − z)` has its FP group scale `s_g` split into a
//! per-output-channel FP16 scale `s1` and a group-wise INT8 scale `S2 ≥ 1` (`s_g ≈ s1 · S2`), so that
//!
//! ```text
//! W ≈ s1[n] · W_s8[n, k],   W_s8 = S2[n, k/g] · (q[n, k] − z[n, k/g]) ∈ [−127, 127]
//! ```
//!
//! and `Y = (s_x ⊗ s1) · (X_s8 · W_s8ᵀ)` runs on INT8 tensor cores with INT32 accumulation.
//! The bound on `W_s8` is kept by clamping `q` to [`q_bounds`] (the "overflow-safe clamp").

use half::f16;
use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::rtn::{asym_code, asym_params, min_max};
use crate::error::{check_finite, check_group_size, check_range, Error, Result};

/// Largest magnitude of an INT8 weight code; −128 is never produced so negation is safe.
pub const W_S8_MAX: i32 = 127;

/// Largest row max|w| DGQ represents: `s1` is an f16 (at most 65504) and `|S2·(q − z)| ≤ 127`,
/// so nothing above `127 · 65504 ≈ 8.32e6` dequantizes to its value.
pub const ROW_AMAX_MAX: f32 = W_S8_MAX as f32 * 65504.0;

/// Smallest non-zero row max|w| DGQ represents to its precision: `s1 = max|w|/127` must be at
/// least 2⁻¹⁷ (≈ 9.69e-4 for max|w|). Down to there a subnormal f16 `s1` keeps 8 significant
/// bits, so its rounding moves the row's scale by at most 2⁻⁸ (the u4 codes alone err by up to
/// 1/30 of a group's range); below, precision falls off until rows of max|w| ≲ 4e-6 come out
/// all zero. All-zero rows are exact and always accepted.
pub const ROW_AMAX_MIN: f32 = W_S8_MAX as f32 / 131072.0;

/// A DGQ-quantized `[N, K]` weight matrix, in the canonical (unpacked, row-major) layout.
///
/// Invariants (checked by [`DualGrainedWeight::validate`]): `K % group_size == 0`, K and the group
/// size even (nibble packing), `q ∈ [0, 15]`, `zeros ∈ [0, 15]`, `s2 ∈ [1, 127]`, `s1` finite and
/// `> 0`, and every `S2·(q − z) ∈ [−127, 127]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DualGrainedWeight {
    /// Group size along K (input channels).
    pub group_size: usize,
    /// u4 codes `[N, K]`, one per byte (values 0..=15). Packing two per byte is the format's job.
    pub q: Array2<u8>,
    /// Zero points `[N, K/g]` (values 0..=15).
    pub zeros: Array2<i8>,
    /// Group INT8 scales `[N, K/g]` (values 1..=127).
    pub s2: Array2<i8>,
    /// Per-output-channel FP16 scales `[N]`.
    pub s1: Array1<f16>,
}

/// The range `q` may take in a group with zero point `z` and INT8 scale `s2` so that
/// `s2·(q − z)` stays within ±127 (paper appendix A2): `[max(0, z − ⌊127/S2⌋), min(15, z + ⌊127/S2⌋)]`.
#[inline]
pub fn q_bounds(z: i32, s2: i32) -> (i32, i32) {
    let r = W_S8_MAX / s2.max(1);
    ((z - r).max(0), (z + r).min(15))
}

impl DualGrainedWeight {
    /// Output channels N.
    pub fn n(&self) -> usize {
        self.q.nrows()
    }
    /// Input channels K.
    pub fn k(&self) -> usize {
        self.q.ncols()
    }
    /// Groups per row, K / group_size.
    pub fn groups(&self) -> usize {
        self.k() / self.group_size.max(1)
    }

    /// Builds a weight from its parts and validates every invariant.
    pub fn new(
        group_size: usize,
        q: Array2<u8>,
        zeros: Array2<i8>,
        s2: Array2<i8>,
        s1: Array1<f16>,
    ) -> Result<Self> {
        let w = DualGrainedWeight {
            group_size,
            q,
            zeros,
            s2,
            s1,
        };
        w.validate()?;
        Ok(w)
    }

    /// Checks every invariant; the error names the tensor and the first offending element.
    pub fn validate(&self) -> Result<()> {
        let (n, k) = self.q.dim();
        check_group_size(k, self.group_size)?;
        if self.group_size % 2 != 0 {
            return Err(Error::GroupSize {
                k,
                group_size: self.group_size,
                reason: "must be even so that groups align with packed nibble pairs",
            });
        }
        let ng = k / self.group_size;
        if self.zeros.dim() != (n, ng) {
            return Err(Error::shape(
                "zeros",
                format!("[{n}, {ng}]"),
                format!("{:?}", self.zeros.shape()),
            ));
        }
        if self.s2.dim() != (n, ng) {
            return Err(Error::shape(
                "s2",
                format!("[{n}, {ng}]"),
                format!("{:?}", self.s2.shape()),
            ));
        }
        if self.s1.len() != n {
            return Err(Error::shape(
                "s1",
                format!("[{n}]"),
                format!("[{}]", self.s1.len()),
            ));
        }
        for (i, &s) in self.s1.iter().enumerate() {
            let v = s.to_f32();
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invariant(
                    "s1",
                    format!("s1[{i}] = {v} must be finite and > 0"),
                ));
            }
        }
        for ((r, c), &s) in self.s2.indexed_iter() {
            if s < 1 {
                return Err(Error::invariant(
                    "s2",
                    format!("s2[{r}, {c}] = {s} must be >= 1"),
                ));
            }
        }
        for ((r, c), &z) in self.zeros.indexed_iter() {
            if !(0..=15).contains(&z) {
                return Err(Error::invariant(
                    "zeros",
                    format!("zeros[{r}, {c}] = {z} must be in [0, 15]"),
                ));
            }
        }
        for ((r, c), &q) in self.q.indexed_iter() {
            if q > 15 {
                return Err(Error::invariant(
                    "q",
                    format!("q[{r}, {c}] = {q} must be in [0, 15]"),
                ));
            }
            let g = c / self.group_size;
            let v = self.s2[[r, g]] as i32 * (q as i32 - self.zeros[[r, g]] as i32);
            if v.abs() > W_S8_MAX {
                return Err(Error::invariant(
                    "q",
                    format!(
                        "S2·(q − z) = {v} at [{r}, {c}] overflows [-127, 127] (q = {q}, z = {}, S2 = {})",
                        self.zeros[[r, g]],
                        self.s2[[r, g]]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The INT8 weight `W_s8 = S2·(q − z)` `[N, K]` that the GEMM multiplies.
    pub fn to_int8(&self) -> Array2<i8> {
        let g = self.group_size;
        let mut out = Array2::<i8>::zeros(self.q.dim());
        for ((r, c), o) in out.indexed_iter_mut() {
            let gi = c / g;
            let v = self.s2[[r, gi]] as i32 * (self.q[[r, c]] as i32 - self.zeros[[r, gi]] as i32);
            *o = v.clamp(-W_S8_MAX, W_S8_MAX) as i8;
        }
        out
    }

    /// The dequantized weight `s1 · S2 · (q − z)` `[N, K]` in f32.
    pub fn dequantize(&self) -> Array2<f32> {
        let mut out = self.to_int8().mapv(|v| v as f32);
        for (mut row, s1) in out.axis_iter_mut(Axis(0)).zip(self.s1.iter()) {
            let s = s1.to_f32();
            row.mapv_inplace(|v| v * s);
        }
        out
    }

    /// Storage bytes per weight when packed: 4-bit q, plus 1 B zero and 1 B S2 per group, plus
    /// 2 B s1 per row (0.516 B/weight at K = 4096, g = 128).
    pub fn packed_bytes_per_weight(&self) -> f64 {
        let (n, k) = self.q.dim();
        let bytes = n * k / 2 + 2 * n * self.groups() + 2 * n;
        bytes as f64 / (n * k).max(1) as f64
    }

    /// Direct RTN decomposition (paper Table 1, "RTN" row): no search.
    ///
    /// Per group: asymmetric u4 RTN gives `s_g` and `z` (range widened to include 0, see
    /// [`super::rtn`]). Per row: `s1 = max|W_row| / 127` (rounded to f16), the smallest channel scale
    /// for which no group needs `|W_s8| > 127`. Then `S2 = clamp(rne(s_g / s1), 1, 127)` and `q` is
    /// re-rounded with the effective scale `s1·S2` and clamped by [`q_bounds`].
    pub fn rtn(w: ArrayView2<f32>, group_size: usize) -> Result<Self> {
        check_dgq_shape(w, group_size)?;
        let (n, k) = w.dim();
        let ng = k / group_size;
        let mut params = Vec::with_capacity(ng);
        let mut out = DualGrainedWeight {
            group_size,
            q: Array2::zeros((n, k)),
            zeros: Array2::zeros((n, ng)),
            s2: Array2::zeros((n, ng)),
            s1: Array1::from_elem(n, f16::ONE),
        };
        for r in 0..n {
            let row = w.row(r);
            let amax = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
            params.clear();
            for gi in 0..ng {
                let (lo, hi) = min_max(row.iter().skip(gi * group_size).take(group_size).copied());
                params.push(asym_params(lo, hi, 15));
            }
            let s1 = channel_scale(amax / W_S8_MAX as f32);
            out.set_row(r, row, s1, &params);
        }
        Ok(out)
    }

    /// Fills row `r` from per-group `(s_g, z)` and a channel scale `s1` (already representable in
    /// f16): `S2 = clamp(rne(s_g/s1), 1, 127)`, `q` re-rounded with `s1·S2` inside [`q_bounds`].
    pub(crate) fn set_row(
        &mut self,
        r: usize,
        row: ndarray::ArrayView1<f32>,
        s1: f16,
        params: &[(f32, i32)],
    ) {
        let g = self.group_size;
        let s1f = s1.to_f32();
        self.s1[r] = s1;
        for (gi, &(sg, z)) in params.iter().enumerate() {
            let s2 = (sg / s1f).round_ties_even().clamp(1.0, W_S8_MAX as f32) as i32;
            let (lo, hi) = q_bounds(z, s2);
            let scale = s1f * s2 as f32;
            self.s2[[r, gi]] = s2 as i8;
            self.zeros[[r, gi]] = z as i8;
            for c in gi * g..(gi + 1) * g {
                self.q[[r, c]] = asym_code(row[c], scale, z, lo, hi) as u8;
            }
        }
    }

    /// Squared error `‖W − Ŵ‖²` against a float weight of the same shape.
    pub fn weight_sq_error(&self, w: ArrayView2<f32>) -> Result<f64> {
        if w.dim() != self.q.dim() {
            return Err(Error::shape(
                "weight",
                format!("{:?}", self.q.shape()),
                format!("{:?}", w.shape()),
            ));
        }
        let d = self.dequantize();
        Ok(d.iter()
            .zip(w.iter())
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum())
    }
}

/// Rounds a channel scale to a positive, finite f16 (zero rows get 1; tiny scales the smallest
/// normal f16, so that `s1 > 0` always holds after the cast).
pub fn channel_scale(s: f32) -> f16 {
    if s.is_nan() || s <= 0.0 || !s.is_finite() {
        return f16::ONE;
    }
    let h = f16::from_f32(s.min(f16::MAX.to_f32()));
    if h.to_f32() > 0.0 {
        h
    } else {
        f16::MIN_POSITIVE
    }
}

/// Validates a float weight for DGQ: non-empty, finite, group size even and dividing K, and
/// every row zero or with max|w| in [[`ROW_AMAX_MIN`], [`ROW_AMAX_MAX`]] ([`Error::OutOfRange`]
/// naming the row otherwise).
pub fn check_dgq_shape(w: ArrayView2<f32>, group_size: usize) -> Result<()> {
    let (n, k) = w.dim();
    if n == 0 || k == 0 {
        return Err(Error::shape(
            "weight",
            "a non-empty [N, K] matrix",
            format!("[{n}, {k}]"),
        ));
    }
    check_group_size(k, group_size)?;
    if group_size % 2 != 0 {
        return Err(Error::GroupSize {
            k,
            group_size,
            reason: "must be even so that groups align with packed nibble pairs",
        });
    }
    check_finite("weight", w)?;
    check_range("weight", w, k, ROW_AMAX_MIN, ROW_AMAX_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mat(n: usize, k: usize, seed: u64, outlier: f32) -> Array2<f32> {
        let mut s = seed | 1;
        Array2::from_shape_fn((n, k), |(_, c)| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if c % 17 == 3 {
                v * outlier
            } else {
                v
            }
        })
    }

    proptest! {
        #[test]
        fn rtn_satisfies_every_invariant(n in 1usize..6, groups in 1usize..5, g in prop::sample::select(vec![2usize, 16, 64]),
                                         seed in any::<u64>(), outlier in 1f32..50.0) {
            let w = mat(n, groups * g, seed, outlier);
            let d = DualGrainedWeight::rtn(w.view(), g).unwrap();
            d.validate().unwrap();
            // Dequantized value = s1·S2·(q − z), element by element.
            let deq = d.dequantize();
            for ((r, c), &v) in deq.indexed_iter() {
                let gi = c / g;
                let expect = d.s1[r].to_f32() * (d.s2[[r, gi]] as i32 * (d.q[[r, c]] as i32 - d.zeros[[r, gi]] as i32)) as f32;
                prop_assert_eq!(v, expect);
            }
        }
    }

    #[test]
    fn rtn_error_is_small_on_a_smooth_row() {
        let w = mat(8, 256, 7, 1.0);
        let d = DualGrainedWeight::rtn(w.view(), 64).unwrap();
        let err = d.weight_sq_error(w.view()).unwrap();
        let energy: f64 = w.iter().map(|&x| (x as f64).powi(2)).sum();
        // u4 over [-1, 1]: step ≈ 2/15, uniform error variance step²/12 ≈ 1.5e-3 vs energy 1/3 per element,
        // plus the S2 rounding; 2 % relative is a loose but meaningful ceiling.
        assert!(err / energy < 0.02, "relative error {}", err / energy);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = mat(2, 12, 1, 1.0);
        assert!(DualGrainedWeight::rtn(w.view(), 5).is_err());
        assert!(DualGrainedWeight::rtn(w.view(), 3).is_err()); // odd
        assert!(DualGrainedWeight::rtn(Array2::<f32>::zeros((0, 4)).view(), 2).is_err());
    }

    #[test]
    fn validate_catches_overflow_and_ranges() {
        let w = mat(2, 8, 3, 1.0);
        let ok = DualGrainedWeight::rtn(w.view(), 4).unwrap();
        let mut bad = ok.clone();
        bad.s2[[0, 0]] = 127;
        bad.q[[0, 0]] = 15;
        bad.zeros[[0, 0]] = 0;
        assert!(matches!(bad.validate(), Err(Error::Invariant { .. })));
        let mut bad = ok.clone();
        bad.s2[[1, 1]] = 0;
        assert!(matches!(bad.validate(), Err(Error::Invariant { .. })));
        let mut bad = ok.clone();
        bad.zeros[[1, 0]] = 16;
        assert!(matches!(bad.validate(), Err(Error::Invariant { .. })));
        let mut bad = ok.clone();
        bad.s1[0] = f16::NAN;
        assert!(matches!(bad.validate(), Err(Error::Invariant { .. })));
        let mut bad = ok;
        bad.s1 = Array1::from_elem(3, f16::ONE);
        assert!(matches!(bad.validate(), Err(Error::Shape { .. })));
    }
}
