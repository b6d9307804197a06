//! Symmetric integer weights with FP16 group scales: `W ≈ scale[n, k/g] · q[n, k]`.
//! Used for W8A8 (int8, per-channel: group = K) and FineQuant (int8/int4, adaptive group size).

use half::f16;
use ndarray::{Array2, ArrayView2, Axis};

use super::rtn::{sym_code, sym_scale};
use super::Bits;
use crate::error::{check_finite, check_group_size, check_range, Error, Result};

/// A symmetric integer weight `[N, K]` (canonical, unpacked layout).
///
/// Invariants: `K % group_size == 0` (`group_size == K` means per-channel); codes in
/// `[−7, 7]` (int4) or `[−127, 127]` (int8); scales finite and `> 0`, shape `[N, K/g]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymIntWeight {
    /// Code width.
    pub bits: Bits,
    /// Group size along K.
    pub group_size: usize,
    /// Codes `[N, K]`, one per byte.
    pub q: Array2<i8>,
    /// FP16 scales `[N, K/g]`.
    pub scales: Array2<f16>,
}

impl SymIntWeight {
    /// Builds a weight from its parts and validates every invariant.
    pub fn new(bits: Bits, group_size: usize, q: Array2<i8>, scales: Array2<f16>) -> Result<Self> {
        let w = SymIntWeight {
            bits,
            group_size,
            q,
            scales,
        };
        w.validate()?;
        Ok(w)
    }

    /// Symmetric RTN with FP16 group scales: `scale = f16(amax / qmax)` (at least the smallest
    /// normal f16, so it stays positive), codes rounded with that f16 scale so that
    /// `dequantize()` is exactly what the codes mean. `group_size == K` is per-channel.
    ///
    /// Every group must be all zero or have `amax / qmax` in f16's normal range
    /// `[2⁻¹⁴, 65504]` (int8: max|w| from 7.75e-3 to 8.32e6; int4: 4.27e-4 to 4.59e5): above, the
    /// scale saturates; below, it is raised to 2⁻¹⁴ and the codes lose bits. Otherwise
    /// [`Error::OutOfRange`] names the row and group.
    pub fn quantize_rtn(w: ArrayView2<f32>, bits: Bits, group_size: usize) -> Result<Self> {
        let (n, k) = w.dim();
        if n == 0 || k == 0 {
            return Err(Error::shape(
                "weight",
                "a non-empty [N, K] matrix",
                format!("[{n}, {k}]"),
            ));
        }
        check_group_size(k, group_size)?;
        check_finite("weight", w)?;
        let qmax = bits.sym_max();
        let q_max = qmax as f32;
        check_range(
            "weight",
            w,
            group_size,
            q_max * f16::MIN_POSITIVE.to_f32(),
            q_max * f16::MAX.to_f32(),
        )?;
        let ng = k / group_size;
        let mut q = Array2::<i8>::zeros((n, k));
        let mut scales = Array2::from_elem((n, ng), f16::ONE);
        for r in 0..n {
            for gi in 0..ng {
                let span = gi * group_size..(gi + 1) * group_size;
                let amax = w
                    .row(r)
                    .iter()
                    .skip(span.start)
                    .take(group_size)
                    .fold(0f32, |a, &x| a.max(x.abs()));
                let s = f16::from_f32(sym_scale(amax, qmax)).max(f16::MIN_POSITIVE);
                scales[[r, gi]] = s;
                for c in span {
                    q[[r, c]] = sym_code(w[[r, c]], s.to_f32(), qmax) as i8;
                }
            }
        }
        SymIntWeight::new(bits, group_size, q, scales)
    }

    /// Output channels N.
    pub fn n(&self) -> usize {
        self.q.nrows()
    }
    /// Input channels K.
    pub fn k(&self) -> usize {
        self.q.ncols()
    }

    /// Checks every invariant; the error names the tensor and the first offending element.
    pub fn validate(&self) -> Result<()> {
        let (n, k) = self.q.dim();
        check_group_size(k, self.group_size)?;
        if self.bits == Bits::Int4 && (k % 2 != 0 || self.group_size % 2 != 0) {
            return Err(Error::GroupSize {
                k,
                group_size: self.group_size,
                reason: "int4 needs K and the group size even for nibble packing",
            });
        }
        let ng = k / self.group_size;
        if self.scales.dim() != (n, ng) {
            return Err(Error::shape(
                "scales",
                format!("[{n}, {ng}]"),
                format!("{:?}", self.scales.shape()),
            ));
        }
        for ((r, c), s) in self.scales.indexed_iter() {
            let v = s.to_f32();
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invariant(
                    "scales",
                    format!("scales[{r}, {c}] = {v} must be finite and > 0"),
                ));
            }
        }
        let m = self.bits.sym_max() as i8;
        for ((r, c), &q) in self.q.indexed_iter() {
            if q < -m || q > m {
                return Err(Error::invariant(
                    "q",
                    format!("q[{r}, {c}] = {q} outside [-{m}, {m}]"),
                ));
            }
        }
        Ok(())
    }

    /// Dequantized `[N, K]` f32 weight.
    pub fn dequantize(&self) -> Array2<f32> {
        let g = self.group_size;
        let mut out = self.q.mapv(|v| v as f32);
        for (r, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= self.scales[[r, c / g]].to_f32();
            }
        }
        out
    }
}
