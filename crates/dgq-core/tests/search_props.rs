//! Properties of the two-phase search on random small layers: the result satisfies every
//! invariant of the dual-grained format, is never worse than the direct RTN decomposition on the
//! calibration loss, and the losses it reports are the true losses of what it returns.

mod search_common;

use dgq_core::quant::search::{search_report, search_with_hessian_report, Hessian};
use dgq_core::{DgqConfig, DualGrainedWeight, LossMode};
use ndarray::Array2;
use proptest::prelude::*;
use search_common::*;

/// The search accumulates `X ŵ` in f32 (tiles summed in f64) and subtracts it from `X w`, so its
/// loss carries an absolute rounding error proportional to the output energy `‖X w‖²` (about
/// 1e-7 of it; bound 1e-6), on top of a relative one (bound 1e-4 of the RTN loss). The
/// independent check below is f64 throughout.
const REL: f64 = 1e-4;
const ENERGY: f64 = 1e-6;

fn layer(n: usize, k: usize, t: usize, seed: u64, zero_rows: bool) -> (Array2<f32>, Array2<f32>) {
    let mut w = weights(n, k, 2, seed);
    if zero_rows {
        w.row_mut(0).fill(0.0);
        if k >= 4 {
            // A constant group and a group of one sign exercise the zero-widened range.
            let g = k / 2;
            w.row_mut(n - 1).slice_mut(ndarray::s![..g]).fill(0.01);
        }
    }
    (w, activations(t, k, 1, seed ^ 0x5eed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn never_worse_than_rtn_and_reports_true_losses(
        n in 1usize..6,
        groups in 1usize..4,
        g in prop::sample::select(vec![2usize, 8, 16, 32]),
        t in 1usize..48,
        p1 in 1usize..8,
        p2 in 1usize..24,
        r1 in 0.05f32..=1.0,
        r2 in 0.05f32..=1.0,
        mode in prop::sample::select(vec![LossMode::Auto, LossMode::Direct, LossMode::Hessian]),
        zero_rows in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let k = groups * g;
        let (w, x) = layer(n, k, t, seed, zero_rows);
        let cfg = DgqConfig {
            group_size: g,
            phase1_grid: p1,
            phase1_min_ratio: r1,
            phase2_grid: p2,
            phase2_min_ratio: r2,
            loss: mode,
        };
        let h = hessian_f64(x.view());
        let (q, rep) = if mode == LossMode::Hessian && seed % 2 == 0 {
            let mut hs = Hessian::new(k);
            hs.add_batch(x.view()).unwrap();
            search_with_hessian_report(w.view(), &hs, &cfg).unwrap()
        } else {
            search_report(w.view(), x.view(), &cfg).unwrap()
        };
        q.validate().unwrap();
        prop_assert_eq!(q.dim_check(), (n, k, g));
        let rtn = DualGrainedWeight::rtn(w.view(), g).unwrap();
        let deq = q.dequantize();
        let deq_rtn = rtn.dequantize();
        for r in 0..n {
            let l = row_loss(w.row(r), deq.row(r), &h);
            let l_rtn = row_loss(w.row(r), deq_rtn.row(r), &h);
            let energy = row_loss(w.row(r), ndarray::Array1::<f32>::zeros(k).view(), &h);
            let tol = REL * l_rtn + ENERGY * energy + 1e-30;
            prop_assert!(l <= l_rtn + tol, "row {}: search {} > rtn {}", r, l, l_rtn);
            prop_assert!((rep.row_loss_final[r] - l).abs() <= tol, "row {}: reported {} vs {}", r, rep.row_loss_final[r], l);
            prop_assert!((rep.row_loss_rtn[r] - l_rtn).abs() <= tol, "row {}: reported rtn {} vs {}", r, rep.row_loss_rtn[r], l_rtn);
        }
        prop_assert!(rep.loss_final <= rep.loss_rtn);
        prop_assert!(rep.loss_final <= rep.loss_phase1_only);
        prop_assert_eq!(rep.tokens, t);
    }
}

trait DimCheck {
    fn dim_check(&self) -> (usize, usize, usize);
}

impl DimCheck for DualGrainedWeight {
    fn dim_check(&self) -> (usize, usize, usize) {
        (self.n(), self.k(), self.group_size)
    }
}
