//! Integer-exact GEMMs: INT8 × INT8 → INT32, W4A8 (DGQ) and W8A8, with their f32 epilogues.
//!
//! Structure: the output is tiled into blocks of [`NB`] weight rows × [`MB`] tokens, one rayon task
//! per block. A task widens its weight rows to i16 once (for DGQ: unpacks `S2·(q − z)`), then runs
//! a 1-token × 4-row micro-kernel of plain i16·i16→i32 multiply-adds that LLVM vectorizes; `pulp`
//! compiles the task body for AVX2 as well and picks it at run time.

use half::f16;
use ndarray::{Array2, ArrayView1, ArrayView2};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::{check_bias, contiguous};
use crate::act::{check_scales, QuantizedActs};
use crate::error::{check_group_size, Error, Result};
use crate::quant::dual_grained::W_S8_MAX;
use crate::{DualGrainedWeight, SymIntWeight};

/// Largest K for which an INT32 accumulator of INT8 products cannot overflow, even with −128
/// codes: `128² · K ≤ i32::MAX`.
pub const MAX_K_I32: usize = i32::MAX as usize / (128 * 128);

/// Weight rows per task.
const NB: usize = 16;
/// Tokens per task.
const MB: usize = 64;

/// Produces weight row `n` widened to i16.
trait RowSource: Sync {
    fn fill(&self, n: usize, out: &mut [i16]) -> Result<()>;
}

/// Turns the INT32 sums of the K-segments of output `(m, n)` into the output value.
trait Epilogue: Sync {
    type Out: Copy + Default + Send + Sync;
    fn apply(&self, m: usize, n: usize, seg: &[i32]) -> Self::Out;
}

/// Four dot products sharing the `x` operand, exact in wrapping i32 (no overflow for
/// `K ≤ MAX_K_I32`). Written as plain multiply-adds so LLVM vectorizes it.
#[inline(always)]
fn dot4(x: &[i16], w0: &[i16], w1: &[i16], w2: &[i16], w3: &[i16]) -> [i32; 4] {
    let k = x.len();
    let (w0, w1, w2, w3) = (&w0[..k], &w1[..k], &w2[..k], &w3[..k]);
    let (mut s0, mut s1, mut s2, mut s3) = (0i32, 0i32, 0i32, 0i32);
    for i in 0..k {
        let a = x[i] as i32;
        s0 = s0.wrapping_add(a.wrapping_mul(w0[i] as i32));
        s1 = s1.wrapping_add(a.wrapping_mul(w1[i] as i32));
        s2 = s2.wrapping_add(a.wrapping_mul(w2[i] as i32));
        s3 = s3.wrapping_add(a.wrapping_mul(w3[i] as i32));
    }
    [s0, s1, s2, s3]
}

#[inline(always)]
fn dot1(x: &[i16], w: &[i16]) -> i32 {
    x.iter().zip(w).fold(0i32, |s, (&a, &b)| {
        s.wrapping_add((a as i32).wrapping_mul(b as i32))
    })
}

/// One task: weight rows `n0..n0+nr`, tokens `m0..m1`.
struct Task<'a, R, E: Epilogue> {
    x: &'a [i16],
    k: usize,
    seg: usize,
    n0: usize,
    nr: usize,
    m0: usize,
    m1: usize,
    src: &'a R,
    epi: &'a E,
    wbuf: &'a mut [i16],
    sums: &'a mut [i32],
}

impl<R: RowSource, E: Epilogue> WithSimd for Task<'_, R, E> {
    type Output = Result<Vec<E::Out>>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> Self::Output {
        let Task {
            x,
            k,
            seg,
            n0,
            nr,
            m0,
            m1,
            src,
            epi,
            wbuf,
            sums,
        } = self;
        let nseg = k.checked_div(seg).unwrap_or(0);
        for i in 0..nr {
            src.fill(n0 + i, &mut wbuf[i * k..(i + 1) * k])?;
        }
        let w = |i: usize, s: usize| &wbuf[i * k + s * seg..i * k + (s + 1) * seg];
        let mut out = Vec::with_capacity((m1 - m0) * nr);
        for m in m0..m1 {
            let xr = &x[m * k..(m + 1) * k];
            for s in 0..nseg {
                let xs = &xr[s * seg..(s + 1) * seg];
                let mut i = 0;
                while i + 4 <= nr {
                    let d = dot4(xs, w(i, s), w(i + 1, s), w(i + 2, s), w(i + 3, s));
                    for (r, v) in d.into_iter().enumerate() {
                        sums[(i + r) * nseg + s] = v;
                    }
                    i += 4;
                }
                while i < nr {
                    sums[i * nseg + s] = dot1(xs, w(i, s));
                    i += 1;
                }
            }
            for i in 0..nr {
                out.push(epi.apply(m, n0 + i, &sums[i * nseg..(i + 1) * nseg]));
            }
        }
        Ok(out)
    }
}

/// Runs the tiled integer GEMM `x [m, k] (i16, row-major) × rows of src`; `seg` is the length of
/// the K-segments whose sums the epilogue receives (K for a single sum, the group size for
/// per-group sums).
fn int_gemm<R: RowSource, E: Epilogue>(
    x: &[i16],
    (m, n, k): (usize, usize, usize),
    seg: usize,
    src: &R,
    epi: &E,
) -> Result<Array2<E::Out>> {
    let mut out = Array2::<E::Out>::default((m, n));
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let nseg = k.checked_div(seg).unwrap_or(0);
    let (nblocks, mblocks) = (n.div_ceil(NB), m.div_ceil(MB));
    let arch = Arch::new();
    let blocks: Vec<Vec<E::Out>> = (0..nblocks * mblocks)
        .into_par_iter()
        .map_init(
            || (vec![0i16; NB * k], vec![0i32; NB * nseg]),
            |(wbuf, sums), t| {
                let (nb, mb) = (t / mblocks, t % mblocks);
                let n0 = nb * NB;
                let m0 = mb * MB;
                let task = Task {
                    x,
                    k,
                    seg,
                    n0,
                    nr: NB.min(n - n0),
                    m0,
                    m1: (m0 + MB).min(m),
                    src,
                    epi,
                    wbuf,
                    sums,
                };
                arch.dispatch(task)
            },
        )
        .collect::<Result<_>>()?;
    for (t, block) in blocks.into_iter().enumerate() {
        let (n0, m0) = ((t / mblocks) * NB, (t % mblocks) * MB);
        let nr = NB.min(n - n0);
        for (j, v) in block.into_iter().enumerate() {
            out[[m0 + j / nr, n0 + j % nr]] = v;
        }
    }
    Ok(out)
}

fn check_k(k: usize) -> Result<()> {
    if k > MAX_K_I32 {
        return Err(Error::shape(
            "K (INT32 accumulation bound)",
            format!("<= {MAX_K_I32}"),
            k,
        ));
    }
    Ok(())
}

fn check_k_match(what: &str, x_k: usize, w_k: usize) -> Result<()> {
    if x_k != w_k {
        return Err(Error::shape(
            format!("{what}: activation columns vs weight K"),
            w_k,
            x_k,
        ));
    }
    check_k(w_k)
}

/// Activations widened to i16, row-major.
fn widen(x: ArrayView2<i8>) -> Vec<i16> {
    let mut v = Vec::with_capacity(x.len());
    v.extend(x.iter().map(|&a| a as i16));
    v
}

// ---------------------------------------------------------------------------------------------
// Row sources.

/// INT8 rows as they are.
struct I8Rows<'a> {
    w: &'a [i8],
    k: usize,
}
impl RowSource for I8Rows<'_> {
    #[inline(always)]
    fn fill(&self, n: usize, out: &mut [i16]) -> Result<()> {
        for (o, &v) in out.iter_mut().zip(&self.w[n * self.k..(n + 1) * self.k]) {
            *o = v as i16;
        }
        Ok(())
    }
}

/// DGQ rows: `W_s8 = S2·(q − z)`, checking every invariant of [`DualGrainedWeight`] on the fly
/// (min/max reductions, so the check costs next to nothing).
pub(crate) struct DgqRows<'a> {
    q: &'a [u8],
    zeros: &'a [i8],
    s2: &'a [i8],
    k: usize,
    g: usize,
}

impl<'a> DgqRows<'a> {
    /// Checks the shapes and gathers contiguous views of the parts.
    pub(crate) fn new(
        w: &'a DualGrainedWeight,
        q: &'a ndarray::CowArray<'a, u8, ndarray::Ix2>,
        zeros: &'a ndarray::CowArray<'a, i8, ndarray::Ix2>,
        s2: &'a ndarray::CowArray<'a, i8, ndarray::Ix2>,
    ) -> Result<Self> {
        let (n, k) = w.q.dim();
        check_group_size(k, w.group_size)?;
        let ng = k / w.group_size;
        if w.zeros.dim() != (n, ng) {
            return Err(Error::shape(
                "zeros",
                format!("[{n}, {ng}]"),
                format!("{:?}", w.zeros.shape()),
            ));
        }
        if w.s2.dim() != (n, ng) {
            return Err(Error::shape(
                "s2",
                format!("[{n}, {ng}]"),
                format!("{:?}", w.s2.shape()),
            ));
        }
        if w.s1.len() != n {
            return Err(Error::shape(
                "s1",
                format!("[{n}]"),
                format!("[{}]", w.s1.len()),
            ));
        }
        Ok(DgqRows {
            q: contiguous("q", q)?,
            zeros: contiguous("zeros", zeros)?,
            s2: contiguous("s2", s2)?,
            k,
            g: w.group_size,
        })
    }

    /// Unpacks row `n` into `out` (`[K]`) as i16 values of `S2·(q − z)`.
    #[inline(always)]
    pub(crate) fn unpack(&self, n: usize, out: &mut [i16]) -> Result<()> {
        let (k, g) = (self.k, self.g);
        let ng = k / g;
        let q = &self.q[n * k..(n + 1) * k];
        let zs = &self.zeros[n * ng..(n + 1) * ng];
        let ss = &self.s2[n * ng..(n + 1) * ng];
        let (mut lo, mut hi, mut qmax) = (0i32, 0i32, 0u8);
        let mut params_ok = true;
        for (((qg, og), &z), &s) in q
            .chunks_exact(g)
            .zip(out.chunks_exact_mut(g))
            .zip(zs)
            .zip(ss)
        {
            params_ok &= (0..=15).contains(&z) & (s >= 1);
            let (z, s) = (z as i32, s as i32);
            for (o, &qv) in og.iter_mut().zip(qg) {
                let v = s * (qv as i32 - z);
                lo = lo.min(v);
                hi = hi.max(v);
                qmax = qmax.max(qv);
                *o = v as i16;
            }
        }
        if params_ok && qmax <= 15 && lo >= -W_S8_MAX && hi <= W_S8_MAX {
            Ok(())
        } else {
            Err(self.row_error(n))
        }
    }

    /// Cold path: names the first broken invariant in row `n`.
    #[cold]
    fn row_error(&self, n: usize) -> Error {
        let (k, g) = (self.k, self.g);
        let ng = k / g;
        for gi in 0..ng {
            let (z, s) = (self.zeros[n * ng + gi], self.s2[n * ng + gi]);
            if !(0..=15).contains(&z) {
                return Error::invariant(
                    "zeros",
                    format!("zeros[{n}, {gi}] = {z} must be in [0, 15]"),
                );
            }
            if s < 1 {
                return Error::invariant("s2", format!("s2[{n}, {gi}] = {s} must be >= 1"));
            }
        }
        for c in 0..k {
            let gi = c / g;
            let q = self.q[n * k + c];
            let (z, s) = (self.zeros[n * ng + gi] as i32, self.s2[n * ng + gi] as i32);
            if q > 15 {
                return Error::invariant("q", format!("q[{n}, {c}] = {q} must be in [0, 15]"));
            }
            let v = s * (q as i32 - z);
            if v.abs() > W_S8_MAX {
                return Error::invariant(
                    "q",
                    format!("S2·(q − z) = {v} at [{n}, {c}] overflows [-127, 127] (q = {q}, z = {z}, S2 = {s})"),
                );
            }
        }
        Error::invariant("q", format!("row {n} failed validation"))
    }
}

impl RowSource for DgqRows<'_> {
    #[inline(always)]
    fn fill(&self, n: usize, out: &mut [i16]) -> Result<()> {
        self.unpack(n, out)
    }
}

// ---------------------------------------------------------------------------------------------
// Epilogues.

/// The plain INT32 sum.
struct I32Out;
impl Epilogue for I32Out {
    type Out = i32;
    #[inline(always)]
    fn apply(&self, _m: usize, _n: usize, seg: &[i32]) -> i32 {
        seg.iter().fold(0i32, |a, &b| a.wrapping_add(b))
    }
}

/// Scales of the activations: per token or one for all.
struct ActScales<'a>(ArrayView1<'a, f32>);
impl ActScales<'_> {
    #[inline(always)]
    fn get(&self, m: usize) -> f32 {
        if self.0.len() == 1 {
            self.0[0]
        } else {
            self.0[m]
        }
    }
}

/// `y = Σ_g (acc_g as f32) · (s_x[m] · s_w[n, g])` (left to right, the first term without an added
/// zero), then `+ bias[n]`. With one group this is exactly the DGQ epilogue of the module docs.
struct ScaledOut<'a> {
    sx: ActScales<'a>,
    /// `[N, G]` row-major f32 weight scales.
    sw: Vec<f32>,
    groups: usize,
    bias: Option<ArrayView1<'a, f32>>,
}
impl Epilogue for ScaledOut<'_> {
    type Out = f32;
    #[inline(always)]
    fn apply(&self, m: usize, n: usize, seg: &[i32]) -> f32 {
        let sx = self.sx.get(m);
        let sw = &self.sw[n * self.groups..(n + 1) * self.groups];
        let mut terms = seg.iter().zip(sw).map(|(&acc, &s)| (acc as f32) * (sx * s));
        let mut y = terms.next().unwrap_or(0.0);
        for t in terms {
            y += t;
        }
        match &self.bias {
            Some(b) => y + b[n],
            None => y,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public kernels.

/// `Y = X · Wᵀ` for INT8 `X [M, K]` and `W [N, K]`, exact INT32 accumulation. Any i8 code
/// (−128 included) is accepted; `K ≤ MAX_K_I32` so that no sum can overflow.
pub fn gemm_i8_i32(x: ArrayView2<i8>, w: ArrayView2<i8>) -> Result<Array2<i32>> {
    let ((m, kx), (n, k)) = (x.dim(), w.dim());
    check_k_match("gemm_i8_i32", kx, k)?;
    let wc = w.as_standard_layout();
    let src = I8Rows {
        w: contiguous("w", &wc)?,
        k,
    };
    int_gemm(&widen(x), (m, n, k), k, &src, &I32Out)
}

/// `X_s8 · W_s8ᵀ` with `W_s8 = S2·(q − z)` unpacked from a DGQ weight, exact INT32 `[M, N]`.
/// The weight's invariants are checked as it is unpacked (an [`Error::Invariant`] names the first
/// offending element); `s1` is not used here.
pub fn w4a8_gemm_i32(x: ArrayView2<i8>, w: &DualGrainedWeight) -> Result<Array2<i32>> {
    let (m, kx) = x.dim();
    let (n, k) = w.q.dim();
    check_k_match("w4a8_gemm_i32", kx, k)?;
    let (q, z, s2) = (
        w.q.as_standard_layout(),
        w.zeros.as_standard_layout(),
        w.s2.as_standard_layout(),
    );
    let src = DgqRows::new(w, &q, &z, &s2)?;
    int_gemm(&widen(x), (m, n, k), k, &src, &I32Out)
}

fn s1_f32(s1: &ndarray::Array1<f16>) -> Result<Vec<f32>> {
    s1.iter()
        .enumerate()
        .map(|(i, s)| {
            let v = s.to_f32();
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(Error::invariant(
                    "s1",
                    format!("s1[{i}] = {v} must be finite and > 0"),
                ))
            }
        })
        .collect()
}

/// The W4A8 DGQ GEMM with its epilogue (see the module docs for the exact f32 operation order):
/// `y[m, n] = (acc[m, n] as f32) · (s_x[m] · s1[n]) (+ bias[n])`, `acc` = [`w4a8_gemm_i32`].
pub fn w4a8_gemm(
    x: &QuantizedActs,
    w: &DualGrainedWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    let (m, kx) = x.q.dim();
    let (n, k) = w.q.dim();
    check_k_match("w4a8_gemm", kx, k)?;
    check_scales(m, x.scales.view())?;
    check_bias(n, bias)?;
    let (q, z, s2) = (
        w.q.as_standard_layout(),
        w.zeros.as_standard_layout(),
        w.s2.as_standard_layout(),
    );
    let src = DgqRows::new(w, &q, &z, &s2)?;
    let epi = ScaledOut {
        sx: ActScales(x.scales.view()),
        sw: s1_f32(&w.s1)?,
        groups: 1,
        bias,
    };
    int_gemm(&widen(x.q.view()), (m, n, k), k, &src, &epi)
}

/// W8A8 (or any symmetric-integer weight with INT8 activations): exact INT32 sums per weight group,
/// then `y = Σ_g (acc_g as f32) · (s_x[m] · scale[n, g])` summed over groups left to right in f32
/// (the first term is not added to a zero), then `+ bias[n]`. Per-channel weights
/// (`group_size == K`) thus get exactly the DGQ epilogue `(acc as f32) · (s_x · s_w) (+ bias)`.
/// Codes are used as stored (the `bits` range is not re-checked); scales must be finite and `> 0`.
pub fn w8a8_gemm(
    x: &QuantizedActs,
    w: &SymIntWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    let (m, kx) = x.q.dim();
    let (n, k) = w.q.dim();
    check_k_match("w8a8_gemm", kx, k)?;
    check_scales(m, x.scales.view())?;
    check_bias(n, bias)?;
    let sw = super::float::sym_scales_f32(w)?;
    let wc = w.q.as_standard_layout();
    let src = I8Rows {
        w: contiguous("q", &wc)?,
        k,
    };
    let groups = k.checked_div(w.group_size).unwrap_or(0);
    let epi = ScaledOut {
        sx: ActScales(x.scales.view()),
        sw,
        groups,
        bias,
    };
    int_gemm(&widen(x.q.view()), (m, n, k), w.group_size, &src, &epi)
}
