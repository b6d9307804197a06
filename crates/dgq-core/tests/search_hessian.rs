//! The Hessian accumulator, the agreement of the two loss evaluations, and determinism.

mod search_common;

use dgq_core::quant::search::{search_report, search_with_hessian_report, Hessian};
use dgq_core::{DgqConfig, LossMode};
use ndarray::{s, Array2};
use search_common::*;

fn max_abs_diff(a: &Array2<f64>, b: ndarray::ArrayView2<f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn batches_equal_one_shot() {
    let (t, k) = (2600, 24); // more tokens than one f32 slice
    let x = activations(t, k, 2, 3);
    let reference = hessian_f64(x.view());
    let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut one = Hessian::new(k);
    one.add_batch(x.view()).unwrap();
    let mut batched = Hessian::new(k);
    for (a, b) in [(0, 1), (1, 700), (700, 701), (701, 2600)] {
        batched.add_batch(x.slice(s![a..b, ..])).unwrap();
    }
    assert_eq!(one.tokens(), t);
    assert_eq!(batched.tokens(), t);
    // f32 products summed over at most 2048 tokens, then f64: ~1e-7 relative to the largest entry.
    assert!(max_abs_diff(&reference, one.matrix()) <= 1e-6 * scale);
    assert!(max_abs_diff(&reference, batched.matrix()) <= 1e-6 * scale);
    // Symmetric, and merging two halves equals the whole.
    let m = batched.matrix();
    assert_eq!(m, m.t());
    let mut first = Hessian::new(k);
    first.add_batch(x.slice(s![..1000, ..])).unwrap();
    let mut second = Hessian::new(k);
    second.add_batch(x.slice(s![1000.., ..])).unwrap();
    first.merge(&second).unwrap();
    assert_eq!(first.tokens(), t);
    assert!(max_abs_diff(&reference, first.matrix()) <= 1e-6 * scale);
    // A matrix from elsewhere is symmetrized.
    let mut asym = reference.clone();
    asym[[0, 1]] += 2.0;
    let h = Hessian::from_matrix(asym.view(), t).unwrap();
    assert_eq!(h.matrix()[[0, 1]], reference[[0, 1]] + 1.0);
    assert_eq!(h.matrix()[[1, 0]], reference[[1, 0]] + 1.0);
}

#[test]
fn direct_and_hessian_agree() {
    let (n, k, t, g) = (40, 256, 200, 32);
    let w = weights(n, k, 4, 21);
    let x = activations(t, k, 3, 22);
    let h = hessian_f64(x.view());
    let cfg = |loss| DgqConfig {
        group_size: g,
        loss,
        ..DgqConfig::default()
    };
    let (qd, rd) = search_report(w.view(), x.view(), &cfg(LossMode::Direct)).unwrap();
    let (qh, rh) = search_report(w.view(), x.view(), &cfg(LossMode::Hessian)).unwrap();
    let mut hs = Hessian::new(k);
    hs.add_batch(x.view()).unwrap();
    let (qa, ra) = search_with_hessian_report(w.view(), &hs, &cfg(LossMode::Auto)).unwrap();
    assert_eq!(rd.mode, LossMode::Direct);
    assert_eq!(rh.mode, LossMode::Hessian);
    assert_eq!(ra.mode, LossMode::Hessian);
    // Hessian given or built from the same X: the same numbers.
    assert_eq!(qh, qa);
    let (dd, dh) = (qd.dequantize(), qh.dequantize());
    let mut same = 0;
    for r in 0..n {
        let (ld, lh) = (
            row_loss(w.row(r), dd.row(r), &h),
            row_loss(w.row(r), dh.row(r), &h),
        );
        // Both evaluate the same loss in f32 with different rounding: a different choice is only
        // allowed between candidates whose losses tie to ~1e-6 of the RTN loss.
        assert!(
            (ld - lh).abs() <= 1e-4 * rd.row_loss_rtn[r],
            "row {r}: direct {ld} vs hessian {lh}"
        );
        same += usize::from(dd.row(r) == dh.row(r));
    }
    println!("direct and Hessian modes chose identical rows for {same}/{n} rows");
    assert!(same >= n * 9 / 10);
}

#[test]
fn deterministic_across_thread_counts() {
    // More rows than one super-block and several row blocks per task.
    let (n, k, g) = (300, 64, 16);
    let w = weights(n, k, 10, 31);
    for (t, loss) in [(48, LossMode::Direct), (80, LossMode::Hessian)] {
        let x = activations(t, k, 2, 32);
        let cfg = DgqConfig {
            group_size: g,
            loss,
            ..DgqConfig::default()
        };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| search_report(w.view(), x.view(), &cfg).unwrap())
        };
        let (q1, r1) = run(1);
        let (q3, r3) = run(3);
        assert_eq!(q1, q3);
        assert_eq!(r1, r3);
    }
}
