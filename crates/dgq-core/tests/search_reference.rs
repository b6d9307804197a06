//! The fast search against the straightforward f64 reference: same optimum per row, and the
//! losses the report gives are the true losses of the weight it returns.

mod search_common;

use dgq_core::quant::search::{search_report, search_with_hessian_report, Hessian, RowChoice};
use dgq_core::{DgqConfig, LossMode};
use search_common::*;

/// Relative agreement of float losses: the fast path accumulates in f32 (tiles of f64), the
/// reference in f64; 1e-4 relative leaves room for that and nothing else.
const REL: f64 = 1e-4;

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= REL * scale.max(1e-30)
}

fn check(n: usize, k: usize, t: usize, g: usize, mode: LossMode, seed: u64) {
    let w = weights(n, k, 3, seed);
    let x = activations(t, k, 3, seed + 1);
    let h = hessian_f64(x.view());
    let cfg = DgqConfig {
        group_size: g,
        loss: mode,
        ..DgqConfig::default()
    };
    let (q, rep) = if mode == LossMode::Hessian {
        let mut hs = Hessian::new(k);
        hs.add_batch(x.view()).unwrap();
        search_with_hessian_report(w.view(), &hs, &cfg).unwrap()
    } else {
        search_report(w.view(), x.view(), &cfg).unwrap()
    };
    q.validate().unwrap();
    let reference = reference_search(w.view(), &h, &cfg);
    let deq = q.dequantize();
    for (r, rr) in reference.iter().enumerate() {
        let got = row_loss(w.row(r), deq.row(r), &h);
        let scale = rr.rtn;
        assert!(
            close(got, rr.best, scale),
            "row {r}: search loss {got} vs reference optimum {} (rtn {})",
            rr.best,
            rr.rtn
        );
        assert!(
            close(rep.row_loss_final[r], got, scale),
            "row {r}: reported {} vs true {got}",
            rep.row_loss_final[r]
        );
        assert!(
            close(rep.row_loss_rtn[r], rr.rtn, scale),
            "row {r}: reported rtn {} vs {}",
            rep.row_loss_rtn[r],
            rr.rtn
        );
        if let RowChoice::Grid { index, .. } = rep.row_choice[r] {
            assert!(index < cfg.phase2_grid);
        }
    }
    let ref_p1: f64 = reference.iter().map(|r| r.phase1_only).sum();
    let ref_rtn: f64 = reference.iter().map(|r| r.rtn).sum();
    assert!(
        close(rep.loss_phase1_only, ref_p1, ref_rtn),
        "{} vs {ref_p1}",
        rep.loss_phase1_only
    );
}

#[test]
fn direct_matches_reference() {
    check(12, 256, 96, 64, LossMode::Direct, 1);
    check(5, 96, 300, 32, LossMode::Direct, 2);
}

#[test]
fn hessian_matches_reference() {
    check(12, 256, 96, 64, LossMode::Hessian, 3);
    check(5, 96, 300, 32, LossMode::Hessian, 4);
}

#[test]
fn auto_matches_reference() {
    check(7, 128, 64, 16, LossMode::Auto, 5);
    check(7, 64, 400, 16, LossMode::Auto, 6);
}
