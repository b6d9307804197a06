//! Smoothing folds leave the network function unchanged: norm → linear (RMSNorm and LayerNorm
//! feeding q, k, v) and SwiGLU up → down, with percentile-clipping and SmoothQuant factors.

use dgq_core::smooth::*;
use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn randn(rng: &mut ChaCha8Rng, shape: (usize, usize), scale: f32) -> Array2<f32> {
    Array2::from_shape_fn(shape, |_| rng.sample::<f32, _>(StandardNormal) * scale)
}

fn randn1(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Array1<f32> {
    Array1::from_shape_fn(n, |_| rng.sample::<f32, _>(StandardNormal) * scale)
}

/// Tolerance for a float path whose only change is a per-term rescaling: each output element may
/// differ by at most 1e-6 × Σ_j |x_tj · w_nj| (a few ulps per term plus summation, K ≤ 256).
fn assert_same_output(x: &Array2<f32>, w: &Array2<f32>, got: &Array2<f32>, want: &Array2<f32>) {
    let abs_terms = x.mapv(f32::abs).dot(&w.mapv(f32::abs).t());
    let mut worst = 0f32;
    for ((idx, &g), (&e, &s)) in got.indexed_iter().zip(want.iter().zip(abs_terms.iter())) {
        let d = (g - e).abs();
        assert!(d <= 1e-6 * s + 1e-30, "{idx:?}: {g} vs {e} (|terms| {s})");
        worst = worst.max(d / s.max(1e-30));
    }
    eprintln!("worst relative deviation: {worst:e}");
}

fn rms_norm(x: &Array2<f32>, gamma: &Array1<f32>) -> Array2<f32> {
    let mut y = x.clone();
    for mut row in y.axis_iter_mut(Axis(0)) {
        let rms = (row.mapv(|v| v * v).mean().unwrap_or(0.0) + 1e-6).sqrt();
        row.zip_mut_with(gamma, |v, &g| *v = *v / rms * g);
    }
    y
}

fn layer_norm(x: &Array2<f32>, gamma: &Array1<f32>, beta: &Array1<f32>) -> Array2<f32> {
    let mut y = x.clone();
    for mut row in y.axis_iter_mut(Axis(0)) {
        let mu = row.mean().unwrap_or(0.0);
        let var = row.mapv(|v| (v - mu) * (v - mu)).mean().unwrap_or(0.0);
        let sd = (var + 1e-5).sqrt();
        ndarray::Zip::from(&mut row)
            .and(gamma)
            .and(beta)
            .for_each(|v, &g, &b| *v = (*v - mu) / sd * g + b);
    }
    y
}

/// Norm gain with a few large channels, so the activations have outlier channels.
fn outlier_gamma(rng: &mut ChaCha8Rng, k: usize) -> Array1<f32> {
    let mut g = randn1(rng, k, 0.3).mapv(|v| 1.0 + v);
    for j in [3, 17, k - 2] {
        g[j] = 60.0;
    }
    g
}

fn all_smoothings() -> [Smoothing; 3] {
    [
        Smoothing::Percentile(PercentileConfig { top_fraction: 0.02 }),
        Smoothing::SmoothQuant(SmoothQuantConfig::default()),
        Smoothing::SmoothQuant(SmoothQuantConfig {
            alpha: 0.8,
            ..Default::default()
        }),
    ]
}

#[test]
fn rms_norm_into_qkv_fold_preserves_outputs() {
    let (m, k, n) = (24, 256, 48);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = randn(&mut rng, (m, k), 1.0);
    let gamma = outlier_gamma(&mut rng, k);
    let ws = [
        randn(&mut rng, (n, k), 0.05),
        randn(&mut rng, (n, k), 0.05),
        randn(&mut rng, (n / 2, k), 0.05),
    ];
    let h = rms_norm(&x, &gamma);
    let want: Vec<_> = ws.iter().map(|w| h.dot(&w.t())).collect();

    for smoothing in all_smoothings() {
        let mut stats = ActAbsMax::new(k);
        // Two calibration batches; the maxima must cover both.
        stats.update(h.slice(ndarray::s![..10, ..])).unwrap();
        stats.update(h.slice(ndarray::s![10.., ..])).unwrap();
        let views: Vec<_> = ws.iter().map(|w| w.view()).collect();
        let f = smoothing.factors(stats.absmax(), &views).unwrap();
        assert!(
            f.iter().any(|&v| (v - 1.0).abs() > 0.5),
            "{smoothing:?}: factors should move something: {f}"
        );

        let mut g2 = gamma.clone();
        fold_into_norm(&mut g2, None, f.view()).unwrap();
        let h2 = rms_norm(&x, &g2);
        // The smoothed activations are exactly X / k (up to rounding).
        let mut h_div = h.clone();
        smooth_activations(&mut h_div, f.view()).unwrap();
        for (a, b) in h2.iter().zip(h_div.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{a} vs {b}");
        }
        for (w, y) in ws.iter().zip(&want) {
            let mut w2 = w.clone();
            fold_into_weight_cols(&mut w2, f.view()).unwrap();
            let got = h2.dot(&w2.t());
            assert_same_output(&h, w, &got, y);
        }
    }
}

#[test]
fn layer_norm_with_bias_fold_preserves_outputs() {
    let (m, k, n) = (16, 128, 32);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = randn(&mut rng, (m, k), 2.0).mapv(|v| v + 0.5);
    let gamma = outlier_gamma(&mut rng, k);
    let mut beta = randn1(&mut rng, k, 0.2);
    beta[17] = 25.0;
    let w = randn(&mut rng, (n, k), 0.1);
    let h = layer_norm(&x, &gamma, &beta);
    let want = h.dot(&w.t());

    for smoothing in all_smoothings() {
        let mut stats = ActAbsMax::new(k);
        stats.update(h.view()).unwrap();
        let f = smoothing.factors(stats.absmax(), &[w.view()]).unwrap();
        let (mut g2, mut b2, mut w2) = (gamma.clone(), beta.clone(), w.clone());
        fold_into_norm(&mut g2, Some(&mut b2), f.view()).unwrap();
        fold_into_weight_cols(&mut w2, f.view()).unwrap();
        let got = layer_norm(&x, &g2, &b2).dot(&w2.t());
        assert_same_output(&h, &w, &got, &want);
    }
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

#[test]
fn swiglu_up_into_down_fold_preserves_outputs() {
    let (m, hid, inter) = (20, 64, 160);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = randn(&mut rng, (m, hid), 1.0);
    let gate = randn(&mut rng, (inter, hid), 0.2);
    let mut up = randn(&mut rng, (inter, hid), 0.2);
    // A few intermediate channels with large up rows: outliers in down's input.
    for j in [5, 77, 150] {
        up.row_mut(j).mapv_inplace(|v| v * 40.0);
    }
    let up_bias = randn1(&mut rng, inter, 0.1);
    let down = randn(&mut rng, (hid, inter), 0.1);

    let mlp_in = |up: &Array2<f32>, b: &Array1<f32>| {
        let g = x.dot(&gate.t()).mapv(silu);
        let u = x.dot(&up.t()) + b;
        g * u
    };
    let a = mlp_in(&up, &up_bias);
    let want = a.dot(&down.t());

    for smoothing in all_smoothings() {
        let mut stats = ActAbsMax::new(inter);
        stats.update(a.view()).unwrap();
        let f = smoothing.factors(stats.absmax(), &[down.view()]).unwrap();
        let (mut up2, mut b2, mut down2) = (up.clone(), up_bias.clone(), down.clone());
        fold_into_prev_linear_rows(&mut up2, Some(&mut b2), f.view()).unwrap();
        fold_into_weight_cols(&mut down2, f.view()).unwrap();
        let a2 = mlp_in(&up2, &b2);
        let got = a2.dot(&down2.t());
        assert_same_output(&a, &down, &got, &want);
    }
}

#[test]
fn percentile_clipping_brings_max_abs_x_down_to_p() {
    let (m, k) = (64, 1000);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut x = randn(&mut rng, (m, k), 1.0);
    // 8 outlier channels, more than the ⌊0.005·1000⌋ = 5 allowed above P.
    let outliers = [1, 50, 333, 334, 600, 701, 900, 999];
    for (i, &j) in outliers.iter().enumerate() {
        x.column_mut(j)
            .mapv_inplace(|v| v * (20.0 + 10.0 * i as f32));
    }
    let mut stats = ActAbsMax::new(k);
    stats.update(x.view()).unwrap();
    let cfg = PercentileConfig::default();
    let p = percentile_threshold(stats.absmax(), cfg.top_fraction).unwrap();
    let f = percentile_clip_factors(stats.absmax(), &cfg).unwrap();

    // i = ⌊0.005 · 1000⌋ = 5: P is the 6th largest channel maximum (an outlier channel here).
    let mut z = stats.absmax().to_vec();
    z.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(p, z[5]);
    assert!(f.iter().all(|&v| v >= 1.0));
    let clipped = f.iter().filter(|&&v| v > 1.0).count();
    assert_eq!(clipped, 5, "exactly the top 5 channels are clipped");

    let before = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    smooth_activations(&mut x, f.view()).unwrap();
    let mut after = ActAbsMax::new(k);
    after.update(x.view()).unwrap();
    let global = after.absmax().iter().fold(0f32, |a, &v| a.max(v));
    assert!(before > 2.0 * p, "setup: outliers well above P");
    assert!(
        (global - p).abs() <= 1e-6 * p,
        "max|X/k| = {global}, P = {p}"
    );
    for (j, (&a, &fj)) in after.absmax().iter().zip(f.iter()).enumerate() {
        assert!(a <= p * (1.0 + 1e-6), "channel {j}: {a} > P {p}");
        if fj > 1.0 {
            assert!((a - p).abs() <= 1e-6 * p, "clipped channel {j}: {a} vs {p}");
        } else {
            assert_eq!(a, stats.absmax()[j], "unclipped channel {j} unchanged");
        }
    }
}
