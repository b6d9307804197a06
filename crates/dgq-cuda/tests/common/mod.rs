//! Helpers shared by the GPU tests: deterministic random DGQ weights and CPU references.
#![allow(dead_code)]

use dgq_core::quant::dual_grained::q_bounds;
use dgq_core::DualGrainedWeight;
use half::f16;
use ndarray::{Array1, Array2};
use rayon::prelude::*;

/// SplitMix64: tiny, fast and reproducible across platforms.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A valid random DGQ weight: S2 mostly small (wide q ranges) with some large values (narrow
/// ranges, exercising the overflow-safe clamp), random zero points and codes within q_bounds.
pub fn random_weight(n: usize, k: usize, gs: usize, seed: u64) -> DualGrainedWeight {
    let ng = k / gs;
    let mut rng = Rng(seed);
    let mut zeros = Array2::<i8>::zeros((n, ng));
    let mut s2 = Array2::<i8>::zeros((n, ng));
    for v in s2.iter_mut() {
        *v = match rng.below(8) {
            0 => 1 + rng.below(127) as i8,
            1 => 127,
            _ => 1 + rng.below(16) as i8,
        };
    }
    for v in zeros.iter_mut() {
        *v = rng.below(16) as i8;
    }
    let mut q = Array2::<u8>::zeros((n, k));
    q.axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(r, mut row)| {
            let mut rng = Rng(seed ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            for (c, v) in row.iter_mut().enumerate() {
                let (lo, hi) = q_bounds(zeros[[r, c / gs]] as i32, s2[[r, c / gs]] as i32);
                *v = (lo + rng.below((hi - lo + 1) as u64) as i32) as u8;
            }
        });
    let s1 = Array1::from_shape_fn(n, |_| f16::from_f32(1e-3 + 1e-2 * rng.uniform()));
    DualGrainedWeight::new(gs, q, zeros, s2, s1).expect("random weight is valid")
}

/// Random int8 activations in [−127, 127].
pub fn random_acts(m: usize, k: usize, seed: u64) -> Vec<i8> {
    let mut rng = Rng(seed);
    (0..m * k)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect()
}

/// Exact INT32 reference `X · W_s8ᵀ` (i64 accumulation, checked to fit i32).
pub fn ref_gemm_i32(x: &[i8], m: usize, w8: &Array2<i8>) -> Vec<i32> {
    let (n, k) = w8.dim();
    let w8 = w8.as_standard_layout();
    let wsl = w8.as_slice().expect("standard layout");
    let mut out = vec![0i32; m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(mi, row)| {
        let xr = &x[mi * k..(mi + 1) * k];
        for (ni, o) in row.iter_mut().enumerate() {
            let wr = &wsl[ni * k..(ni + 1) * k];
            // i32 partial sums over 256 columns cannot overflow (256·127·127 < 2^31).
            let mut acc: i64 = 0;
            for (xc, wc) in xr.chunks(256).zip(wr.chunks(256)) {
                acc += xc
                    .iter()
                    .zip(wc)
                    .map(|(&a, &b)| a as i32 * b as i32)
                    .sum::<i32>() as i64;
            }
            *o = i32::try_from(acc).expect("accumulator fits i32");
        }
    });
    out
}

/// CPU dynamic per-token quantization, as specified for dgq_core::act (round half to even).
pub fn ref_quant_dynamic(
    x: &[f32],
    m: usize,
    k: usize,
    smooth: Option<&[f32]>,
) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; m * k];
    let mut scales = vec![0f32; m];
    for r in 0..m {
        let row: Vec<f32> = (0..k)
            .map(|c| smooth.map_or(x[r * k + c], |s| x[r * k + c] / s[c]))
            .collect();
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        scales[r] = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for c in 0..k {
            q[r * k + c] = (row[c] * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, scales)
}

/// CPU static quantization with `inv = 1 / scale`.
pub fn ref_quant_static(
    x: &[f32],
    m: usize,
    k: usize,
    smooth: Option<&[f32]>,
    scale: f32,
) -> Vec<i8> {
    let inv = 1.0 / scale;
    (0..m * k)
        .map(|i| {
            let v = smooth.map_or(x[i], |s| x[i] / s[i % k]);
            (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8
        })
        .collect()
}
