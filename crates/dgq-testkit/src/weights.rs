//! Random valid weights and activations.

use dgq_core::quant::dual_grained::q_bounds;
use dgq_core::quant::Bits;
use dgq_core::{DualGrainedWeight, SymIntWeight};
use half::f16;
use ndarray::{Array1, Array2, Axis};
use rayon::prelude::*;

use crate::rng::{SplitMix64, TestRng};

/// A random valid DGQ weight `[n, k]`, fast enough for LLaMA-size shapes (each row's codes from
/// its own [`SplitMix64`] stream, rows in parallel): S2 mostly small (wide code ranges), some
/// large and some 127 (narrow ranges, where the overflow-safe clamp bites), random zero points,
/// codes anywhere inside `q_bounds`, S1 in `[1e-3, 1.1e-2)`.
pub fn random_dgq(n: usize, k: usize, g: usize, seed: u64) -> DualGrainedWeight {
    let ng = k / g;
    let mut rng = SplitMix64::new(seed);
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
    q.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(r, mut row)| {
            let mut rng = SplitMix64::new(seed ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            for (c, v) in row.iter_mut().enumerate() {
                let (lo, hi) = q_bounds(zeros[[r, c / g]] as i32, s2[[r, c / g]] as i32);
                *v = (lo + rng.below((hi - lo + 1) as u64) as i32) as u8;
            }
        });
    let s1 = Array1::from_shape_fn(n, |_| f16::from_f32(1e-3 + 1e-2 * rng.uniform()));
    DualGrainedWeight::new(g, q, zeros, s2, s1).expect("random weight is valid")
}

/// A random valid DGQ weight `[n, k]` drawn in one sequence from `rng`: zero points uniform in
/// 0..=15, then one S2 per group from `s2`, then every code uniform inside its `q_bounds`, then
/// one S1 per channel from `s1` (rounded to f16). `s2` must return 1..=127, `s1` a positive
/// value that stays finite in f16.
pub fn dgq_weight<R: TestRng>(
    rng: &mut R,
    n: usize,
    k: usize,
    g: usize,
    mut s2: impl FnMut(&mut R) -> i8,
    mut s1: impl FnMut(&mut R) -> f32,
) -> DualGrainedWeight {
    let ng = k / g;
    let zeros = Array2::from_shape_fn((n, ng), |_| rng.int_in(0, 15) as i8);
    let s2 = Array2::from_shape_fn((n, ng), |_| s2(rng));
    let q = Array2::from_shape_fn((n, k), |(r, c)| {
        let (lo, hi) = q_bounds(zeros[[r, c / g]] as i32, s2[[r, c / g]] as i32);
        rng.int_in(lo, hi) as u8
    });
    let s1 = Array1::from_shape_fn(n, |_| f16::from_f32(s1(rng)));
    DualGrainedWeight::new(g, q, zeros, s2, s1).expect("random weight is valid")
}

/// An S2 draw for [`dgq_weight`] covering every regime: half in 1..=16 (codes keep a wide
/// range), 30 % in 17..=64, 20 % in 65..=127 (the overflow clamp narrows the codes).
pub fn s2_tiered<R: TestRng>(rng: &mut R) -> i8 {
    (match rng.int_in(0, 9) {
        0..=4 => rng.int_in(1, 16),
        5..=7 => rng.int_in(17, 64),
        _ => rng.int_in(65, 127),
    }) as i8
}

/// A random valid symmetric weight `[n, k]`: codes uniform in `±bits.sym_max()`, then one
/// scale per group from `scale` (rounded to f16; positive and finite in f16).
pub fn sym_weight<R: TestRng>(
    rng: &mut R,
    bits: Bits,
    n: usize,
    k: usize,
    g: usize,
    mut scale: impl FnMut(&mut R) -> f32,
) -> SymIntWeight {
    let m = bits.sym_max();
    let q = Array2::from_shape_fn((n, k), |_| rng.int_in(-m, m) as i8);
    let scales = Array2::from_shape_fn((n, k / g), |_| f16::from_f32(scale(rng)));
    SymIntWeight::new(bits, g, q, scales).expect("random weight is valid")
}

/// Random INT8 activation codes `[m, k]`, uniform in [−127, 127].
pub fn random_acts(m: usize, k: usize, seed: u64) -> Vec<i8> {
    let mut rng = SplitMix64::new(seed);
    (0..m * k)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect()
}
