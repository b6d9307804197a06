//! f32 building blocks of the reference decoders: GEMM (the `gemm` crate), norms, activations,
//! softmax and rotary embeddings. Shapes are checked by the callers in `layer`/`model`; the
//! functions here take already-validated, standard-layout arrays.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Whether a GEMM may spread over the rayon pool (big projections) or must stay on the calling
/// thread (per-head attention GEMMs that are themselves run in parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Par {
    Rayon,
    Single,
}

fn gemm_par(par: Par) -> gemm::Parallelism {
    match par {
        Par::Rayon => gemm::Parallelism::Rayon(0),
        Par::Single => gemm::Parallelism::None,
    }
}

/// `dst[M, N] = a[M, K] · b[N, K]ᵀ` (the `Y = X·Wᵀ` of every linear layer).
pub(crate) fn matmul_nt(a: ArrayView2<f32>, b: ArrayView2<f32>, par: Par) -> Result<Array2<f32>> {
    let (m, k) = a.dim();
    let (n, kb) = b.dim();
    if k != kb {
        return Err(Error::shape("matmul_nt inner dimension", k, kb));
    }
    let mut dst = Array2::<f32>::zeros((m, n));
    gemm_into(dst.view_mut(), a, b.t(), par);
    Ok(dst)
}

/// `dst[M, N] = a[M, K] · b[K, N]`.
pub(crate) fn matmul_nn(a: ArrayView2<f32>, b: ArrayView2<f32>, par: Par) -> Result<Array2<f32>> {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if k != kb {
        return Err(Error::shape("matmul_nn inner dimension", k, kb));
    }
    let mut dst = Array2::<f32>::zeros((m, n));
    gemm_into(dst.view_mut(), a, b, par);
    Ok(dst)
}

/// `dst = a · b` for arbitrary (strided) views with matching dimensions; `dst` is overwritten.
fn gemm_into(mut dst: ArrayViewMut2<f32>, a: ArrayView2<f32>, b: ArrayView2<f32>, par: Par) {
    let (m, k) = a.dim();
    let n = b.ncols();
    debug_assert_eq!(b.nrows(), k);
    debug_assert_eq!(dst.dim(), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    let [a_rs, a_cs] = [a.strides()[0], a.strides()[1]];
    let [b_rs, b_cs] = [b.strides()[0], b.strides()[1]];
    let [d_rs, d_cs] = [dst.strides()[0], dst.strides()[1]];
    // SAFETY: the three views are valid for the (m, n, k) extents and strides passed (ndarray
    // guarantees every index in range maps into the allocation), `dst` is uniquely borrowed and
    // cannot alias `a` or `b`, and `read_dst = false` means dst's old contents are never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            d_cs,
            d_rs,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm_par(par),
        );
    }
}

/// Root-mean-square norm of each row: `x / sqrt(mean(x²) + eps) · w`.
pub(crate) fn rms_norm(x: ArrayView2<f32>, w: ArrayView1<f32>, eps: f32) -> Array2<f32> {
    let mut out = x.to_owned();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / row.len() as f64;
            let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
            Zip::from(&mut row)
                .and(&w)
                .for_each(|v, &g| *v = *v * inv * g);
        });
    out
}

/// LayerNorm of each row: `(x − mean) / sqrt(var + eps) · w + b`.
pub(crate) fn layer_norm(
    x: ArrayView2<f32>,
    w: ArrayView1<f32>,
    b: Option<ArrayView1<f32>>,
    eps: f32,
) -> Array2<f32> {
    let mut out = x.to_owned();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let n = row.len() as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps as f64).sqrt();
            Zip::from(&mut row)
                .and(&w)
                .for_each(|v, &g| *v = ((*v as f64 - mean) * inv) as f32 * g);
            if let Some(b) = &b {
                Zip::from(&mut row).and(b).for_each(|v, &c| *v += c);
            }
        });
    out
}

/// SiLU (x·σ(x)).
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// In-place numerically stable softmax of a row.
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Adds a bias row to every row.
pub(crate) fn add_bias(y: &mut Array2<f32>, b: ArrayView1<f32>) {
    y.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| row += &b);
}
