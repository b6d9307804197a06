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

use crate::error::{check_group_size, Error, Result};

/// Largest magnitude of an INT8 weight code; −128 is never produced so negation is safe.
pub const W_S8_MAX: i32 = 127;

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
        let w = DualGrainedWeight { group_size, q, zeros, s2, s1 };
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
            return Err(Error::shape("zeros", format!("[{n}, {ng}]"), format!("{:?}", self.zeros.shape())));
        }
        if self.s2.dim() != (n, ng) {
            return Err(Error::shape("s2", format!("[{n}, {ng}]"), format!("{:?}", self.s2.shape())));
        }
        if self.s1.len() != n {
            return Err(Error::shape("s1", format!("[{n}]"), format!("[{}]", self.s1.len())));
        }
        for (i, &s) in self.s1.iter().enumerate() {
            let v = s.to_f32();
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invariant("s1", format!("s1[{i}] = {v} must be finite and > 0")));
            }
        }
        for ((r, c), &s) in self.s2.indexed_iter() {
            if s < 1 {
                return Err(Error::invariant("s2", format!("s2[{r}, {c}] = {s} must be >= 1")));
            }
        }
        for ((r, c), &z) in self.zeros.indexed_iter() {
            if !(0..=15).contains(&z) {
                return Err(Error::invariant("zeros", format!("zeros[{r}, {c}] = {z} must be in [0, 15]")));
            }
        }
        for ((r, c), &q) in self.q.indexed_iter() {
            if q > 15 {
                return Err(Error::invariant("q", format!("q[{r}, {c}] = {q} must be in [0, 15]")));
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

    /// Squared error `‖W − Ŵ‖²` against a float weight of the same shape.
    pub fn weight_sq_error(&self, w: ArrayView2<f32>) -> Result<f64> {
        if w.dim() != self.q.dim() {
            return Err(Error::shape("weight", format!("{:?}", self.q.shape()), format!("{:?}", w.shape())));
        }
        let d = self.dequantize();
        Ok(d.iter().zip(w.iter()).map(|(a, b)| ((a - b) as f64).powi(2)).sum())
    }
}
