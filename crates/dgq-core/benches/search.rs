//! DGQ two-phase search on a 4096×4096 layer with 2048 calibration tokens (with outlier input
//! channels), against a naive implementation that re-multiplies X for every grid point
//! (phase 1: `X_g e_g` per candidate and group; phase 2: `X e` per candidate and row), timed on a
//! few rows and extrapolated to the layer.
//!
//! Shapes can be overridden for quick runs: `DGQ_BENCH_N`, `DGQ_BENCH_K`, `DGQ_BENCH_T`,
//! `DGQ_BENCH_NAIVE_ROWS`.

#[path = "../tests/search_common/mod.rs"]
mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode};
use dgq_core::quant::dual_grained::{channel_scale, W_S8_MAX};
use dgq_core::quant::rtn::{asym_code, asym_params, min_max};
use dgq_core::quant::search::{search_report, search_with_hessian_report, Hessian};
use dgq_core::{DgqConfig, LossMode};
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    w: Array2<f32>,
    x: Array2<f32>,
    naive_rows: usize,
}

fn setup() -> Setup {
    let n = env("DGQ_BENCH_N", 4096);
    let k = env("DGQ_BENCH_K", 4096);
    let t = env("DGQ_BENCH_T", 2048);
    Setup {
        w: common::weights(n, k, n / 8, 11),
        // ~0.5 % outlier input channels, 20–50× larger, as in LLM activations.
        x: common::activations(t, k, k / 200, 12),
        naive_rows: env("DGQ_BENCH_NAIVE_ROWS", 8),
    }
}

fn ratio(i: usize, n: usize, min: f32) -> f32 {
    if n <= 1 {
        1.0
    } else {
        1.0 - (1.0 - min) * i as f32 / (n - 1) as f32
    }
}

fn sq_norm(v: ArrayView1<f32>) -> f64 {
    v.iter().map(|&a| (a as f64) * (a as f64)).sum()
}

/// The search written the naive way: every grid point's loss by multiplying X. Returns the best
/// loss per row.
fn naive_search(w: ArrayView2<f32>, x: ArrayView2<f32>, cfg: &DgqConfig) -> Vec<f64> {
    let g = cfg.group_size;
    let k = w.ncols();
    let rows: Vec<usize> = (0..w.nrows()).collect();
    rows.par_iter()
        .map(|&r| {
            let row = w.row(r);
            let mut p1 = Vec::new();
            let mut rtn = Vec::new();
            for gi in 0..k / g {
                let wg = row.slice(s![gi * g..(gi + 1) * g]);
                let xg = x.slice(s![.., gi * g..(gi + 1) * g]);
                let (lo, hi) = min_max(wg.iter().copied());
                rtn.push(asym_params(lo, hi, 15));
                let mut best = (f64::INFINITY, (0f32, 0i32));
                for i in 0..cfg.phase1_grid {
                    let rr = ratio(i, cfg.phase1_grid, cfg.phase1_min_ratio);
                    let (sc, z) = asym_params(rr * lo, rr * hi, 15);
                    let e: Array1<f32> =
                        wg.mapv(|v| v - sc * (asym_code(v, sc, z, 0, 15) - z) as f32);
                    let l = sq_norm(xg.dot(&e).view());
                    if l < best.0 {
                        best = (l, (sc, z));
                    }
                }
                p1.push(best.1);
            }
            let amax = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let loss_of = |params: &[(f32, i32)], s1: f32| {
                let wq = common::dgq_row(row, g, params, s1);
                let e: Array1<f32> = row.iter().zip(&wq).map(|(a, b)| a - b).collect();
                sq_norm(x.dot(&e).view())
            };
            let mut best = loss_of(&rtn, channel_scale(amax / W_S8_MAX as f32).to_f32());
            for i in 0..cfg.phase2_grid {
                let rr = ratio(i, cfg.phase2_grid, cfg.phase2_min_ratio);
                let s1 = channel_scale(rr * amax / W_S8_MAX as f32).to_f32();
                best = best.min(loss_of(&p1, s1));
            }
            best
        })
        .collect()
}

fn mean(d: &Cell<(Duration, u64)>) -> f64 {
    let (t, n) = d.get();
    t.as_secs_f64() / n.max(1) as f64
}

fn bench(c: &mut Criterion) {
    let st = setup();
    let (n, k) = st.w.dim();
    let t = st.x.nrows();
    let cfg = DgqConfig::default();
    let threads = rayon::current_num_threads();
    println!("dgq search bench: W [{n}, {k}], X [{t}, {k}], g = {}, grids {}/{}, {threads} rayon threads",
        cfg.group_size, cfg.phase1_grid, cfg.phase2_grid);

    let fast_direct = Cell::new((Duration::ZERO, 0u64));
    let fast_hess = Cell::new((Duration::ZERO, 0u64));
    let hess_build = Cell::new((Duration::ZERO, 0u64));
    let naive = Cell::new((Duration::ZERO, 0u64));

    let mut grp = c.benchmark_group("dgq_search");
    grp.sample_size(10);
    grp.sampling_mode(SamplingMode::Flat);
    grp.warm_up_time(Duration::from_millis(1));
    let auto_cfg = DgqConfig {
        loss: LossMode::Auto,
        ..cfg.clone()
    };
    let mut last_report = None;
    grp.bench_function(format!("full_search_auto_{n}x{k}_T{t}"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                last_report = Some(
                    search_report(st.w.view(), st.x.view(), &auto_cfg)
                        .unwrap()
                        .1,
                );
            }
            let d = t0.elapsed();
            let (a, m) = fast_direct.get();
            fast_direct.set((a + d, m + iters));
            d
        })
    });
    let mut hs = Hessian::new(k);
    grp.bench_function(format!("hessian_accumulate_{k}_T{t}"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                hs = Hessian::new(k);
                hs.add_batch(st.x.view()).unwrap();
            }
            let d = t0.elapsed();
            let (a, m) = hess_build.get();
            hess_build.set((a + d, m + iters));
            d
        })
    });
    let mut hess_report = None;
    grp.bench_function(format!("full_search_hessian_{n}x{k}"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                hess_report = Some(
                    search_with_hessian_report(st.w.view(), &hs, &cfg)
                        .unwrap()
                        .1,
                );
            }
            let d = t0.elapsed();
            let (a, m) = fast_hess.get();
            fast_hess.set((a + d, m + iters));
            d
        })
    });
    let nr = st.naive_rows.min(n);
    let wsub = st.w.slice(s![..nr, ..]);
    let mut naive_best = Vec::new();
    grp.bench_function(format!("naive_{nr}_rows_of_{n}x{k}_T{t}"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                naive_best = naive_search(wsub, st.x.view(), &cfg);
            }
            let d = t0.elapsed();
            let (a, m) = naive.get();
            naive.set((a + d, m + iters));
            d
        })
    });
    grp.finish();

    let t_fast = mean(&fast_direct);
    let t_hess = mean(&fast_hess);
    let t_build = mean(&hess_build);
    let t_naive = mean(&naive) * n as f64 / nr as f64;
    let rep = last_report.expect("ran");
    let hrep = hess_report.expect("ran");
    // The naive losses are the same quantities: a check that both searched the same grid.
    let max_rel = naive_best
        .iter()
        .zip(&rep.row_loss_final)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-30))
        .fold(0f64, f64::max);
    println!();
    println!("=== DGQ search, W [{n}, {k}], {t} calibration tokens, {threads} threads ===");
    println!(
        "full search, Auto (ran {:?}):         {:8.2} s",
        rep.mode, t_fast
    );
    println!(
        "full search, Hessian given:            {:8.2} s  (+ {:.2} s to accumulate H)",
        t_hess, t_build
    );
    println!("naive (extrapolated from {nr} rows):     {:8.2} s", t_naive);
    println!(
        "speedup vs naive: Auto {:.1}x, Hessian {:.1}x (Hessian incl. accumulation {:.1}x)",
        t_naive / t_fast,
        t_naive / t_hess,
        t_naive / (t_hess + t_build)
    );
    println!(
        "output MSE: RTN {:.4e}, phase 1 only {:.4e}, final {:.4e} ({:.1} % below RTN)",
        rep.mse_rtn(),
        rep.loss_phase1_only / rep.loss_rtn * rep.mse_rtn(),
        rep.mse_final(),
        100.0 * (1.0 - rep.loss_final / rep.loss_rtn)
    );
    println!(
        "Hessian-mode final loss / Auto-mode final loss: {:.6}",
        hrep.loss_final / rep.loss_final
    );
    println!(
        "naive vs fast best loss on the {nr} timed rows: max relative difference {max_rel:.2e}"
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
