//! One synthetic linear layer, quantized to W4A8 two ways: direct RTN decomposition (DGQ paper,
//! Table 1 "RTN") and the DGQ two-phase search calibrated on activations. Prints the error of each
//! on held-out tokens, with FP activations (weight error alone) and with INT8 per-token
//! activations through the integer reference GEMM (the deployed path).
//!
//! The layer imitates what makes LLM layers hard: a few input channels carry activations 10–50×
//! larger than the rest, channel magnitudes vary, and weights are heavy-tailed. Everything is
//! drawn from one seeded generator, so a run is reproducible.
//!
//! ```text
//! cargo run --release --example synthetic_layer -- --help
//! ```

use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Parser;
use dgq_core::act::{quantize_per_token, QuantizedActs};
use dgq_core::quant::search::search;
use dgq_core::reference::w4a8_gemm;
use dgq_core::{DgqConfig, DualGrainedWeight};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

#[derive(Parser, Debug)]
#[command(about = "W4A8 on a synthetic layer with outlier channels: direct RTN vs DGQ search")]
struct Args {
    /// Output channels N.
    #[arg(long, default_value_t = 512)]
    n: usize,
    /// Input channels K.
    #[arg(long, default_value_t = 1024)]
    k: usize,
    /// Calibration tokens the search sees.
    #[arg(long, default_value_t = 512)]
    calib_tokens: usize,
    /// Held-out tokens the errors are measured on.
    #[arg(long, default_value_t = 256)]
    eval_tokens: usize,
    /// Group size along K.
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    /// Fraction of input channels that carry outliers.
    #[arg(long, default_value_t = 0.01)]
    outlier_frac: f64,
    /// Seed of the generator that draws the layer and the activations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Per-input-channel activation magnitudes: log-normal spread, outlier channels 10–50× larger.
fn channel_scales(rng: &mut ChaCha8Rng, k: usize, outliers: usize) -> Array1<f32> {
    let mut c = Array1::from_shape_fn(k, |_| (0.5 * rng.sample::<f32, _>(StandardNormal)).exp());
    for j in sample(rng, k, outliers) {
        c[j] *= rng.random_range(10.0f32..50.0);
    }
    c
}

/// Activations `[T, K]`: channel magnitude × per-token magnitude × standard normal.
fn activations(rng: &mut ChaCha8Rng, t: usize, chan: &Array1<f32>) -> Array2<f32> {
    let tok = Array1::from_shape_fn(t, |_| (0.3 * rng.sample::<f32, _>(StandardNormal)).exp());
    Array2::from_shape_fn((t, chan.len()), |(i, j)| {
        tok[i] * chan[j] * rng.sample::<f32, _>(StandardNormal)
    })
}

/// Weights `[N, K]`: per-row magnitude spread, normal entries, 0.2 % of them 10× outliers.
fn weights(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Array2<f32> {
    let row = Array1::from_shape_fn(n, |_| {
        0.02 * (0.3 * rng.sample::<f32, _>(StandardNormal)).exp()
    });
    Array2::from_shape_fn((n, k), |(r, _)| {
        let v = row[r] * rng.sample::<f32, _>(StandardNormal);
        if rng.random_bool(0.002) {
            10.0 * v
        } else {
            v
        }
    })
}

/// `X · Wᵀ` in f32.
fn matmul_t(x: ArrayView2<f32>, w: ArrayView2<f32>) -> Array2<f32> {
    x.dot(&w.t())
}

/// Mean squared error and relative Frobenius error `‖a − b‖ / ‖b‖` (b is the reference).
fn errors(a: &Array2<f32>, b: &Array2<f32>) -> (f64, f64) {
    let (mut se, mut ref_sq) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b.iter()) {
        se += (f64::from(x) - f64::from(y)).powi(2);
        ref_sq += f64::from(y).powi(2);
    }
    (
        se / b.len().max(1) as f64,
        (se / ref_sq.max(f64::MIN_POSITIVE)).sqrt(),
    )
}

/// The activations the INT8 GEMM actually sees, back in f32.
fn dequantize_acts(a: &QuantizedActs) -> Array2<f32> {
    let mut x = a.q.mapv(f32::from);
    for (m, mut row) in x.axis_iter_mut(Axis(0)).enumerate() {
        let s = a.scale(m);
        row.mapv_inplace(|v| v * s);
    }
    x
}

struct Row {
    name: &'static str,
    weight_nmse: Option<f64>,
    w4: Option<(f64, f64)>,
    w4a8: (f64, f64),
    secs: Option<f64>,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3e}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.n > 0 && args.k > 0, "--n and --k must be positive");
    ensure!(
        args.calib_tokens > 0 && args.eval_tokens > 0,
        "token counts must be positive"
    );
    ensure!(
        (0.0..=1.0).contains(&args.outlier_frac),
        "--outlier-frac must be in [0, 1]"
    );
    let outliers = ((args.outlier_frac * args.k as f64).round() as usize).min(args.k);

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let chan = channel_scales(&mut rng, args.k, outliers);
    let w = weights(&mut rng, args.n, args.k);
    let x_calib = activations(&mut rng, args.calib_tokens, &chan);
    let x_eval = activations(&mut rng, args.eval_tokens, &chan);
    let y_ref = matmul_t(x_eval.view(), w.view());
    let w_sq: f64 = w.iter().map(|&v| f64::from(v).powi(2)).sum();

    println!(
        "layer: N = {}, K = {}, group size {}, {} outlier input channels, seed {}",
        args.n, args.k, args.group_size, outliers, args.seed
    );
    println!(
        "tokens: {} calibration, {} held-out evaluation (errors below are on held-out tokens)\n",
        args.calib_tokens, args.eval_tokens
    );

    // INT8 per-token activations, shared by every W4A8 row; its error alone is the floor.
    let qa = quantize_per_token(x_eval.view())?;
    let a8_only = matmul_t(dequantize_acts(&qa).view(), w.view());

    let t = Instant::now();
    let rtn = DualGrainedWeight::rtn(w.view(), args.group_size)?;
    let rtn_secs = t.elapsed().as_secs_f64();

    let cfg = DgqConfig {
        group_size: args.group_size,
        ..DgqConfig::default()
    };
    let t = Instant::now();
    let dgq = search(w.view(), x_calib.view(), &cfg)?;
    let dgq_secs = t.elapsed().as_secs_f64();

    let mut rows = vec![Row {
        name: "FP32 weights, A8",
        weight_nmse: None,
        w4: None,
        w4a8: errors(&a8_only, &y_ref),
        secs: None,
    }];
    for (name, q, secs) in [
        ("DGQ RTN decomposition", &rtn, rtn_secs),
        ("DGQ two-phase search", &dgq, dgq_secs),
    ] {
        let w_hat = q.dequantize();
        rows.push(Row {
            name,
            weight_nmse: Some(q.weight_sq_error(w.view())? / w_sq.max(f64::MIN_POSITIVE)),
            w4: Some(errors(&matmul_t(x_eval.view(), w_hat.view()), &y_ref)),
            w4a8: errors(&w4a8_gemm(&qa, q, None)?, &y_ref),
            secs: Some(secs),
        });
    }

    println!(
        "{:<24} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "method", "weight NMSE", "MSE W4", "rel W4", "MSE W4A8", "rel W4A8", "time s"
    );
    for r in &rows {
        println!(
            "{:<24} {:>11} {:>11} {:>11} {:>11.3e} {:>11.3e} {:>9}",
            r.name,
            fmt_opt(r.weight_nmse),
            fmt_opt(r.w4.map(|e| e.0)),
            fmt_opt(r.w4.map(|e| e.1)),
            r.w4a8.0,
            r.w4a8.1,
            r.secs
                .map_or_else(|| "-".to_string(), |s| format!("{s:.2}")),
        );
    }

    let (rtn_w4a8, dgq_w4a8) = (rows[1].w4a8.0, rows[2].w4a8.0);
    println!(
        "\nW4A8 output MSE, search / RTN: {:.3} ({:.1} % lower); packed size {:.3} B/weight (FP16: 2 B)",
        dgq_w4a8 / rtn_w4a8.max(f64::MIN_POSITIVE),
        100.0 * (1.0 - dgq_w4a8 / rtn_w4a8.max(f64::MIN_POSITIVE)),
        dgq.packed_bytes_per_weight()
    );
    println!("MSE W4: FP activations (weight error alone); MSE W4A8: INT8 per-token activations, integer reference GEMM.");
    Ok(())
}
