//! A layer with outlier input channels (a few activation channels 20–50× larger) and outlier
//! weights: the two-phase search must beat the direct RTN decomposition on output MSE by a clear
//! margin. `cargo test --test search_outliers -- --nocapture` prints the numbers.

mod search_common;

use dgq_core::quant::search::search_report;
use dgq_core::{DgqConfig, DualGrainedWeight};
use search_common::*;

#[test]
fn search_beats_rtn_with_outliers() {
    let (n, k, t, g) = (96, 512, 384, 64);
    let w = weights(n, k, 12, 7);
    let x = activations(t, k, 6, 8);
    let cfg = DgqConfig {
        group_size: g,
        ..DgqConfig::default()
    };
    let (q, rep) = search_report(w.view(), x.view(), &cfg).unwrap();
    let h = hessian_f64(x.view());
    // Output MSE per token and output channel, computed independently of the search.
    let denom = (t * n) as f64;
    let mse_search = loss(w.view(), &q, &h) / denom;
    let mse_rtn = loss(w.view(), &DualGrainedWeight::rtn(w.view(), g).unwrap(), &h) / denom;
    let rtn_rows = rep
        .row_choice
        .iter()
        .filter(|c| matches!(c, dgq_core::quant::search::RowChoice::Rtn))
        .count();
    println!(
        "output MSE: RTN decomposition {mse_rtn:.5e}, phase 1 only {:.5e}, two-phase search {mse_search:.5e} \
         ({:.1} % lower than RTN; {rtn_rows}/{n} rows kept RTN)",
        rep.loss_phase1_only / denom,
        100.0 * (1.0 - mse_search / mse_rtn)
    );
    assert!(
        mse_search < 0.7 * mse_rtn,
        "search MSE {mse_search:e} is not clearly below RTN {mse_rtn:e}"
    );
    // Phase 2 adds to phase 1 on its own.
    assert!(rep.loss_final < rep.loss_phase1_only);
}
