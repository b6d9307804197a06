//! Floating-point paths: the f32 GEMM helper, weight-only GEMMs (dequantize on the fly, f32
//! accumulation) and the fake-quant W4A8 / W8A8 paths.

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::int::DgqRows;
use super::{check_bias, contiguous};
use crate::act::{fake_quantize, ActQuant};
use crate::error::{check_group_size, Error, Result};
use crate::{DualGrainedWeight, SymIntWeight};

/// Below this many multiply-adds the f32 GEMM runs on the calling thread.
const PAR_MIN_FLOPS: usize = 1 << 18;

/// Weight rows dequantized at a time: about 4 MiB of f32 per block (at least 16 rows).
fn block_rows(k: usize) -> usize {
    ((1usize << 20) / k.max(1)).max(16)
}

/// `out = x · wᵀ` for `x [M, K]`, `w [N, K]`, `out [M, N]` (any strides; shapes pre-checked).
pub(crate) fn gemm_nt_into(x: ArrayView2<f32>, w: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
    let (m, k) = x.dim();
    let n = w.nrows();
    debug_assert_eq!(w.ncols(), k);
    debug_assert_eq!(out.dim(), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let par = if m * n * k >= PAR_MIN_FLOPS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (xs, ws, os) = (x.strides(), w.strides(), out.strides());
    let (os0, os1) = (os[0], os[1]);
    let dst = out.as_mut_ptr();
    // SAFETY: all three pointers come from live ndarray views whose shapes and element strides are
    // passed along unchanged, so every (row, col) the gemm crate addresses lies inside its view;
    // `out` is a unique mutable view, so it aliases neither input. `read_dst = false` means the
    // (possibly uninitialised-by-us) destination is only written. `rhs` is `wᵀ`: its row stride
    // (along K) is w's column stride and its column stride (along N) is w's row stride.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            os1,
            os0,
            false,
            x.as_ptr(),
            xs[1],
            xs[0],
            w.as_ptr(),
            ws[0],
            ws[1],
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// `Y = X · Wᵀ` in f32 with the `gemm` crate (rayon-parallel for non-tiny shapes): `x [M, K]`,
/// `w [N, K]` → `[M, N]`. Non-finite inputs propagate as IEEE arithmetic does; the summation
/// order is the `gemm` crate's (blocked, FMA), so results match a naive loop to within
/// `γ_K · Σ_k |x_k w_k|`, not bit for bit.
pub fn matmul_f32_nt(x: ArrayView2<f32>, w: ArrayView2<f32>) -> Result<Array2<f32>> {
    if x.ncols() != w.ncols() {
        return Err(Error::shape(
            "matmul_f32_nt: x columns vs w columns (K)",
            w.ncols(),
            x.ncols(),
        ));
    }
    let mut out = Array2::<f32>::zeros((x.nrows(), w.nrows()));
    gemm_nt_into(x, w, out.view_mut());
    Ok(out)
}

/// Block-wise "dequantize then f32 GEMM": `fill(n, row)` writes dequantized weight row `n`;
/// bounded memory (one block of rows at a time), rows dequantized in parallel.
fn dequant_gemm<F>(
    x: ArrayView2<f32>,
    n: usize,
    fill: F,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>>
where
    F: Fn(usize, &mut [f32]) -> Result<()> + Sync,
{
    let (m, k) = x.dim();
    check_bias(n, bias)?;
    let mut out = Array2::<f32>::zeros((m, n));
    let nb = block_rows(k);
    let mut wblock = Array2::<f32>::zeros((nb.min(n), k));
    for n0 in (0..n).step_by(nb) {
        let rows = nb.min(n - n0);
        let mut wb = wblock.slice_mut(s![..rows, ..]);
        wb.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, mut row)| match row.as_slice_mut() {
                Some(r) => fill(n0 + i, r),
                None => Err(Error::invariant("weight block", "row is not contiguous")),
            })?;
        gemm_nt_into(x, wb.view(), out.slice_mut(s![.., n0..n0 + rows]));
    }
    if let Some(b) = bias {
        out.axis_iter_mut(Axis(0)).for_each(|mut row| row += &b);
    }
    Ok(out)
}

/// Scales of a symmetric weight as row-major f32 `[N, G]`, checking shape, group size and values.
pub(crate) fn sym_scales_f32(w: &SymIntWeight) -> Result<Vec<f32>> {
    let (n, k) = w.q.dim();
    check_group_size(k, w.group_size)?;
    let ng = k / w.group_size;
    if w.scales.dim() != (n, ng) {
        return Err(Error::shape(
            "scales",
            format!("[{n}, {ng}]"),
            format!("{:?}", w.scales.shape()),
        ));
    }
    w.scales
        .indexed_iter()
        .map(|((r, c), s)| {
            let v = s.to_f32();
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(Error::invariant(
                    "scales",
                    format!("scales[{r}, {c}] = {v} must be finite and > 0"),
                ))
            }
        })
        .collect()
}

fn check_x_k(what: &str, x_k: usize, w_k: usize) -> Result<()> {
    if x_k != w_k {
        return Err(Error::shape(
            format!("{what}: activation columns vs weight K"),
            w_k,
            x_k,
        ));
    }
    Ok(())
}

/// Dequantized rows of a symmetric weight: `(q as f32) · scale[n, c/g]` (the same product as
/// [`SymIntWeight::dequantize`]).
fn sym_gemm(
    x: ArrayView2<f32>,
    w: &SymIntWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    let (n, k) = w.q.dim();
    let sw = sym_scales_f32(w)?;
    let g = w.group_size;
    let ng = k / g;
    let qc = w.q.as_standard_layout();
    let q = contiguous("q", &qc)?;
    dequant_gemm(
        x,
        n,
        |r, out| {
            for ((og, qg), &s) in out
                .chunks_exact_mut(g)
                .zip(q[r * k..(r + 1) * k].chunks_exact(g))
                .zip(&sw[r * ng..])
            {
                for (o, &v) in og.iter_mut().zip(qg) {
                    *o = f32::from(v) * s;
                }
            }
            Ok(())
        },
        bias,
    )
}

/// Weight-only GEMM with a symmetric integer weight (W4A16 / W8A16): `Y = X · Ŵᵀ (+ bias)` with
/// `Ŵ = q · scale` dequantized on the fly, f32 accumulation.
pub fn w4a16_gemm(
    x: ArrayView2<f32>,
    w: &SymIntWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    check_x_k("w4a16_gemm", x.ncols(), w.k())?;
    sym_gemm(x, w, bias)
}

/// Dequantized rows of a DGQ weight: `(W_s8 as f32) · s1[n]` (as [`DualGrainedWeight::dequantize`]),
/// with the invariants checked during unpacking.
fn dgq_gemm(
    x: ArrayView2<f32>,
    w: &DualGrainedWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    let (n, k) = w.q.dim();
    let (q, z, s2) = (
        w.q.as_standard_layout(),
        w.zeros.as_standard_layout(),
        w.s2.as_standard_layout(),
    );
    let rows = DgqRows::new(w, &q, &z, &s2)?;
    let s1 = w.s1.iter().map(|s| s.to_f32()).collect::<Vec<_>>();
    if let Some((i, v)) = s1
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v > 0.0))
    {
        return Err(Error::invariant(
            "s1",
            format!("s1[{i}] = {v} must be finite and > 0"),
        ));
    }
    dequant_gemm(
        x,
        n,
        |r, out| {
            let mut tmp = vec![0i16; k];
            rows.unpack(r, &mut tmp)?;
            let s = s1[r];
            for (o, &v) in out.iter_mut().zip(&tmp) {
                *o = f32::from(v) * s;
            }
            Ok(())
        },
        bias,
    )
}

/// Weight-only GEMM with a DGQ weight and float activations: `Y = X · Ŵᵀ (+ bias)`,
/// `Ŵ = s1 · S2 · (q − z)` dequantized on the fly, f32 accumulation.
pub fn w4a16_gemm_dgq(
    x: ArrayView2<f32>,
    w: &DualGrainedWeight,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    check_x_k("w4a16_gemm_dgq", x.ncols(), w.k())?;
    dgq_gemm(x, w, bias)
}

/// Fake-quant W4A8: activations quantized and dequantized with `act`
/// ([`crate::act::fake_quantize`]: `x̂ = q · s_x`), then `Y = X̂ · Ŵᵀ (+ bias)` in f32 with the
/// dequantized DGQ weight. [`ActQuant::None`] makes it [`w4a16_gemm_dgq`].
pub fn fake_quant_w4a8(
    x: ArrayView2<f32>,
    w: &DualGrainedWeight,
    act: &ActQuant,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    check_x_k("fake_quant_w4a8", x.ncols(), w.k())?;
    let xh = fake_quantize(x, act)?;
    dgq_gemm(xh.view(), w, bias)
}

/// Fake-quant W8A8 (any symmetric integer weight): `Y = X̂ · Ŵᵀ (+ bias)` in f32.
pub fn fake_quant_w8a8(
    x: ArrayView2<f32>,
    w: &SymIntWeight,
    act: &ActQuant,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    check_x_k("fake_quant_w8a8", x.ncols(), w.k())?;
    let xh = fake_quantize(x, act)?;
    sym_gemm(xh.view(), w, bias)
}
