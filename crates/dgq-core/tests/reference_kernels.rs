//! CPU reference kernels against naive loops: the integer paths bit for bit (i64 triple loops),
//! the epilogues against their written-out operation order, and the float paths within the
//! floating-point error bound stated in `dgq_core::reference`.

use dgq_core::act::{quantize_per_token, quantize_static, ActQuant, QuantizedActs};
use dgq_core::quant::Bits;
use dgq_core::reference::{
    fake_quant_w4a8, fake_quant_w8a8, gemm_i8_i32, matmul_f32_nt, nmse, w4a16_gemm, w4a16_gemm_dgq,
    w4a8_gemm, w4a8_gemm_i32, w8a8_gemm, MAX_K_I32,
};
use dgq_core::{DualGrainedWeight, Error, SymIntWeight};
use dgq_testkit::s2_tiered;
use half::f16;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn randn(m: usize, k: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, 1.0).unwrap();
    Array2::from_shape_fn((m, k), |_| d.sample(&mut rng))
}

fn rand_i8(m: usize, k: usize, seed: u64, lo: i8, hi: i8) -> Array2<i8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((m, k), |_| rng.random_range(lo..=hi))
}

/// A random valid DGQ weight built directly: random zero points and S2 (mostly small, so that q
/// keeps a wide range; some large, so that the overflow clamp bites), then q inside `q_bounds`.
fn random_dgq(n: usize, k: usize, g: usize, seed: u64) -> DualGrainedWeight {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    dgq_testkit::dgq_weight(&mut rng, n, k, g, s2_tiered, |r| {
        r.random_range(1e-4f32..2e-3)
    })
}

fn random_sym(bits: Bits, n: usize, k: usize, g: usize, seed: u64) -> SymIntWeight {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    dgq_testkit::sym_weight(&mut rng, bits, n, k, g, |r| r.random_range(1e-3f32..2e-2))
}

fn naive_i64(x: ArrayView2<i8>, w: ArrayView2<i8>) -> Array2<i64> {
    Array2::from_shape_fn((x.nrows(), w.nrows()), |(m, n)| {
        (0..x.ncols())
            .map(|k| x[[m, k]] as i64 * w[[n, k]] as i64)
            .sum()
    })
}

fn to_i32(a: &Array2<i64>) -> Array2<i32> {
    a.mapv(|v| i32::try_from(v).unwrap())
}

/// Exact (f64) `Σ_k a_k b_k` and `Σ_k |a_k b_k|` per output: f32·f32 products are exact in f64 and
/// the f64 sums of these K are far below f32 resolution.
fn exact_f64(x: ArrayView2<f32>, w: ArrayView2<f32>) -> (Array2<f64>, Array2<f64>) {
    let (m, n, k) = (x.nrows(), w.nrows(), x.ncols());
    let mut y = Array2::zeros((m, n));
    let mut a = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            for c in 0..k {
                let p = x[[i, c]] as f64 * w[[j, c]] as f64;
                y[[i, j]] += p;
                a[[i, j]] += p.abs();
            }
        }
    }
    (y, a)
}

/// Asserts `|got − exact| ≤ 1.01 · (K + slack) · u · (Σ|terms| + |bias|)` element-wise: the
/// standard bound for a K-term f32 dot product in any summation order (`γ_K`), plus `slack`
/// roundings for the scale products and the bias add.
fn assert_within_dot_bound(
    got: ArrayView2<f32>,
    exact: ArrayView2<f64>,
    abs_terms: ArrayView2<f64>,
    bias: Option<ArrayView1<f32>>,
    k: usize,
    slack: usize,
    what: &str,
) {
    for ((i, j), &g) in got.indexed_iter() {
        let b = bias.map_or(0.0, |b| b[j] as f64);
        let bound = 1.01 * (k + slack) as f64 * U * (abs_terms[[i, j]] + b.abs()) + 1e-38;
        let err = (g as f64 - (exact[[i, j]] + b)).abs();
        assert!(
            err <= bound,
            "{what}: [{i}, {j}] err {err:e} > bound {bound:e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Integer paths: bit-exact.

#[test]
fn w4a8_i32_is_bit_exact_over_shapes() {
    let shapes = [
        (5usize, 384usize, 128usize),
        (19, 192, 64),
        (40, 128, 128),
        (16, 6, 2),
        (33, 256, 64),
    ];
    for (si, &(n, k, g)) in shapes.iter().enumerate() {
        let w = random_dgq(n, k, g, 100 + si as u64);
        let w8 = w.to_int8();
        for m in [1usize, 2, 7, 16, 33, 128] {
            // Activation codes from the real quantizer and from the full [-127, 127] range.
            let xq = quantize_per_token(randn(m, k, m as u64).view()).unwrap().q;
            let xr = rand_i8(m, k, 7 * m as u64 + si as u64, -127, 127);
            for x in [xq, xr] {
                let got = w4a8_gemm_i32(x.view(), &w).unwrap();
                assert_eq!(
                    got,
                    to_i32(&naive_i64(x.view(), w8.view())),
                    "M={m} N={n} K={k} g={g}"
                );
            }
        }
    }
}

#[test]
fn w4a8_i32_is_bit_exact_for_long_prefill() {
    // M beyond a thousand tokens (many token blocks), N not a multiple of the row block.
    let (m, n, k, g) = (1030usize, 21usize, 384usize, 128usize);
    let w = random_dgq(n, k, g, 77);
    let x = rand_i8(m, k, 78, -127, 127);
    let got = w4a8_gemm_i32(x.view(), &w).unwrap();
    assert_eq!(got, to_i32(&naive_i64(x.view(), w.to_int8().view())));
}

#[test]
fn gemm_i8_i32_is_exact_for_all_codes_and_layouts() {
    for (m, n, k) in [
        (1usize, 1usize, 1usize),
        (65, 17, 1000),
        (3, 33, 31),
        (130, 9, 64),
    ] {
        let x = rand_i8(m, k, m as u64, i8::MIN, i8::MAX);
        let w = rand_i8(n, k, n as u64 + 1, i8::MIN, i8::MAX);
        let want = to_i32(&naive_i64(x.view(), w.view()));
        assert_eq!(
            gemm_i8_i32(x.view(), w.view()).unwrap(),
            want,
            "M={m} N={n} K={k}"
        );
        // Non-standard layouts: transposed storage and column-major copies.
        let xt = x.t().to_owned();
        let wf = w.t().as_standard_layout().to_owned();
        assert_eq!(gemm_i8_i32(xt.t(), wf.t()).unwrap(), want);
    }
    // Largest magnitudes: all −128 products, K = 4096 → 2^26 per output.
    let x = Array2::from_elem((2, 4096), i8::MIN);
    let y = gemm_i8_i32(x.view(), x.view()).unwrap();
    assert!(y.iter().all(|&v| v == 4096 * 128 * 128));
    // Slices with steps.
    let big = rand_i8(20, 90, 5, -127, 127);
    let (xs, ws) = (big.slice(s![..7;2, ..;3]), big.slice(s![1..;3, 1..;3]));
    assert_eq!(gemm_i8_i32(xs, ws).unwrap(), to_i32(&naive_i64(xs, ws)));
}

#[test]
fn w4a8_epilogue_follows_the_documented_order() {
    let (m, n, k, g) = (9usize, 21usize, 256usize, 64usize);
    let w = random_dgq(n, k, g, 3);
    let xf = randn(m, k, 4);
    let bias = Array1::from_shape_fn(n, |j| (j as f32 - 10.0) * 0.37);
    for x in [
        quantize_per_token(xf.view()).unwrap(),
        quantize_static(xf.view(), 0.021).unwrap(),
    ] {
        let acc = naive_i64(x.q.view(), w.to_int8().view());
        for b in [None, Some(bias.view())] {
            let y = w4a8_gemm(&x, &w, b).unwrap();
            for ((i, j), &v) in y.indexed_iter() {
                let a = acc[[i, j]] as i32 as f32;
                let t = x.scale(i) * w.s1[j].to_f32();
                let mut want = a * t;
                if let Some(b) = b {
                    want += b[j];
                }
                assert_eq!(v.to_bits(), want.to_bits(), "[{i}, {j}]");
            }
        }
    }
}

#[test]
fn w8a8_per_channel_and_grouped_are_exact() {
    let (m, k) = (13usize, 256usize);
    let x = quantize_per_token(randn(m, k, 8).view()).unwrap();
    let bias = Array1::from_shape_fn(11, |j| j as f32 * 0.1 - 0.5);
    for (bits, g) in [(Bits::Int8, k), (Bits::Int8, 64), (Bits::Int4, 32)] {
        let w = random_sym(bits, 11, k, g, g as u64);
        for b in [None, Some(bias.view())] {
            let y = w8a8_gemm(&x, &w, b).unwrap();
            for ((i, j), &v) in y.indexed_iter() {
                let mut want: Option<f32> = None;
                for gi in 0..k / g {
                    let acc: i64 = (gi * g..(gi + 1) * g)
                        .map(|c| x.q[[i, c]] as i64 * w.q[[j, c]] as i64)
                        .sum();
                    let t = (acc as i32 as f32) * (x.scale(i) * w.scales[[j, gi]].to_f32());
                    want = Some(want.map_or(t, |y| y + t));
                }
                let mut want = want.unwrap();
                if let Some(b) = b {
                    want += b[j];
                }
                assert_eq!(v.to_bits(), want.to_bits(), "{bits:?} g={g} [{i}, {j}]");
            }
            // And the fake-quant float path agrees within the dot-product bound.
            let fq =
                fake_quant_w8a8(randn(m, k, 8).view(), &w, &ActQuant::DynamicPerToken, b).unwrap();
            let (ex, ab) = exact_f64(x.dequantize().unwrap().view(), w.dequantize().view());
            assert_within_dot_bound(fq.view(), ex.view(), ab.view(), b, k, 2, "fake w8a8");
            assert_within_dot_bound(
                y.view(),
                ex.view(),
                ab.view(),
                b,
                k,
                2 + 2 * k / g,
                "int w8a8",
            );
        }
    }
}

#[test]
fn shapes_bounds_and_invariants_are_typed_errors() {
    let w = random_dgq(4, 64, 32, 1);
    let x = quantize_per_token(randn(3, 64, 1).view()).unwrap();
    // K mismatch.
    let x63 = quantize_per_token(randn(3, 63, 1).view()).unwrap();
    assert!(matches!(
        w4a8_gemm_i32(x63.q.view(), &w),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        w4a8_gemm(&x63, &w, None),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        gemm_i8_i32(x63.q.view(), w.to_int8().view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        matmul_f32_nt(randn(2, 5, 1).view(), randn(3, 6, 1).view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        fake_quant_w4a8(randn(2, 63, 1).view(), &w, &ActQuant::None, None),
        Err(Error::Shape { .. })
    ));
    // Bias and scale lengths.
    assert!(matches!(
        w4a8_gemm(&x, &w, Some(Array1::zeros(5).view())),
        Err(Error::Shape { .. })
    ));
    let bad_scales = QuantizedActs {
        q: x.q.clone(),
        scales: Array1::ones(2),
    };
    assert!(matches!(
        w4a8_gemm(&bad_scales, &w, None),
        Err(Error::Shape { .. })
    ));
    let nan_scale = QuantizedActs {
        q: x.q.clone(),
        scales: Array1::from_elem(1, f32::NAN),
    };
    assert!(matches!(
        w4a8_gemm(&nan_scale, &w, None),
        Err(Error::Invariant { .. })
    ));
    // The INT32 accumulator bound.
    let wide = Array2::<i8>::zeros((0, MAX_K_I32 + 1));
    assert!(matches!(
        gemm_i8_i32(wide.view(), wide.view()),
        Err(Error::Shape { .. })
    ));
    assert!(gemm_i8_i32(
        Array2::<i8>::zeros((0, MAX_K_I32)).view(),
        Array2::<i8>::zeros((0, MAX_K_I32)).view()
    )
    .is_ok());
    // Broken DGQ invariants are caught while unpacking, naming the element.
    let mut over = w.clone();
    over.s2[[2, 1]] = 127;
    over.zeros[[2, 1]] = 0;
    over.q.slice_mut(s![2, 32..]).fill(1);
    over.q[[2, 40]] = 2; // 127 · (2 − 0) overflows
    match w4a8_gemm_i32(x.q.view(), &over) {
        Err(Error::Invariant { problem, .. }) => assert!(problem.contains("[2, 40]"), "{problem}"),
        other => panic!("expected Invariant, got {other:?}"),
    }
    let mut q16 = w.clone();
    q16.q[[1, 5]] = 16;
    assert!(matches!(
        w4a8_gemm(&x, &q16, None),
        Err(Error::Invariant { .. })
    ));
    assert!(matches!(
        w4a16_gemm_dgq(randn(1, 64, 1).view(), &q16, None),
        Err(Error::Invariant { .. })
    ));
    let mut s2z = w.clone();
    s2z.s2[[0, 0]] = 0;
    assert!(matches!(
        w4a8_gemm_i32(x.q.view(), &s2z),
        Err(Error::Invariant { .. })
    ));
    let mut s1z = w.clone();
    s1z.s1[3] = f16::ZERO;
    assert!(matches!(
        w4a8_gemm(&x, &s1z, None),
        Err(Error::Invariant { .. })
    ));
    let mut badg = w.clone();
    badg.group_size = 48;
    assert!(matches!(
        w4a8_gemm_i32(x.q.view(), &badg),
        Err(Error::GroupSize { .. })
    ));
    let mut shp = w.clone();
    shp.zeros = Array2::zeros((4, 3));
    assert!(matches!(
        w4a8_gemm(&x, &shp, None),
        Err(Error::Shape { .. })
    ));
    let mut sym = random_sym(Bits::Int8, 4, 64, 64, 2);
    sym.scales = Array2::from_elem((4, 2), f16::ONE);
    assert!(matches!(
        w8a8_gemm(&x, &sym, None),
        Err(Error::Shape { .. })
    ));
    // Empty shapes are fine.
    let e = quantize_per_token(Array2::<f32>::zeros((0, 64)).view()).unwrap();
    assert_eq!(w4a8_gemm(&e, &w, None).unwrap().dim(), (0, 4));
}

// ---------------------------------------------------------------------------------------------
// Integer vs float paths.

/// The integer path and the fake-quant f32 path compute the same exact value
/// `T = Σ_k (q_x·s_x)(W_s8·s1)`: the integer path to within 3 roundings of T (i32→f32, s_x·s1,
/// the product), the float path to within `γ_K·Σ|x̂ŵ|` plus 2 roundings per term (x̂ and ŵ). So
/// element-wise `|y_int − y_fake| ≤ (K + 5)·u·(Σ_k |x̂_k ŵ_k| + |bias|)` (checked with a 1 %
/// margin). On top, the NMSE between them must stay below 1e-10: rounding errors of random-sign
/// terms add like a random walk, so the observed NMSE is ~1e-14; 1e-10 leaves 10⁴× room and would
/// still catch any systematic difference (one wrong scale, a dropped group, an off-by-one zero
/// point gives NMSE ≫ 1e-6).
fn check_int_vs_fake(
    x: ArrayView2<f32>,
    w: &DualGrainedWeight,
    act: ActQuant,
    bias: Option<ArrayView1<f32>>,
) {
    let xq = dgq_core::act::quantize(x, &act).unwrap();
    let y_int = w4a8_gemm(&xq, w, bias).unwrap();
    let y_fake = fake_quant_w4a8(x, w, &act, bias).unwrap();
    let (_, abs_terms) = exact_f64(xq.dequantize().unwrap().view(), w.dequantize().view());
    let k = w.k();
    for (((i, j), &a), &b) in y_int.indexed_iter().zip(y_fake.iter()) {
        let bb = bias.map_or(0.0, |v| v[j] as f64);
        let bound = 1.01 * (k + 5) as f64 * U * (abs_terms[[i, j]] + bb.abs()) + 1e-38;
        assert!(
            ((a - b) as f64).abs() <= bound,
            "[{i}, {j}]: int {a} vs fake {b} (bound {bound:e})"
        );
    }
    let e = nmse(y_int.view(), y_fake.view()).unwrap();
    assert!(e <= 1e-10, "NMSE {e:e}");
}

#[test]
fn integer_path_matches_fake_quant() {
    for (m, n, k, g, seed) in [
        (7usize, 33usize, 384usize, 128usize, 1u64),
        (33, 20, 256, 64, 2),
        (1, 64, 512, 128, 3),
    ] {
        let w = random_dgq(n, k, g, seed);
        let x = randn(m, k, seed + 10);
        let bias = Array1::from_shape_fn(n, |j| j as f32 * 0.01);
        check_int_vs_fake(x.view(), &w, ActQuant::DynamicPerToken, None);
        check_int_vs_fake(x.view(), &w, ActQuant::DynamicPerToken, Some(bias.view()));
        check_int_vs_fake(
            x.view(),
            &w,
            ActQuant::StaticPerTensor { scale: 0.02 },
            Some(bias.view()),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Float paths.

#[test]
fn matmul_f32_nt_matches_naive_within_dot_bound() {
    for (m, n, k) in [
        (1usize, 1usize, 1usize),
        (3, 5, 7),
        (64, 48, 300),
        (130, 70, 96),
        (1, 300, 1024),
    ] {
        let x = randn(m, k, m as u64);
        let w = randn(n, k, n as u64 + 100);
        let (ex, ab) = exact_f64(x.view(), w.view());
        let y = matmul_f32_nt(x.view(), w.view()).unwrap();
        assert_within_dot_bound(y.view(), ex.view(), ab.view(), None, k, 0, "matmul_f32_nt");
        // Transposed / strided operands give the same numbers.
        let xt = x.t().to_owned();
        let wt = w.t().to_owned();
        let y2 = matmul_f32_nt(xt.t(), wt.t()).unwrap();
        assert_within_dot_bound(
            y2.view(),
            ex.view(),
            ab.view(),
            None,
            k,
            0,
            "matmul_f32_nt transposed",
        );
    }
    let big = randn(30, 40, 9);
    let (xs, ws) = (big.slice(s![..;3, 1..;2]), big.slice(s![2..;2, ..;2]));
    let (ex, ab) = exact_f64(xs, ws);
    assert_within_dot_bound(
        matmul_f32_nt(xs, ws).unwrap().view(),
        ex.view(),
        ab.view(),
        None,
        xs.ncols(),
        0,
        "strided",
    );
    assert_eq!(
        matmul_f32_nt(randn(3, 0, 1).view(), randn(4, 0, 1).view()).unwrap(),
        Array2::<f32>::zeros((3, 4))
    );
    assert_eq!(
        matmul_f32_nt(randn(0, 5, 1).view(), randn(4, 5, 1).view())
            .unwrap()
            .dim(),
        (0, 4)
    );
}

#[test]
fn weight_only_paths_match_naive_within_dot_bound() {
    let (m, k) = (5usize, 256usize);
    let x = randn(m, k, 21);
    let bias = Array1::from_shape_fn(37, |j| 1.0 - j as f32 * 0.05);
    for (bits, g) in [(Bits::Int4, 32usize), (Bits::Int4, 256), (Bits::Int8, 64)] {
        let w = random_sym(bits, 37, k, g, 5);
        let (ex, ab) = exact_f64(x.view(), w.dequantize().view());
        for b in [None, Some(bias.view())] {
            let y = w4a16_gemm(x.view(), &w, b).unwrap();
            assert_within_dot_bound(y.view(), ex.view(), ab.view(), b, k, 1, "w4a16_gemm");
        }
    }
    let w = random_dgq(37, k, 64, 6);
    let (ex, ab) = exact_f64(x.view(), w.dequantize().view());
    let y = w4a16_gemm_dgq(x.view(), &w, Some(bias.view())).unwrap();
    assert_within_dot_bound(
        y.view(),
        ex.view(),
        ab.view(),
        Some(bias.view()),
        k,
        1,
        "w4a16_gemm_dgq",
    );
    // Fake quant without activation quantization is the weight-only path.
    assert_eq!(
        fake_quant_w4a8(x.view(), &w, &ActQuant::None, Some(bias.view())).unwrap(),
        y
    );
    // A NaN activation is an error on quantizing paths.
    let mut xn = x.clone();
    xn[[1, 2]] = f32::NAN;
    assert!(matches!(
        fake_quant_w4a8(xn.view(), &w, &ActQuant::DynamicPerToken, None),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn nmse_metric() {
    let a = Array2::from_shape_vec((1, 2), vec![3.0f32, 4.0]).unwrap();
    let b = Array2::from_shape_vec((1, 2), vec![3.0f32, 5.0]).unwrap();
    assert_eq!(nmse(a.view(), a.view()).unwrap(), 0.0);
    assert!((nmse(a.view(), b.view()).unwrap() - 1.0 / 25.0).abs() < 1e-15);
    let z = Array2::<f32>::zeros((1, 2));
    assert_eq!(nmse(z.view(), z.view()).unwrap(), 0.0);
    assert_eq!(nmse(z.view(), a.view()).unwrap(), f64::INFINITY);
    assert!(nmse(a.view(), z.slice(s![.., ..1])).is_err());
    let mut n = a.clone();
    n[[0, 1]] = f32::NAN;
    assert!(matches!(
        nmse(a.view(), n.view()),
        Err(Error::NonFinite { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn small_shapes_int_exact_and_close_to_fake(
        m in 1usize..10, n in 1usize..24, groups in 1usize..5, g_half in 1usize..17, seed in any::<u64>(),
    ) {
        let (g, k) = (2 * g_half, 2 * g_half * groups);
        let w = random_dgq(n, k, g, seed);
        let x = randn(m, k, seed ^ 0x5eed);
        let xq = quantize_per_token(x.view()).unwrap();
        let got = w4a8_gemm_i32(xq.q.view(), &w).unwrap();
        prop_assert_eq!(got, to_i32(&naive_i64(xq.q.view(), w.to_int8().view())));
        check_int_vs_fake(x.view(), &w, ActQuant::DynamicPerToken, None);
    }
}
