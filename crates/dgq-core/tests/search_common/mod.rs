//! Shared helpers of the search tests: synthetic calibration data and a straightforward
//! (slow, obviously correct) reference of the two-phase search with f64 losses.
#![allow(dead_code)]

use dgq_core::quant::dual_grained::{channel_scale, q_bounds, W_S8_MAX};
use dgq_core::quant::rtn::{asym_code, asym_params, min_max};
use dgq_core::{DgqConfig, DualGrainedWeight};
use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Activations `[t, k]` with LLM-like structure: Gaussian tokens, a shared per-token direction
/// (correlated channels), and `outliers` input channels scaled 20–50×.
pub fn activations(t: usize, k: usize, outliers: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = Normal::new(0f32, 1.0).unwrap();
    let dir: Vec<f32> = (0..k).map(|_| n.sample(&mut rng)).collect();
    let mut scale = vec![1f32; k];
    for _ in 0..outliers {
        let j = rng.random_range(0..k);
        scale[j] = rng.random_range(20f32..50.0);
    }
    let mut x = Array2::zeros((t, k));
    for mut row in x.rows_mut() {
        let common = n.sample(&mut rng);
        for (j, v) in row.iter_mut().enumerate() {
            *v = (n.sample(&mut rng) + 0.5 * common * dir[j]) * scale[j];
        }
    }
    x
}

/// Weights `[n, k]`: Gaussian with a few large outlier weights.
pub fn weights(n: usize, k: usize, outliers: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nd = Normal::new(0f32, 0.02).unwrap();
    let mut w = Array2::from_shape_fn((n, k), |_| nd.sample(&mut rng));
    for _ in 0..outliers {
        let (r, c) = (rng.random_range(0..n), rng.random_range(0..k));
        w[[r, c]] *= rng.random_range(5f32..12.0);
    }
    w
}

/// `XᵀX` in f64.
pub fn hessian_f64(x: ArrayView2<f32>) -> Array2<f64> {
    let x64 = x.mapv(|v| v as f64);
    x64.t().dot(&x64)
}

/// `eᵀ H e` in f64 for one row.
pub fn row_loss(w: ArrayView1<f32>, wq: ArrayView1<f32>, h: &Array2<f64>) -> f64 {
    let e: ndarray::Array1<f64> = w
        .iter()
        .zip(wq.iter())
        .map(|(&a, &b)| (a - b) as f64)
        .collect();
    e.dot(&h.dot(&e))
}

/// `Σ_rows eᵀ H e` of a quantized weight, in f64.
pub fn loss(w: ArrayView2<f32>, q: &DualGrainedWeight, h: &Array2<f64>) -> f64 {
    let d = q.dequantize();
    w.rows()
        .into_iter()
        .zip(d.rows())
        .map(|(a, b)| row_loss(a, b, h))
        .sum()
}

fn ratio(i: usize, n: usize, min: f32) -> f32 {
    if n <= 1 {
        1.0
    } else {
        1.0 - (1.0 - min) * i as f32 / (n - 1) as f32
    }
}

/// Dequantized row for group params and a channel scale, with the DGQ arithmetic.
pub fn dgq_row(w: ArrayView1<f32>, g: usize, params: &[(f32, i32)], s1: f32) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for (gi, &(sg, z)) in params.iter().enumerate() {
        let s2 = (sg / s1).round_ties_even().clamp(1.0, W_S8_MAX as f32) as i32;
        let (lo, hi) = q_bounds(z, s2);
        for c in gi * g..(gi + 1) * g {
            let q = asym_code(w[c], s1 * s2 as f32, z, lo, hi);
            out[c] = s1 * (s2 * (q - z)) as f32;
        }
    }
    out
}

/// Result of the reference search for one row: the best loss and the RTN loss.
pub struct RefRow {
    pub best: f64,
    pub rtn: f64,
    pub phase1_only: f64,
}

/// The two-phase search written the slow way: every candidate's loss from scratch in f64.
pub fn reference_search(w: ArrayView2<f32>, h: &Array2<f64>, cfg: &DgqConfig) -> Vec<RefRow> {
    let g = cfg.group_size;
    let k = w.ncols();
    w.rows()
        .into_iter()
        .map(|row| {
            let mut p1 = Vec::new();
            let mut rtn = Vec::new();
            for gi in 0..k / g {
                let wg = row.slice(ndarray::s![gi * g..(gi + 1) * g]);
                let (lo, hi) = min_max(wg.iter().copied());
                rtn.push(asym_params(lo, hi, 15));
                let hg = h.slice(ndarray::s![gi * g..(gi + 1) * g, gi * g..(gi + 1) * g]);
                let mut best = (f64::INFINITY, (0f32, 0i32));
                for i in 0..cfg.phase1_grid {
                    let r = ratio(i, cfg.phase1_grid, cfg.phase1_min_ratio);
                    let (s, z) = asym_params(r * lo, r * hi, 15);
                    let e: ndarray::Array1<f64> = wg
                        .iter()
                        .map(|&x| (x - s * (asym_code(x, s, z, 0, 15) - z) as f32) as f64)
                        .collect();
                    let l = e.dot(&hg.dot(&e));
                    if l < best.0 {
                        best = (l, (s, z));
                    }
                }
                p1.push(best.1);
            }
            let amax = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
            let s1_rtn = channel_scale(amax / W_S8_MAX as f32).to_f32();
            let l_rtn = row_loss(row, dgq_row(row, g, &rtn, s1_rtn).as_slice().into(), h);
            let mut best = l_rtn;
            let mut phase1_only = f64::NAN;
            for i in 0..cfg.phase2_grid {
                let r = ratio(i, cfg.phase2_grid, cfg.phase2_min_ratio);
                let s1 = channel_scale(r * amax / W_S8_MAX as f32).to_f32();
                let l = row_loss(row, dgq_row(row, g, &p1, s1).as_slice().into(), h);
                if i == 0 {
                    phase1_only = l;
                }
                best = best.min(l);
            }
            RefRow {
                best,
                rtn: l_rtn,
                phase1_only,
            }
        })
        .collect()
}
