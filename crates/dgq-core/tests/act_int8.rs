//! INT8 activation quantization: the recipe of `dgq_core::act` (exactness, ties, saturation,
//! zero rows, smoothing order, f16 input, errors) and the static-scale observers.

use dgq_core::act::{
    fake_quantize, quantize, quantize_per_token, quantize_per_token_f16,
    quantize_per_token_smoothed, quantize_per_token_smoothed_f16, quantize_static,
    quantize_static_f16, quantize_static_smoothed, ActQuant, PercentileScaleObserver,
    StaticScaleObserver, MIN_AMAX,
};
use dgq_core::Error;
use half::f16;
use ndarray::{arr1, arr2, concatenate, s, Array1, Array2, ArrayView2, Axis};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn randn(m: usize, k: usize, seed: u64, sigma: f32) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, sigma).unwrap();
    Array2::from_shape_fn((m, k), |_| d.sample(&mut rng))
}

/// The recipe written out independently, one element at a time.
fn spec_per_token(x: ArrayView2<f32>) -> (Array2<i8>, Array1<f32>) {
    let mut q = Array2::<i8>::zeros(x.dim());
    let mut scales = Array1::<f32>::zeros(x.nrows());
    for (r, row) in x.rows().into_iter().enumerate() {
        let mut amax = 0.0f32;
        for &v in row {
            if v.abs() > amax {
                amax = v.abs();
            }
        }
        if amax < MIN_AMAX {
            continue;
        }
        scales[r] = amax / 127.0;
        let inv = 127.0 / amax;
        for (c, &v) in row.iter().enumerate() {
            let t = (v * inv).round_ties_even();
            q[[r, c]] = if t > 127.0 {
                127
            } else if t < -127.0 {
                -127
            } else {
                t as i8
            };
        }
    }
    (q, scales)
}

#[test]
fn per_token_matches_the_written_out_recipe() {
    for (m, k, seed) in [(1, 1, 1), (3, 7, 2), (16, 128, 3), (40, 1000, 4)] {
        // Large enough (40×1000) to take the parallel path.
        let mut x = randn(m, k, seed, 2.0);
        // Heavy-tailed channels, as real activations have.
        for c in (0..k).step_by(17) {
            x.column_mut(c).mapv_inplace(|v| v * 40.0);
        }
        let a = quantize_per_token(x.view()).unwrap();
        let (q, s) = spec_per_token(x.view());
        assert_eq!(a.q, q, "m={m} k={k}");
        assert_eq!(a.scales, s);
        for (r, row) in a.q.rows().into_iter().enumerate() {
            assert_eq!(
                row.iter().map(|v| v.abs()).max(),
                Some(127),
                "row {r} must reach ±127"
            );
            // Dequantization error at most half a step (plus rounding of x·inv).
            for (c, &v) in row.iter().enumerate() {
                let err = (v as f32 * a.scales[r] - x[[r, c]]).abs();
                assert!(
                    err <= 0.5 * a.scales[r] * (1.0 + 1e-5),
                    "err {err} at [{r}, {c}]"
                );
            }
        }
    }
}

#[test]
fn ties_round_to_even() {
    // amax = 127 → inv = 1 exactly, so x·inv = x and the halves are true ties.
    let x = arr2(&[[
        0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 127.0, 3.5,
    ]]);
    let a = quantize_per_token(x.view()).unwrap();
    assert_eq!(a.scales[0], 1.0);
    assert_eq!(
        a.q.row(0).to_vec(),
        vec![0, 2, 2, 0, -2, -2, 126, -126, 127, 4]
    );
    // amax = 254 → inv = 0.5: 1 → 0.5 → 0, 3 → 1.5 → 2, 5 → 2.5 → 2.
    let x = arr2(&[[1.0f32, 3.0, 5.0, -3.0, 254.0]]);
    let a = quantize_per_token(x.view()).unwrap();
    assert_eq!(a.q.row(0).to_vec(), vec![0, 2, 2, -2, 127]);
    // Static: scale 0.5 → inv 2: 0.25 → 0.5 → 0, 0.75 → 1.5 → 2.
    let x = arr2(&[[0.25f32, 0.75, -0.75, 1.25]]);
    let a = quantize_static(x.view(), 0.5).unwrap();
    assert_eq!(a.q.row(0).to_vec(), vec![0, 2, -2, 2]);
}

#[test]
fn static_saturates_and_keeps_one_scale() {
    let x = arr2(&[
        [0.0f32, 1.0, 1.27, 1.28, 10.0, -10.0, 1e30, -1e30],
        [0.004, -0.006, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]);
    let a = quantize_static(x.view(), 0.01).unwrap();
    assert_eq!(a.scales, arr1(&[0.01f32]));
    assert_eq!(
        a.q.row(0).to_vec(),
        vec![0, 100, 127, 127, 127, -127, 127, -127]
    );
    // 0.004 · 100 = 0.4 → 0; −0.006 · 100 = −0.6 → −1.
    assert_eq!(a.q.row(1).to_vec(), vec![0, -1, 0, 0, 0, 0, 0, 0]);
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY, 1e-35] {
        assert!(
            matches!(quantize_static(x.view(), bad), Err(Error::Config { .. })),
            "scale {bad}"
        );
    }
}

#[test]
fn zero_and_negligible_rows_have_zero_scale() {
    let x = arr2(&[[0.0f32, 0.0, -0.0], [1e-31, -2e-32, 0.0], [0.0, 4.0, -2.0]]);
    let a = quantize_per_token(x.view()).unwrap();
    assert_eq!(a.scales.to_vec(), vec![0.0, 0.0, 4.0 / 127.0]);
    assert_eq!(a.q.row(0).to_vec(), vec![0, 0, 0]);
    assert_eq!(a.q.row(1).to_vec(), vec![0, 0, 0]);
    assert_eq!(a.q.row(2).to_vec(), vec![0, 127, -64]); // inv = 31.75: −63.5 → −64 (even)
                                                        // Subnormal elements in a live row quantize to 0 (the recipe is denormal-proof).
    let x = arr2(&[[1e-30f32, 1e-40, -1e-41]]);
    let a = quantize_per_token(x.view()).unwrap();
    assert_eq!(a.q.row(0).to_vec(), vec![127, 0, 0]);
    // Empty shapes.
    let e = quantize_per_token(Array2::<f32>::zeros((3, 0)).view()).unwrap();
    assert_eq!((e.q.dim(), e.scales.len()), ((3, 0), 3));
    let e = quantize_per_token(Array2::<f32>::zeros((0, 5)).view()).unwrap();
    assert_eq!((e.q.dim(), e.scales.len()), ((0, 5), 0));
}

#[test]
fn non_finite_input_names_the_first_index() {
    for (m, k) in [(4usize, 9usize), (64, 1024)] {
        // 64×1024 takes the parallel path; the error must still name the first bad element.
        let mut x = randn(m, k, 7, 1.0);
        x[[m - 1, 2]] = f32::NAN;
        x[[m / 2, k - 1]] = f32::INFINITY;
        for r in [quantize_per_token(x.view()), quantize_static(x.view(), 0.1)] {
            match r {
                Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![m / 2, k - 1]),
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
    }
}

#[test]
fn smoothing_divides_first_then_runs_the_recipe() {
    let x = randn(9, 33, 11, 3.0);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let k = Array1::from_shape_fn(33, |_| rng.random_range(0.3f32..7.0));
    let div = Array2::from_shape_fn(x.dim(), |(r, c)| x[[r, c]] / k[c]);
    assert_eq!(
        quantize_per_token_smoothed(x.view(), k.view()).unwrap(),
        quantize_per_token(div.view()).unwrap()
    );
    assert_eq!(
        quantize_static_smoothed(x.view(), k.view(), 0.02).unwrap(),
        quantize_static(div.view(), 0.02).unwrap()
    );
    // x / k differs from x · (1/k) in the last bit for some elements of this data, so the
    // comparison above does pin the order of operations.
    let recip = Array2::from_shape_fn(x.dim(), |(r, c)| x[[r, c]] * (1.0 / k[c]));
    assert!(div.iter().zip(recip.iter()).any(|(a, b)| a != b));
    // Errors: wrong length, non-positive or non-finite factors, overflow of x / k.
    assert!(matches!(
        quantize_per_token_smoothed(x.view(), k.slice(s![..32])),
        Err(Error::Shape { .. })
    ));
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut kb = k.clone();
        kb[4] = bad;
        assert!(
            matches!(
                quantize_per_token_smoothed(x.view(), kb.view()),
                Err(Error::Invariant { .. })
            ),
            "k = {bad}"
        );
    }
    let big = arr2(&[[1.0f32, 3e38]]);
    match quantize_per_token_smoothed(big.view(), arr1(&[1.0f32, 1e-3]).view()) {
        Err(Error::NonFinite { index, what }) => {
            assert_eq!(index, vec![0, 1]);
            assert!(what.contains("smoothing"), "{what}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn f16_input_converts_exactly() {
    let x = randn(5, 40, 3, 4.0).mapv(f16::from_f32);
    let xf = x.mapv(f16::to_f32);
    assert_eq!(
        quantize_per_token_f16(x.view()).unwrap(),
        quantize_per_token(xf.view()).unwrap()
    );
    assert_eq!(
        quantize_static_f16(x.view(), 0.05).unwrap(),
        quantize_static(xf.view(), 0.05).unwrap()
    );
    let k = Array1::from_shape_fn(40, |c| 1.0 + c as f32 * 0.25);
    assert_eq!(
        quantize_per_token_smoothed_f16(x.view(), k.view()).unwrap(),
        quantize_per_token_smoothed(xf.view(), k.view()).unwrap()
    );
    let mut xn = x.clone();
    xn[[2, 3]] = f16::NAN;
    assert!(
        matches!(quantize_per_token_f16(xn.view()), Err(Error::NonFinite { index, .. }) if index == vec![2, 3])
    );
}

#[test]
fn mode_dispatch_and_fake_quant() {
    let x = randn(6, 20, 9, 1.0);
    assert_eq!(
        quantize(x.view(), &ActQuant::DynamicPerToken).unwrap(),
        quantize_per_token(x.view()).unwrap()
    );
    let st = ActQuant::StaticPerTensor { scale: 0.03 };
    assert_eq!(
        quantize(x.view(), &st).unwrap(),
        quantize_static(x.view(), 0.03).unwrap()
    );
    assert!(matches!(
        quantize(x.view(), &ActQuant::None),
        Err(Error::Config { .. })
    ));
    assert_eq!(fake_quantize(x.view(), &ActQuant::None).unwrap(), x);
    let a = quantize_per_token(x.view()).unwrap();
    let fq = fake_quantize(x.view(), &ActQuant::DynamicPerToken).unwrap();
    for ((r, c), &v) in fq.indexed_iter() {
        assert_eq!(v, a.q[[r, c]] as f32 * a.scales[r]);
    }
}

#[test]
fn static_observer_tracks_the_max_over_batches() {
    let mut obs = StaticScaleObserver::new();
    assert!(obs.scale().is_err(), "empty observer has no scale");
    obs.observe(arr2(&[[0.5f32, -2.0], [1.0, 0.0]]).view())
        .unwrap();
    obs.observe(arr2(&[[-3.5f32, 1.0]]).view()).unwrap();
    obs.observe(arr2(&[[0.1f32, 0.2]]).view()).unwrap();
    assert_eq!(obs.amax(), 3.5);
    assert_eq!(obs.scale().unwrap(), 3.5 / 127.0);
    assert!(obs.observe(arr2(&[[f32::NAN, 9.0]]).view()).is_err());
    assert_eq!(obs.amax(), 3.5, "a failed batch leaves the state unchanged");
    assert_eq!(
        obs.act_quant().unwrap(),
        ActQuant::StaticPerTensor { scale: 3.5 / 127.0 }
    );
    let mut zeros = StaticScaleObserver::new();
    zeros.observe(Array2::<f32>::zeros((2, 2)).view()).unwrap();
    assert!(
        zeros.scale().is_err(),
        "all-zero calibration gives no valid scale"
    );
}

#[test]
fn percentile_observer_clips_and_is_batch_split_invariant() {
    // |x| = 1, 2, ..., 10000: the 99th percentile is 9900.
    let vals = Array2::from_shape_fn((100, 100), |(r, c)| {
        let v = (r * 100 + c + 1) as f32;
        if c % 2 == 0 {
            v
        } else {
            -v
        }
    });
    let mut one = PercentileScaleObserver::new(99.0).unwrap();
    one.observe(vals.view()).unwrap();
    let clip = one.clip_value().unwrap();
    // Range is 16384, bins are 8 wide: the clip is the upper edge of the bin holding 9900.
    assert!((9900.0..=9908.0).contains(&clip), "clip {clip}");
    assert_eq!(one.scale().unwrap(), clip / 127.0);
    // Same data in growing batches (forcing range doublings and bin merges): identical result.
    let mut split = PercentileScaleObserver::new(99.0).unwrap();
    for rows in [0..1, 1..3, 3..10, 10..40, 40..100] {
        split.observe(vals.slice(s![rows, ..])).unwrap();
    }
    assert_eq!(split, one);
    // 100 % reproduces max|x|.
    let mut full = PercentileScaleObserver::new(100.0).unwrap();
    full.observe(vals.view()).unwrap();
    assert_eq!(full.clip_value().unwrap(), 10000.0);
    // Outliers are clipped: 1999 values of magnitude ≤ 1 plus one 1000 (99.9 % → rank 1999).
    let mut with_outlier = concatenate![
        Axis(1),
        randn(1, 1999, 1, 0.3).mapv(|v| v.clamp(-1.0, 1.0)),
        arr2(&[[1000.0f32]])
    ];
    with_outlier[[0, 0]] = 1.0;
    let mut p = PercentileScaleObserver::new(99.9).unwrap();
    p.observe(with_outlier.view()).unwrap();
    assert!(
        p.clip_value().unwrap() <= 1.0 + 1024.0 / 2048.0,
        "clip {}",
        p.clip_value().unwrap()
    );
    for bad in [0.0, -1.0, 100.5, f64::NAN] {
        assert!(PercentileScaleObserver::new(bad).is_err());
    }
    assert!(PercentileScaleObserver::new(99.0).unwrap().scale().is_err());
}

proptest! {
    #[test]
    fn per_token_properties(m in 1usize..6, k in 1usize..50, seed in any::<u64>(), sigma in 1e-3f32..1e3) {
        let x = randn(m, k, seed, sigma);
        let a = quantize_per_token(x.view()).unwrap();
        let (q, s) = spec_per_token(x.view());
        prop_assert_eq!(&a.q, &q);
        prop_assert_eq!(&a.scales, &s);
        prop_assert!(a.q.iter().all(|&v| v != -128));
    }
}

/// Finds `(amax, x)` with `|x| ≤ amax` for which `round(x · inv)` differs between `inv` (the
/// recipe) and each alternative, so that a test on the row `[amax, x]` pins the exact formula.
fn distinguishing_pair(qmax: f32, alternatives: &[fn(f32, f32) -> f32]) -> (f32, f32) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..100_000 {
        let amax: f32 = rng.random_range(1.0f32..2.0);
        let inv = qmax / amax;
        let j = rng.random_range(1..qmax as i32) as f32;
        let x0 = (j + 0.5) / inv;
        for x in [
            f32::from_bits(x0.to_bits() - 1),
            x0,
            f32::from_bits(x0.to_bits() + 1),
        ] {
            let ours = (x * inv).round_ties_even();
            if x <= amax
                && alternatives
                    .iter()
                    .all(|alt| alt(x, amax).round_ties_even() != ours)
            {
                return (amax, x);
            }
        }
    }
    panic!("no distinguishing input found");
}

#[test]
fn per_token_uses_exactly_x_times_127_over_amax() {
    let alts: [fn(f32, f32) -> f32; 2] = [|x, a| x / (a / 127.0), |x, a| x * (1.0 / (a / 127.0))];
    let (amax, x) = distinguishing_pair(127.0, &alts);
    let a = quantize_per_token(arr2(&[[amax, x]]).view()).unwrap();
    assert_eq!(a.scales[0], amax / 127.0);
    assert_eq!(
        a.q[[0, 1]] as f32,
        (x * (127.0 / amax)).round_ties_even(),
        "amax {amax} x {x}"
    );
    // Static: x · (1/scale), not x / scale.
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let (scale, x) = loop {
        let scale: f32 = rng.random_range(0.01f32..0.02);
        let j = rng.random_range(1..127) as f32;
        let x = (j + 0.5) * scale;
        if (x * (1.0 / scale)).round_ties_even() != (x / scale).round_ties_even() {
            break (scale, x);
        }
    };
    let s = quantize_static(arr2(&[[x]]).view(), scale).unwrap();
    assert_eq!(
        s.q[[0, 0]] as f32,
        (x * (1.0 / scale)).round_ties_even(),
        "scale {scale} x {x}"
    );
}
