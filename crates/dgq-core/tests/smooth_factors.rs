//! Smoothing factors on hand-made data (percentile definition, SmoothQuant formula and guards),
//! the calibration accumulator, and every error case of the smoothing API.

use dgq_core::smooth::*;
use dgq_core::Error;
use ndarray::{arr1, arr2, Array1, Array2};

#[test]
fn percentile_index_is_floor_of_fraction_times_k() {
    // K = 400 at 0.5 %: i = 2, so P is the 3rd largest; 400 and 399 are clipped to it.
    let z: Array1<f32> = (0..400).map(|i| ((i * 37) % 400 + 1) as f32).collect();
    assert_eq!(percentile_threshold(z.view(), 0.005).unwrap(), 398.0);
    let f = percentile_clip_factors(z.view(), &PercentileConfig::default()).unwrap();
    for (&zj, &fj) in z.iter().zip(f.iter()) {
        let want = if zj > 398.0 { zj / 398.0 } else { 1.0 };
        assert_eq!(fj, want, "z = {zj}");
    }
    assert_eq!(f.iter().filter(|&&v| v > 1.0).count(), 2);

    // K = 10 at 10 %: i = 1, the 2nd largest.
    let z = arr1(&[0.5f32, 7.0, 2.0, 9.0, 1.0, 3.0, 0.0, 4.0, 8.0, 6.0]);
    assert_eq!(percentile_threshold(z.view(), 0.1).unwrap(), 8.0);
    let f = percentile_clip_factors(z.view(), &PercentileConfig { top_fraction: 0.1 }).unwrap();
    assert_eq!(f[3], 9.0 / 8.0);
    assert!(f.iter().enumerate().all(|(j, &v)| j == 3 || v == 1.0));
    // K = 10 at 19 %: i = ⌊1.9⌋ = 1 still.
    assert_eq!(percentile_threshold(z.view(), 0.19).unwrap(), 8.0);
    // K = 10 at 20 %: i = 2.
    assert_eq!(percentile_threshold(z.view(), 0.2).unwrap(), 7.0);

    // K < 200 at 0.5 %: i = 0, P = max, nothing clipped.
    let z: Array1<f32> = (0..150).map(|i| (i * i) as f32).collect();
    assert_eq!(
        percentile_threshold(z.view(), 0.005).unwrap(),
        149.0 * 149.0
    );
    let f = percentile_clip_factors(z.view(), &PercentileConfig::default()).unwrap();
    assert!(f.iter().all(|&v| v == 1.0));
    // top_fraction 0 is the identity at any K.
    let f = percentile_clip_factors(z.view(), &PercentileConfig { top_fraction: 0.0 }).unwrap();
    assert!(f.iter().all(|&v| v == 1.0));
}

#[test]
fn percentile_with_zero_threshold_leaves_factors_at_one() {
    // 2 of 4 channels alive, top 50 %: i = 2, P = 0 → no meaningful threshold.
    let z = arr1(&[0.0f32, 5.0, 0.0, 3.0]);
    assert_eq!(percentile_threshold(z.view(), 0.5).unwrap(), 0.0);
    let f = percentile_clip_factors(z.view(), &PercentileConfig { top_fraction: 0.5 }).unwrap();
    assert_eq!(f, arr1(&[1.0, 1.0, 1.0, 1.0]));
}

#[test]
fn smoothquant_formula_on_a_hand_made_example() {
    let act = arr1(&[4.0f32, 1.0, 0.0, 9.0, 16.0]);
    // q and k share the input: columns are pooled. Column 1: max(1, 4) = 4; column 3: 0 in both.
    let wq = arr2(&[[1.0f32, -1.0, 2.0, 0.0, 0.25], [0.5, 0.5, -1.0, 0.0, -0.25]]);
    let wk = arr2(&[[-0.25f32, 4.0, 0.5, 0.0, 0.0]]);
    let f = smoothquant_factors(
        act.view(),
        &[wq.view(), wk.view()],
        &SmoothQuantConfig::default(),
    )
    .unwrap();
    // α = 0.5: s = sqrt(a) / sqrt(w).
    // col 0: 2/1; col 1: 1/2; col 2: a = 0 → 1; col 3: w = 0 → 1; col 4: 4/0.5.
    assert_eq!(f, arr1(&[2.0, 0.5, 1.0, 1.0, 8.0]));

    // α = 1: s = a; α = 0: s = 1 / w (guards unchanged).
    let cfg = |alpha| SmoothQuantConfig {
        alpha,
        ..Default::default()
    };
    let f1 = smoothquant_factors(act.view(), &[wq.view(), wk.view()], &cfg(1.0)).unwrap();
    assert_eq!(f1, arr1(&[4.0, 1.0, 1.0, 1.0, 16.0]));
    let f0 = smoothquant_factors(act.view(), &[wq.view(), wk.view()], &cfg(0.0)).unwrap();
    assert_eq!(f0, arr1(&[1.0, 0.25, 1.0, 1.0, 4.0]));
    // α = 0.75, column 0: 4^0.75 / 1^0.25.
    let f75 = smoothquant_factors(act.view(), &[wq.view()], &cfg(0.75)).unwrap();
    assert!((f75[0] - 4f32.powf(0.75)).abs() < 1e-6);

    // Extreme statistics are clamped to [eps, 1/eps].
    let act = arr1(&[1e-12f32, 1e12]);
    let w = arr2(&[[1.0f32, 1.0]]);
    let f = smoothquant_factors(act.view(), &[w.view()], &cfg(1.0)).unwrap();
    assert_eq!(f, arr1(&[1e-5, 1e5]));
}

#[test]
fn weight_col_absmax_pools_consumers() {
    let a = arr2(&[[1.0f32, -3.0], [-2.0, 0.5]]);
    let b = arr2(&[[0.0f32, 4.0]]);
    assert_eq!(
        weight_col_absmax(&[a.view(), b.view()]).unwrap(),
        arr1(&[2.0, 4.0])
    );
}

#[test]
fn act_absmax_accumulates_and_merges() {
    let x1 = arr2(&[[1.0f32, -5.0, 0.0], [-2.0, 1.0, 0.0]]);
    let x2 = arr2(&[[0.5f32, 6.0, -0.25]]);
    let mut s = ActAbsMax::new(3);
    assert_eq!(s.absmax(), arr1(&[0.0, 0.0, 0.0]));
    s.update(x1.view()).unwrap();
    s.update(x2.view()).unwrap();
    assert_eq!(s.absmax(), arr1(&[2.0, 6.0, 0.25]));
    assert_eq!(s.tokens(), 3);
    assert_eq!(s.k(), 3);

    let mut a = ActAbsMax::new(3);
    a.update(x1.view()).unwrap();
    let mut b = ActAbsMax::new(3);
    b.update(x2.view()).unwrap();
    a.merge(&b).unwrap();
    assert_eq!(a, s);
    assert_eq!(a.into_absmax(), arr1(&[2.0, 6.0, 0.25]));
}

#[test]
fn act_absmax_errors_leave_state_unchanged() {
    let mut s = ActAbsMax::new(3);
    s.update(arr2(&[[1.0f32, 2.0, 3.0]]).view()).unwrap();
    let before = s.clone();

    // A NaN late in the batch: error names it, and the earlier rows are not applied.
    let bad = arr2(&[[9.0f32, 9.0, 9.0], [1.0, f32::NAN, 0.0]]);
    match s.update(bad.view()) {
        Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![1, 1]),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let inf = arr2(&[[f32::INFINITY, 0.0, 0.0]]);
    assert!(matches!(s.update(inf.view()), Err(Error::NonFinite { .. })));
    assert!(matches!(
        s.update(Array2::<f32>::zeros((2, 4)).view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        s.merge(&ActAbsMax::new(2)),
        Err(Error::Shape { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn factor_functions_reject_bad_inputs() {
    let z = arr1(&[1.0f32, 2.0, 3.0]);
    for tf in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                percentile_threshold(z.view(), tf),
                Err(Error::Config { .. })
            ),
            "top_fraction {tf}"
        );
    }
    let empty = Array1::<f32>::zeros(0);
    assert!(matches!(
        percentile_threshold(empty.view(), 0.005),
        Err(Error::Shape { .. })
    ));
    match percentile_threshold(arr1(&[1.0f32, f32::NAN]).view(), 0.005) {
        Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![1]),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(matches!(
        percentile_threshold(arr1(&[1.0f32, -2.0]).view(), 0.005),
        Err(Error::Invariant { .. })
    ));

    let w = arr2(&[[1.0f32, 1.0, 1.0]]);
    for (alpha, eps) in [
        (-0.1, 1e-5),
        (1.1, 1e-5),
        (f32::NAN, 1e-5),
        (0.5, 0.0),
        (0.5, 1.0),
    ] {
        let cfg = SmoothQuantConfig { alpha, eps };
        assert!(
            matches!(
                smoothquant_factors(z.view(), &[w.view()], &cfg),
                Err(Error::Config { .. })
            ),
            "alpha {alpha} eps {eps}"
        );
    }
    let cfg = SmoothQuantConfig::default();
    assert!(matches!(
        smoothquant_factors(z.view(), &[], &cfg),
        Err(Error::Shape { .. })
    ));
    let w4 = arr2(&[[1.0f32, 1.0, 1.0, 1.0]]);
    assert!(matches!(
        smoothquant_factors(z.view(), &[w4.view()], &cfg),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        smoothquant_factors(z.view(), &[w.view(), w4.view()], &cfg),
        Err(Error::Shape { .. })
    ));
    let wnan = arr2(&[[1.0f32, f32::NAN, 1.0]]);
    assert!(matches!(
        smoothquant_factors(z.view(), &[w.view(), wnan.view()], &cfg),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn folds_reject_bad_shapes_and_factors_without_modifying() {
    let k_ok = arr1(&[1.0f32, 2.0, 4.0]);
    let bad_factors = [
        arr1(&[1.0f32, 0.0, 1.0]),
        arr1(&[1.0f32, -1.0, 1.0]),
        arr1(&[1.0f32, f32::NAN, 1.0]),
        arr1(&[1.0f32, f32::INFINITY, 1.0]),
    ];
    let mut gamma = arr1(&[1.0f32, 1.0, 1.0]);
    let mut beta = arr1(&[0.5f32, 0.5, 0.5]);
    let mut w_prev = Array2::<f32>::ones((3, 5));
    let mut b_prev = Array1::<f32>::ones(3);
    let mut w = Array2::<f32>::ones((4, 3));
    let mut x = Array2::<f32>::ones((2, 3));
    let snapshot = (
        gamma.clone(),
        beta.clone(),
        w_prev.clone(),
        b_prev.clone(),
        w.clone(),
        x.clone(),
    );

    for k in &bad_factors {
        assert!(fold_into_norm(&mut gamma, Some(&mut beta), k.view()).is_err());
        assert!(fold_into_prev_linear_rows(&mut w_prev, Some(&mut b_prev), k.view()).is_err());
        assert!(fold_into_weight_cols(&mut w, k.view()).is_err());
        assert!(smooth_activations(&mut x, k.view()).is_err());
    }
    match fold_into_weight_cols(&mut w, bad_factors[0].view()) {
        Err(Error::Config { value, .. }) => assert!(value.contains("k[1]"), "{value}"),
        other => panic!("expected Config, got {other:?}"),
    }
    match fold_into_weight_cols(&mut w, bad_factors[2].view()) {
        Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![1]),
        other => panic!("expected NonFinite, got {other:?}"),
    }

    // Shape mismatches.
    let k2 = arr1(&[1.0f32, 2.0]);
    let shape_err = |r: dgq_core::Result<()>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape_err(fold_into_norm(&mut gamma, None, k2.view())));
    let mut short_bias = arr1(&[1.0f32, 1.0]);
    assert!(shape_err(fold_into_norm(
        &mut gamma,
        Some(&mut short_bias),
        k_ok.view()
    )));
    assert!(shape_err(fold_into_prev_linear_rows(
        &mut w_prev,
        None,
        k2.view()
    )));
    assert!(shape_err(fold_into_prev_linear_rows(
        &mut w_prev,
        Some(&mut short_bias),
        k_ok.view()
    )));
    // w_prev is [K, K_prev] = [3, 5]: factors indexed by its columns are wrong.
    let k5 = Array1::<f32>::ones(5);
    assert!(shape_err(fold_into_prev_linear_rows(
        &mut w_prev,
        None,
        k5.view()
    )));
    assert!(shape_err(fold_into_weight_cols(&mut w, k2.view())));
    assert!(shape_err(smooth_activations(&mut x, k2.view())));

    assert_eq!(
        (gamma, beta, w_prev, b_prev, w, x),
        snapshot,
        "failed folds must not modify anything"
    );
}

#[test]
fn folds_compute_the_documented_values() {
    let k = arr1(&[1.0f32, 2.0, 4.0]);
    let mut gamma = arr1(&[1.0f32, 1.0, 8.0]);
    let mut beta = arr1(&[2.0f32, 2.0, 2.0]);
    fold_into_norm(&mut gamma, Some(&mut beta), k.view()).unwrap();
    assert_eq!(gamma, arr1(&[1.0, 0.5, 2.0]));
    assert_eq!(beta, arr1(&[2.0, 1.0, 0.5]));

    let mut w_prev = arr2(&[[1.0f32, 2.0], [4.0, 8.0], [4.0, 4.0]]);
    let mut b_prev = arr1(&[1.0f32, 1.0, 1.0]);
    fold_into_prev_linear_rows(&mut w_prev, Some(&mut b_prev), k.view()).unwrap();
    assert_eq!(w_prev, arr2(&[[1.0, 2.0], [2.0, 4.0], [1.0, 1.0]]));
    assert_eq!(b_prev, arr1(&[1.0, 0.5, 0.25]));

    let mut w = arr2(&[[1.0f32, 1.0, 1.0], [0.5, -1.0, 0.25]]);
    fold_into_weight_cols(&mut w, k.view()).unwrap();
    assert_eq!(w, arr2(&[[1.0, 2.0, 4.0], [0.5, -2.0, 1.0]]));
}
