//! GPU tests against the CPU reference of `dgq_core` (`reference::w4a8_gemm_i32` /
//! `reference::w4a8_gemm`, `act::quantize_*`): INT32 accumulators, the f32 epilogue (compared
//! after the same f16/bf16 rounding) and activation codes and scales all bit-exact, typed errors before launch. Each test
//! skips with a printed reason when no usable GPU (or no kernels) is present, and fails instead
//! under `DGQ_REQUIRE_GPU=1` (`dgq_testkit::gpu`).
//!
//! `DGQ_GPU_TEST_QUICK=1` restricts the sweeps to small shapes (for compute-sanitizer runs).

mod common;

use std::sync::Arc;

use common::*;
use cudarc::driver::{CudaSlice, CudaStream};
use dgq_cuda::*;
use dgq_testkit::{gpu, random_acts, random_dgq, Device, Gpu, SplitMix64};
use half::{bf16, f16};

fn quick() -> bool {
    std::env::var("DGQ_GPU_TEST_QUICK").is_ok_and(|v| v == "1")
}

#[test]
fn self_test_runs() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    self_test(&s).unwrap();
}

#[test]
fn prepare_round_trips_through_the_device() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let w = random_dgq(256, 512, 128, 3);
    let p = PreparedDgqWeight::prepare(&w, &s).unwrap();
    assert_eq!(unprepare_host(&p.download(&s).unwrap()).unwrap(), w);
}

/// Runs the GEMM on `x` with every applicable kernel and checks the accumulators exactly.
struct Case {
    w: dgq_core::DualGrainedWeight,
    pw: PreparedDgqWeight,
    ws: GemmWorkspace,
    group_size: usize,
}

fn case(s: &Arc<CudaStream>, w: &dgq_core::DualGrainedWeight) -> Case {
    Case {
        w: w.clone(),
        pw: PreparedDgqWeight::prepare(w, s).unwrap(),
        ws: GemmWorkspace::for_shapes(s, &[(w.n(), w.k())]).unwrap(),
        group_size: w.group_size,
    }
}

fn check_i32(s: &Arc<CudaStream>, c: &mut Case, m: usize, seed: u64) {
    let (n, k) = (c.w.n(), c.w.k());
    let (pw, ws) = (&c.pw, &mut c.ws);
    let x = random_acts(m, k, seed);
    let want = ref_gemm_i32(&x, m, &c.w);
    let xd = s.clone_htod(&x).unwrap();
    let mut cfgs = vec![
        GemmConfig::default(),
        GemmConfig {
            kernel: KernelChoice::Wgmma,
            split_k: None,
            ..GemmConfig::default()
        },
    ];
    // The launch knobs change only speed: every one of them off or forced.
    cfgs.push(GemmConfig {
        pdl: false,
        wgmma_tma_store: false,
        decode_max_cta_parts: 1,
        ..GemmConfig::default()
    });
    cfgs.push(GemmConfig {
        decode_plan: Some((2, 3.min(k as u32 / 64))),
        ..GemmConfig::default()
    });
    if m <= DECODE_MAX_M {
        cfgs.push(GemmConfig {
            kernel: KernelChoice::Decode,
            split_k: Some(1),
            ..GemmConfig::default()
        });
        cfgs.push(GemmConfig {
            kernel: KernelChoice::Decode,
            split_k: Some(3.min(k as u32 / 64)),
            ..GemmConfig::default()
        });
    }
    // A workspace without room for scratch: nothing splits K, so the wgmma kernel writes every
    // tile's epilogue itself even where the heuristic would split.
    let mut tiny = GemmWorkspace::with_capacity(s, 1, 1).unwrap();
    let wgmma = GemmConfig {
        kernel: KernelChoice::Wgmma,
        split_k: None,
        ..GemmConfig::default()
    };
    let runs = cfgs.into_iter().map(|c| (c, false)).chain([(wgmma, true)]);
    for (cfg, small) in runs {
        // Poison so that unwritten outputs cannot pass.
        let mut out = s.clone_htod(&vec![0x7f7f_7f7fi32; m * n]).unwrap();
        let w = if small { &mut tiny } else { &mut *ws };
        w4a8_gemm_i32(s, &xd, m, pw, &mut out, w, &cfg).unwrap();
        let got = s.clone_dtoh(&out).unwrap();
        let bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            bad.is_none(),
            "M={m} N={n} K={k} g={} {cfg:?} small workspace {small}: first mismatch at {:?}: got {} want {}",
            c.group_size,
            bad.map(|i| (i / n, i % n)),
            got[bad.unwrap_or(0)],
            want[bad.unwrap_or(0)]
        );
    }
}

#[test]
fn gemm_i32_is_bit_exact_small_shapes() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let ms: &[usize] = if quick() {
        &[1, 7, 16, 33, 64, 128]
    } else {
        &[1, 2, 7, 16, 33, 64, 65, 128, 1024]
    };
    for (i, &(n, k, gs)) in [
        (128, 128, 64),
        (256, 512, 128),
        (384, 768, 64),
        (512, 1024, 256),
        // wgmma-path group sizes whose stage spans two groups (64) or straddles them (192).
        (512, 640, 64),
        (256, 768, 192),
    ]
    .iter()
    .enumerate()
    {
        let mut c = case(&s, &random_dgq(n, k, gs, 100 + i as u64));
        for &m in ms {
            check_i32(&s, &mut c, m, 1000 + m as u64);
        }
    }
}

#[test]
fn gemm_i32_is_bit_exact_llama_shapes() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    if quick() {
        eprintln!("DGQ_GPU_TEST_QUICK=1: skipping LLaMA-size shapes");
        return;
    }
    // LLaMA-7B (q/o, gate/up, down) and LLaMA-70B (q/o, gate/up) projections.
    let shapes: &[(usize, usize, &[usize])] = &[
        (4096, 4096, &[1, 2, 7, 16, 33, 128, 1024]),
        (11008, 4096, &[1, 16, 33, 128]),
        (4096, 11008, &[1, 16, 33, 128]),
        (8192, 8192, &[1, 7, 16, 33, 64, 128]),
        (28672, 8192, &[1, 16, 33]),
    ];
    for (i, &(n, k, ms)) in shapes.iter().enumerate() {
        let mut c = case(&s, &random_dgq(n, k, 128, 200 + i as u64));
        for &m in ms {
            check_i32(&s, &mut c, m, 2000 + m as u64);
        }
    }
}

/// The CPU reference's f32 output rounded to the device's output type must match bit for bit:
/// the device epilogue performs the same IEEE operations in the same order.
fn exact_check<T: Copy + PartialEq + std::fmt::Debug>(
    what: &str,
    got: &[T],
    want: &[f32],
    round: impl Fn(f32) -> T,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad = got.iter().zip(want).position(|(&g, &w)| g != round(w));
    assert!(
        bad.is_none(),
        "{what}: first mismatch at {:?}: got {:?}, reference {:?} ({})",
        bad,
        bad.map(|i| got[i]),
        bad.map(|i| round(want[i])),
        bad.map_or(0.0, |i| want[i])
    );
}

/// `dgq_core::reference::w4a8_gemm` on the given codes and scales.
fn ref_gemm_f32(
    x: &[i8],
    m: usize,
    scales: Vec<f32>,
    w: &dgq_core::DualGrainedWeight,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let qa = dgq_core::act::QuantizedActs {
        q: ndarray::Array2::from_shape_vec((m, w.k()), x.to_vec()).unwrap(),
        scales: ndarray::Array1::from(scales),
    };
    dgq_core::reference::w4a8_gemm(&qa, w, bias.map(ndarray::ArrayView1::from))
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn gemm_float_epilogue_is_bit_exact() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let (n, k) = (384, 1024);
    let w = random_dgq(n, k, 128, 7);
    let pw = PreparedDgqWeight::prepare(&w, &s).unwrap();
    let mut ws = GemmWorkspace::for_shapes(&s, &[(n, k)]).unwrap();
    let mut rng = SplitMix64::new(99);
    let bias: Vec<f32> = (0..n).map(|_| rng.uniform() - 0.5).collect();
    let bias_d = s.clone_htod(&bias).unwrap();
    for &m in &[1usize, 16, 33, 200] {
        let x = random_acts(m, k, 5 + m as u64);
        let sx: Vec<f32> = (0..m).map(|_| 1e-3 + 1e-2 * rng.uniform()).collect();
        let xd = s.clone_htod(&x).unwrap();
        let sxd = s.clone_htod(&sx).unwrap();
        let st = s.clone_htod(&[0.0123f32]).unwrap();
        for (scales, per_token) in [
            (ActScales::PerToken(&sxd), true),
            (ActScales::PerTensor(&st), false),
        ] {
            for with_bias in [false, true] {
                let host_scales = if per_token { sx.clone() } else { vec![0.0123] };
                let want = ref_gemm_f32(&x, m, host_scales, &w, with_bias.then_some(&bias[..]));
                let b = with_bias.then_some(&bias_d);
                let mut o16 = s.clone_htod(&vec![f16::NAN; m * n]).unwrap();
                w4a8_gemm(
                    &s,
                    &xd,
                    m,
                    &pw,
                    scales,
                    b,
                    &mut o16,
                    &mut ws,
                    &GemmConfig::default(),
                )
                .unwrap();
                exact_check(
                    &format!("f16 M={m} per_token={per_token} bias={with_bias}"),
                    &s.clone_dtoh(&o16).unwrap(),
                    &want,
                    f16::from_f32,
                );
                let mut ob = s.clone_htod(&vec![bf16::NAN; m * n]).unwrap();
                w4a8_gemm(
                    &s,
                    &xd,
                    m,
                    &pw,
                    scales,
                    b,
                    &mut ob,
                    &mut ws,
                    &GemmConfig::default(),
                )
                .unwrap();
                exact_check(
                    &format!("bf16 M={m} per_token={per_token} bias={with_bias}"),
                    &s.clone_dtoh(&ob).unwrap(),
                    &want,
                    bf16::from_f32,
                );
            }
        }
        if m < 33 {
            continue;
        }
        // The wgmma kernel without split-K writes the epilogue itself, by one of three paths
        // chosen by the output's alignment: TMA stores of whole tiles (16 bytes, offset 0),
        // channel pairs with 4-byte stores (offset 2), one value at a time (offset 1).
        let want = ref_gemm_f32(&x, m, sx.clone(), &w, Some(&bias[..]));
        let one_split = GemmConfig {
            kernel: KernelChoice::Wgmma,
            split_k: Some(1),
            ..GemmConfig::default()
        };
        let per_thread_stores = GemmConfig {
            wgmma_tma_store: false,
            ..one_split
        };
        // Offset 0 once more with the TMA-store epilogue turned off.
        for (offset, cfg) in [
            (0usize, one_split),
            (1, one_split),
            (2, one_split),
            (0, per_thread_stores),
        ] {
            let mut big = s.clone_htod(&vec![f16::NAN; m * n + 2]).unwrap();
            let mut ov = big.slice_mut(offset..offset + m * n);
            w4a8_gemm(
                &s,
                &xd,
                m,
                &pw,
                ActScales::PerToken(&sxd),
                Some(&bias_d),
                &mut ov,
                &mut ws,
                &cfg,
            )
            .unwrap();
            let host = s.clone_dtoh(&big).unwrap();
            exact_check(
                &format!(
                    "f16 M={m} split 1, output offset {offset}, TMA store {}",
                    cfg.wgmma_tma_store
                ),
                &host[offset..offset + m * n],
                &want,
                f16::from_f32,
            );
            assert!(
                host[..offset]
                    .iter()
                    .chain(&host[offset + m * n..])
                    .all(|v| v.is_nan()),
                "f16 M={m} split 1, output offset {offset}: wrote outside its output"
            );
        }
        let mut ob = s.clone_htod(&vec![bf16::NAN; m * n]).unwrap();
        w4a8_gemm(
            &s,
            &xd,
            m,
            &pw,
            ActScales::PerToken(&sxd),
            Some(&bias_d),
            &mut ob,
            &mut ws,
            &one_split,
        )
        .unwrap();
        exact_check(
            &format!("bf16 M={m} split 1"),
            &s.clone_dtoh(&ob).unwrap(),
            &want,
            bf16::from_f32,
        );
    }
}

#[test]
fn activation_quantization_is_bit_exact() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let mut rng = SplitMix64::new(11);
    for &(m, k) in &[(1usize, 8usize), (3, 4096), (5, 11008), (2, 40000), (4, 64)] {
        // Rows of mixed magnitude, one all-zero row, values that land on .5 boundaries.
        let mut x: Vec<f32> = (0..m * k).map(|_| (rng.uniform() - 0.5) * 8.0).collect();
        if m > 1 {
            x[k..2 * k].iter_mut().for_each(|v| *v = 0.0);
        }
        // The zero-row rule (amax < 2^-100 -> codes 0, scale 0): a row just below it and one
        // just above (bf16 keeps both; f16 input turns them into zeros, also a zero row).
        if m > 3 {
            // |x| <= 4 here, so row 2's amax is below 2^-102 and row 3's near 2^-96.
            x[2 * k..3 * k]
                .iter_mut()
                .for_each(|v| *v *= f32::from_bits((127 - 104) << 23));
            x[3 * k..4 * k]
                .iter_mut()
                .for_each(|v| *v *= f32::from_bits((127 - 98) << 23));
        }
        x[0] = 127.0;
        if k > 2 {
            x[1] = 63.5;
            x[2] = -0.5;
        }
        let smooth: Vec<f32> = (0..k).map(|_| 1.0 + 3.0 * rng.uniform()).collect();
        let smooth_d = s.clone_htod(&smooth).unwrap();
        for bf in [false, true] {
            // Quantize what the device sees: the 16-bit values.
            let xr: Vec<f32> = if bf {
                x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
            } else {
                x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
            };
            for use_smooth in [false, true] {
                let sm = use_smooth.then_some(smooth.as_slice());
                let smd = use_smooth.then_some(&smooth_d);
                let (want_q, want_s) = ref_quant_dynamic(&xr, m, k, sm);
                let want_static = ref_quant_static(&xr, m, k, sm, 0.037);
                let mut q = s.alloc_zeros::<i8>(m * k).unwrap();
                let mut sc = s.alloc_zeros::<f32>(m).unwrap();
                let mut qs = s.alloc_zeros::<i8>(m * k).unwrap();
                if bf {
                    let xd = s
                        .clone_htod(&xr.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>())
                        .unwrap();
                    quantize_acts_dynamic(&s, &xd, m, k, smd, &mut q, &mut sc).unwrap();
                    quantize_acts_static(&s, &xd, m, k, smd, 0.037, &mut qs).unwrap();
                } else {
                    let xd = s
                        .clone_htod(&xr.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>())
                        .unwrap();
                    quantize_acts_dynamic(&s, &xd, m, k, smd, &mut q, &mut sc).unwrap();
                    quantize_acts_static(&s, &xd, m, k, smd, 0.037, &mut qs).unwrap();
                }
                let tag = format!("M={m} K={k} bf16={bf} smooth={use_smooth}");
                assert_eq!(s.clone_dtoh(&q).unwrap(), want_q, "dynamic codes {tag}");
                let got_s = s.clone_dtoh(&sc).unwrap();
                assert_eq!(
                    got_s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want_s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "scales {tag}"
                );
                assert_eq!(
                    s.clone_dtoh(&qs).unwrap(),
                    want_static,
                    "static codes {tag}"
                );
            }
        }
    }
}

#[test]
fn fused_quantize_then_gemm_matches_cpu() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let (m, n, k) = (7, 256, 512);
    let w = random_dgq(n, k, 128, 8);
    let pw = PreparedDgqWeight::prepare(&w, &s).unwrap();
    let mut ws = GemmWorkspace::for_shapes(&s, &[(n, k)]).unwrap();
    let mut rng = SplitMix64::new(3);
    let x: Vec<f32> = (0..m * k)
        .map(|_| f16::from_f32(rng.uniform() * 2.0 - 1.0).to_f32())
        .collect();
    let (q, sx) = ref_quant_dynamic(&x, m, k, None);
    let want = ref_gemm_f32(&q, m, sx, &w, None);
    let xd = s
        .clone_htod(&x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>())
        .unwrap();
    let mut qd = s.alloc_zeros::<i8>(m * k).unwrap();
    let mut sd = s.alloc_zeros::<f32>(m).unwrap();
    quantize_acts_dynamic(&s, &xd, m, k, None, &mut qd, &mut sd).unwrap();
    assert_eq!(s.clone_dtoh(&qd).unwrap(), q, "codes");
    let mut out = s.alloc_zeros::<f16>(m * n).unwrap();
    w4a8_gemm(
        &s,
        &qd,
        m,
        &pw,
        ActScales::PerToken(&sd),
        None,
        &mut out,
        &mut ws,
        &GemmConfig::default(),
    )
    .unwrap();
    exact_check(
        "quantize + gemm",
        &s.clone_dtoh(&out).unwrap(),
        &want,
        f16::from_f32,
    );
}

#[test]
fn bad_input_is_a_typed_error_and_launches_nothing() {
    let Some(Gpu { stream: s, .. }) = gpu() else {
        return;
    };
    let (m, n, k) = (4, 128, 256);
    let w = random_dgq(n, k, 128, 9);
    let pw = PreparedDgqWeight::prepare(&w, &s).unwrap();
    let mut ws = GemmWorkspace::for_shapes(&s, &[(n, k)]).unwrap();
    let x = s.clone_htod(&random_acts(m + 1, k, 1)).unwrap();
    let sentinel = vec![12345i32; m * n];
    let mut out = s.clone_htod(&sentinel).unwrap();
    let cfg = GemmConfig::default();
    let untouched = |out: &CudaSlice<i32>| s.clone_dtoh(out).unwrap() == sentinel;

    // Misaligned activations (offset by one byte).
    let xv = x.slice(1..1 + m * k);
    assert!(matches!(
        w4a8_gemm_i32(&s, &xv, m, &pw, &mut out, &mut ws, &cfg),
        Err(Error::Misaligned { what: "x", .. })
    ));
    // Wrong lengths.
    let xv = x.slice(0..m * k);
    assert!(matches!(
        w4a8_gemm_i32(&s, &xv, m + 1, &pw, &mut out, &mut ws, &cfg),
        Err(Error::Shape { .. })
    ));
    let mut short = s.alloc_zeros::<i32>(m * n - 1).unwrap();
    assert!(matches!(
        w4a8_gemm_i32(&s, &xv, m, &pw, &mut short, &mut ws, &cfg),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        w4a8_gemm_i32(&s, &xv, 0, &pw, &mut out, &mut ws, &cfg),
        Err(Error::Shape { .. })
    ));
    // Misaligned output.
    let mut big = s.alloc_zeros::<f16>(m * n + 1).unwrap();
    let mut ov = big.slice_mut(1..1 + m * n);
    let sx = s.clone_htod(&vec![1f32; m]).unwrap();
    let r = w4a8_gemm(
        &s,
        &xv,
        m,
        &pw,
        ActScales::PerToken(&sx),
        None,
        &mut ov,
        &mut ws,
        &cfg,
    );
    assert!(r.is_ok(), "2-byte aligned f16 output is fine: {r:?}");
    // Wrong scale and bias lengths.
    let mut o16 = s.alloc_zeros::<f16>(m * n).unwrap();
    let sx_short = s.clone_htod(&vec![1f32; m - 1]).unwrap();
    assert!(matches!(
        w4a8_gemm(
            &s,
            &xv,
            m,
            &pw,
            ActScales::PerToken(&sx_short),
            None,
            &mut o16,
            &mut ws,
            &cfg
        ),
        Err(Error::Shape { .. })
    ));
    let bias_short = s.clone_htod(&vec![0f32; n - 1]).unwrap();
    assert!(matches!(
        w4a8_gemm(
            &s,
            &xv,
            m,
            &pw,
            ActScales::PerToken(&sx),
            Some(&bias_short),
            &mut o16,
            &mut ws,
            &cfg
        ),
        Err(Error::Shape { .. })
    ));
    // Bad kernel options.
    let big_m = DECODE_MAX_M + 1;
    let xb = s.clone_htod(&random_acts(big_m, k, 2)).unwrap();
    let mut ob = s.alloc_zeros::<i32>(big_m * n).unwrap();
    let dec = GemmConfig {
        kernel: KernelChoice::Decode,
        split_k: None,
        ..GemmConfig::default()
    };
    assert!(matches!(
        w4a8_gemm_i32(&s, &xb, big_m, &pw, &mut ob, &mut ws, &dec),
        Err(Error::Unsupported { .. })
    ));
    let bad_split = GemmConfig {
        kernel: KernelChoice::Decode,
        split_k: Some(0),
        ..GemmConfig::default()
    };
    assert!(matches!(
        w4a8_gemm_i32(&s, &xv, m, &pw, &mut out, &mut ws, &bad_split),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(untouched(&out), "a rejected call wrote the output");

    // Activation quantization.
    let xh = s.clone_htod(&vec![f16::ONE; m * k + 8]).unwrap();
    let mut q = s.alloc_zeros::<i8>(m * k).unwrap();
    let mut sc = s.alloc_zeros::<f32>(m).unwrap();
    let xhv = xh.slice(1..1 + m * k);
    assert!(matches!(
        quantize_acts_dynamic(&s, &xhv, m, k, None, &mut q, &mut sc),
        Err(Error::Misaligned { .. })
    ));
    let xhv = xh.slice(0..m * k);
    assert!(matches!(
        quantize_acts_dynamic(&s, &xhv, m, k - 4, None, &mut q, &mut sc),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        quantize_acts_static(&s, &xhv, m, k, None, 0.0, &mut q),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        quantize_acts_static(&s, &xhv, m, k, None, 1e-34, &mut q),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        quantize_acts_static(&s, &xhv, m, k, None, f32::NAN, &mut q),
        Err(Error::InvalidArgument { .. })
    ));
    let sm_short = s.clone_htod(&vec![1f32; k - 1]).unwrap();
    assert!(matches!(
        quantize_acts_dynamic(&s, &xhv, m, k, Some(&sm_short), &mut q, &mut sc),
        Err(Error::Shape { .. })
    ));
    assert!(
        s.clone_dtoh(&q).unwrap().iter().all(|&v| v == 0),
        "a rejected call wrote the codes"
    );

    // Weights the kernels cannot take.
    let w64 = random_dgq(64, 256, 128, 1);
    assert!(matches!(
        PreparedDgqWeight::prepare(&w64, &s),
        Err(Error::Unsupported { .. })
    ));
    let mut wg = random_dgq(128, 256, 128, 1);
    wg.group_size = 96;
    assert!(matches!(
        PreparedDgqWeight::prepare(&wg, &s),
        Err(Error::Core(_))
    ));
}

/// The INT32 accumulators against a naive i64 loop over `S2·(q − z)`, on every backend: the CPU
/// reference and the GPU kernels (default kernel choice) face the same independent oracle.
fn gemm_i32_matches_a_naive_loop(dev: &Device) {
    for (i, &(m, n, k, g)) in [(1, 128, 128, 64), (7, 256, 512, 128), (33, 128, 768, 192)]
        .iter()
        .enumerate()
    {
        let w = random_dgq(n, k, g, 300 + i as u64);
        let x = random_acts(m, k, 310 + i as u64);
        let got = dev.gemm_i32(&x, m, &w);
        for r in 0..m {
            for c in 0..n {
                let want: i64 = (0..k)
                    .map(|j| {
                        let gi = j / g;
                        let w_s8 =
                            w.s2[[c, gi]] as i64 * (w.q[[c, j]] as i64 - w.zeros[[c, gi]] as i64);
                        x[r * k + j] as i64 * w_s8
                    })
                    .sum();
                assert_eq!(
                    got[r * n + c] as i64,
                    want,
                    "{}: M={m} N={n} K={k} g={g} at ({r}, {c})",
                    dev.name()
                );
            }
        }
    }
}

dgq_testkit::test_device!(
    gemm_i32_matches_a_naive_loop,
    gemm_i32_naive_loop_cpu,
    gemm_i32_naive_loop_gpu
);
