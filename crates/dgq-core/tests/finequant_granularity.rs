//! FineQuant adaptive granularity: outliers get finer groups than smooth weights, the chosen
//! group size is valid (divides K, even for int4, ≥ the minimum), the result dequantizes within
//! half a step, and bad inputs are errors.

use dgq_core::quant::fine_grained::*;
use dgq_core::quant::Bits;
use dgq_core::{Error, SymIntWeight};
use ndarray::{Array2, ArrayView2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn randn(seed: u64, n: usize, k: usize) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, k), |_| rng.sample::<f32, _>(StandardNormal))
}

/// Gaussian weights with two isolated outliers (rows 3 and 11).
fn with_outliers(seed: u64, n: usize, k: usize) -> Array2<f32> {
    let mut w = randn(seed, n, k);
    w[[3, 37]] = 40.0;
    w[[11, k - 5]] = -35.0;
    w
}

fn cfg(bits: Bits) -> FineQuantConfig {
    FineQuantConfig {
        bits,
        ..Default::default()
    }
}

/// Every element is within half a step of its weight: |ŵ − w| ≤ s/2 (plus the f32 rounding of
/// w/s). The f16 scale is within 2⁻¹¹ of amax/qmax, so even the clipped group maxima are within
/// amax·2⁻¹¹ < s/2 of their weight.
fn assert_within_half_step(w: ArrayView2<f32>, q: &SymIntWeight) {
    let d = q.dequantize();
    let g = q.group_size;
    for ((r, c), &x) in w.indexed_iter() {
        let s = q.scales[[r, c / g]].to_f32();
        let err = (d[[r, c]] - x).abs();
        assert!(
            err <= 0.5 * s + 1e-6 * x.abs(),
            "[{r}, {c}]: {} vs {x}, step {s}",
            d[[r, c]]
        );
    }
}

fn mse(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn isolated_outliers_get_finer_groups_than_smooth_weights() {
    let (n, k) = (16, 512);
    for bits in [Bits::Int4, Bits::Int8] {
        let smooth = randn(7, n, k);
        let rs = choose_group_size(smooth.view(), &cfg(bits)).unwrap();
        assert_eq!(
            rs.group_size, k,
            "{bits:?}: smooth weights stay column-wise"
        );
        assert_eq!(rs.stop, StopReason::Converged);
        assert_eq!(rs.trace.len(), 1);
        assert_eq!(rs.trace[0].outlier_groups, 0);
        assert!(!rs.trace[0].split);
        assert!(rs.trace[0].max_ratio < 2.0);

        let spiky = with_outliers(7, n, k);
        let ro = choose_group_size(spiky.view(), &cfg(bits)).unwrap();
        // "Any group" rule: the outlier's group always has a clean half, down to the minimum.
        assert_eq!(ro.group_size, 64, "{bits:?}: {ro:?}");
        assert_eq!(ro.stop, StopReason::MinGroupSize);
        let sizes: Vec<_> = ro.trace.iter().map(|d| (d.from, d.to, d.split)).collect();
        assert_eq!(
            sizes,
            vec![(512, 256, true), (256, 128, true), (128, 64, true)]
        );
        for d in &ro.trace {
            assert_eq!(d.outlier_groups, 2, "{d:?}");
            assert_eq!(d.groups, n * k / d.from);
            assert!(d.max_ratio > 5.0, "{d:?}");
        }

        // The finer groups pay off: lower MSE than column-wise RTN on the same weights.
        let fq = quantize(spiky.view(), &cfg(bits)).unwrap();
        assert_eq!(fq.weight.group_size, 64);
        let col = SymIntWeight::quantize_rtn(spiky.view(), bits, k).unwrap();
        let (e_fq, e_col) = (
            mse(&fq.weight.dequantize(), &spiky),
            mse(&col.dequantize(), &spiky),
        );
        eprintln!("{bits:?}: FineQuant g64 MSE {e_fq:e}, column-wise MSE {e_col:e}");
        assert!(e_fq < 0.5 * e_col, "{e_fq} vs {e_col}");
    }
}

#[test]
fn outlier_fraction_threshold_stops_once_outliers_are_confined() {
    // 2 outlier groups of 16 rows: 2/16 at g = 512, 2/32 at 256, 2/64 at 128.
    let w = with_outliers(8, 16, 512);
    let c = FineQuantConfig {
        min_outlier_fraction: 0.05,
        ..cfg(Bits::Int4)
    };
    let r = choose_group_size(w.view(), &c).unwrap();
    assert_eq!(r.group_size, 128, "{r:?}");
    assert_eq!(r.stop, StopReason::Converged);
    let splits: Vec<_> = r.trace.iter().map(|d| d.split).collect();
    assert_eq!(splits, vec![true, true, false]);
}

#[test]
fn range_metric_changes_the_decision_where_documented() {
    // Two halves at opposite signs: max − min sees a parent 10× wider than each half; the
    // symmetric quantizer's max|w| is 5 everywhere, so splitting would not help it.
    let mut w = Array2::<f32>::zeros((2, 128));
    for r in 0..2 {
        for c in 0..128 {
            let t = (c % 64) as f32 / 63.0;
            w[[r, c]] = if c < 64 { 4.0 + t } else { -4.0 - t };
        }
    }
    let base = FineQuantConfig {
        min_group_size: 32,
        ..cfg(Bits::Int8)
    };
    let r = choose_group_size(w.view(), &base).unwrap();
    assert_eq!(r.trace[0].outlier_groups, 2);
    assert!(r.group_size < 128);
    let r = choose_group_size(
        w.view(),
        &FineQuantConfig {
            range: RangeMetric::AbsMax,
            ..base
        },
    )
    .unwrap();
    assert_eq!(r.group_size, 128, "{r:?}");
}

#[test]
fn halving_stops_where_k_is_not_divisible() {
    // K = 96 = 3·32 with outliers (every step splits): 96 → 48 → 24 → 12 → 6, then 3 is odd
    // (int4 stops: Indivisible) or below the minimum 4 (int8 stops: MinGroupSize); with
    // minimum 1, int8 reaches 3, which cannot be halved.
    let w = with_outliers(9, 16, 96);
    let c = |bits, min_group_size| FineQuantConfig {
        bits,
        min_group_size,
        ..Default::default()
    };
    let r = choose_group_size(w.view(), &c(Bits::Int4, 4)).unwrap();
    assert_eq!((r.group_size, r.stop), (6, StopReason::Indivisible));
    let r = choose_group_size(w.view(), &c(Bits::Int8, 4)).unwrap();
    assert_eq!((r.group_size, r.stop), (6, StopReason::MinGroupSize));
    let r = choose_group_size(w.view(), &c(Bits::Int8, 1)).unwrap();
    assert_eq!((r.group_size, r.stop), (3, StopReason::Indivisible));

    // Odd K with int8: cannot halve at all, stays column-wise.
    let w = with_outliers(9, 16, 45);
    let r = choose_group_size(w.view(), &c(Bits::Int8, 1)).unwrap();
    assert_eq!((r.group_size, r.stop), (45, StopReason::Indivisible));
    assert!(r.trace.is_empty());
    // K below the minimum: column-wise.
    let r = choose_group_size(w.view(), &c(Bits::Int8, 64)).unwrap();
    assert_eq!(r.group_size, 45);
}

#[test]
fn result_dequantizes_within_half_a_step_int4_and_int8() {
    for bits in [Bits::Int4, Bits::Int8] {
        for w in [randn(10, 24, 256), with_outliers(11, 24, 256)] {
            let fq = quantize(w.view(), &cfg(bits)).unwrap();
            fq.weight.validate().unwrap();
            assert_eq!(fq.weight.bits, bits);
            assert_eq!(fq.weight.group_size, fq.report.group_size);
            assert_eq!(fq.weight.scales.dim(), (24, 256 / fq.report.group_size));
            let m = bits.sym_max() as i8;
            assert!(fq.weight.q.iter().all(|&q| (-m..=m).contains(&q)));
            // The codes reach the ends of the range (the group maxima map to ±qmax).
            assert!(fq.weight.q.iter().any(|&q| q.abs() == m));
            assert_within_half_step(w.view(), &fq.weight);
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let mut w = randn(12, 4, 64);
    w[[2, 9]] = f32::NAN;
    match quantize(w.view(), &cfg(Bits::Int8)) {
        Err(Error::NonFinite { index, .. }) => assert_eq!(index, vec![2, 9]),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    w[[2, 9]] = f32::NEG_INFINITY;
    assert!(matches!(
        choose_group_size(w.view(), &cfg(Bits::Int4)),
        Err(Error::NonFinite { .. })
    ));

    // int4 needs K even (nibble packing).
    let w = randn(12, 4, 63);
    assert!(matches!(
        quantize(w.view(), &cfg(Bits::Int4)),
        Err(Error::GroupSize { k: 63, .. })
    ));
    let empty = Array2::<f32>::zeros((0, 64));
    assert!(matches!(
        quantize(empty.view(), &cfg(Bits::Int8)),
        Err(Error::Shape { .. })
    ));
    let empty = Array2::<f32>::zeros((4, 0));
    assert!(matches!(
        quantize(empty.view(), &cfg(Bits::Int8)),
        Err(Error::Shape { .. })
    ));

    let w = randn(12, 4, 64);
    let bad = [
        FineQuantConfig {
            alpha: 1.0,
            ..Default::default()
        },
        FineQuantConfig {
            alpha: 0.5,
            ..Default::default()
        },
        FineQuantConfig {
            alpha: f32::NAN,
            ..Default::default()
        },
        FineQuantConfig {
            alpha: f32::INFINITY,
            ..Default::default()
        },
        FineQuantConfig {
            min_group_size: 0,
            ..Default::default()
        },
        FineQuantConfig {
            min_outlier_fraction: 1.0,
            ..Default::default()
        },
        FineQuantConfig {
            min_outlier_fraction: -0.1,
            ..Default::default()
        },
        FineQuantConfig {
            min_outlier_fraction: f64::NAN,
            ..Default::default()
        },
    ];
    for c in bad {
        assert!(
            matches!(quantize(w.view(), &c), Err(Error::Config { .. })),
            "{c:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn chosen_group_size_is_always_valid(
        n in 1usize..6,
        k in prop::sample::select(vec![2usize, 6, 24, 45, 96, 160, 192, 320, 768]),
        int8 in any::<bool>(),
        outliers in any::<bool>(),
        min_group_size in 1usize..80,
        alpha in 1.01f32..8.0,
        frac in prop::sample::select(vec![0.0f64, 0.01, 0.2]),
        seed in any::<u64>(),
    ) {
        let bits = if int8 { Bits::Int8 } else { Bits::Int4 };
        prop_assume!(int8 || k % 2 == 0);
        let mut w = randn(seed, n, k);
        if outliers {
            w[[n - 1, k / 3]] = 50.0;
        }
        let c = FineQuantConfig { bits, alpha, min_group_size, min_outlier_fraction: frac, ..Default::default() };
        let fq = quantize(w.view(), &c).unwrap();
        let g = fq.report.group_size;
        prop_assert_eq!(k % g, 0);
        prop_assert!(g == k || g >= min_group_size, "g {} min {}", g, min_group_size);
        if !int8 {
            prop_assert_eq!(g % 2, 0);
        }
        // The trace is a chain of halvings from K that ends at g.
        let mut cur = k;
        for d in &fq.report.trace {
            prop_assert_eq!(d.from, cur);
            prop_assert_eq!(d.to, cur / 2);
            prop_assert!(d.outlier_groups <= d.groups);
            if d.split { cur = d.to; }
        }
        prop_assert_eq!(cur, g);
        prop_assert_eq!(fq.weight.group_size, g);
        fq.weight.validate().unwrap();
        assert_within_half_step(w.view(), &fq.weight);
    }
}
