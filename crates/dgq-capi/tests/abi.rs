//! The C ABI called from Rust: every entry point against the dgq-core function it wraps (bit for
//! bit), round trips through files, error statuses and messages, and damaged files.

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use dgq_capi::*;
use dgq_core::act::ActQuant;
use dgq_core::format::{self, LayerWeight, PackedLayer, PackedModel};
use dgq_core::{DgqConfig, DualGrainedWeight};
use ndarray::{Array1, Array2, ArrayD};

use dgq_status::*;
use dgq_testkit::capi::{fails, last_error, ok};

/// Deterministic values in [-scale, scale), with every 11th column 8× larger.
fn data(rows: usize, cols: usize, seed: u64, scale: f32) -> Array2<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    Array2::from_shape_fn((rows, cols), |(_, c)| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
        if c % 11 == 3 {
            v * 8.0
        } else {
            v
        }
    })
}

/// An owned C weight handle, freed on drop.
struct W(*mut dgq_weight);
impl Drop for W {
    fn drop(&mut self) {
        // SAFETY: a handle from this library, freed once.
        unsafe { dgq_weight_free(self.0) }
    }
}

struct Mdl(*mut dgq_model);
impl Drop for Mdl {
    fn drop(&mut self) {
        // SAFETY: a handle from this library, freed once.
        unsafe { dgq_model_free(self.0) }
    }
}

fn quantize(w: &Array2<f32>, x: Option<&Array2<f32>>, cfg: &dgq_quant_config) -> W {
    let (n, k) = w.dim();
    let mut out = null_mut();
    let (xp, m) = x.map_or((null(), 0), |x| (x.as_ptr(), x.nrows()));
    // SAFETY: arrays are standard layout with the sizes passed.
    ok(unsafe { dgq_quantize_weight(w.as_ptr(), n, k, xp, m, cfg, &mut out) });
    W(out)
}

/// The handle's weight, rebuilt from its borrowed parts.
fn parts_of(w: &W) -> DualGrainedWeight {
    let mut p = std::mem::MaybeUninit::<dgq_weight_parts>::uninit();
    // SAFETY: live handle; `p` is written on success.
    ok(unsafe { dgq_weight_get_parts(w.0, p.as_mut_ptr()) });
    let p = unsafe { p.assume_init() };
    let g = p.group_size;
    let ng = p.n * (p.k / g);
    // SAFETY: the parts' documented sizes.
    unsafe {
        DualGrainedWeight {
            group_size: g,
            q: Array2::from_shape_vec(
                (p.n, p.k),
                std::slice::from_raw_parts(p.q, p.n * p.k).to_vec(),
            )
            .unwrap(),
            zeros: Array2::from_shape_vec(
                (p.n, p.k / g),
                std::slice::from_raw_parts(p.zeros, ng).to_vec(),
            )
            .unwrap(),
            s2: Array2::from_shape_vec(
                (p.n, p.k / g),
                std::slice::from_raw_parts(p.s2, ng).to_vec(),
            )
            .unwrap(),
            s1: std::slice::from_raw_parts(p.s1, p.n)
                .iter()
                .map(|&b| half::f16::from_bits(b))
                .collect(),
        }
    }
}

fn cfg(group_size: usize, method: dgq_quant_method) -> dgq_quant_config {
    dgq_quant_config {
        group_size,
        method: method as i32,
        ..dgq_quant_config_default()
    }
}

#[test]
fn defaults_match_core() {
    let c = dgq_quant_config_default();
    let d = DgqConfig::default();
    assert_eq!(c.group_size, d.group_size);
    assert_eq!(c.phase1_grid, d.phase1_grid);
    assert_eq!(c.phase2_grid, d.phase2_grid);
    assert_eq!(c.phase1_min_ratio, d.phase1_min_ratio);
    assert_eq!(c.phase2_min_ratio, d.phase2_min_ratio);
    assert_eq!(c.method, dgq_quant_method::DGQ_QUANT_SEARCH as i32);
}

#[test]
fn rtn_and_search_equal_core_and_parts_round_trip() {
    let w = data(12, 64, 1, 0.1);
    let x = data(40, 64, 2, 1.0);
    let rtn = quantize(&w, None, &cfg(16, dgq_quant_method::DGQ_QUANT_RTN));
    assert_eq!(
        parts_of(&rtn),
        DualGrainedWeight::rtn(w.view(), 16).unwrap()
    );

    let c = dgq_quant_config {
        phase1_grid: 10,
        phase2_grid: 30,
        ..cfg(16, dgq_quant_method::DGQ_QUANT_SEARCH)
    };
    let s = quantize(&w, Some(&x), &c);
    let core_cfg = DgqConfig {
        group_size: 16,
        phase1_grid: 10,
        phase2_grid: 30,
        ..DgqConfig::default()
    };
    let want = dgq_core::quant::search::search(w.view(), x.view(), &core_cfg).unwrap();
    let got = parts_of(&s);
    assert_eq!(got, want);

    // from_parts of the borrowed parts is the same weight; dequantize/to_int8/pack agree with core.
    let mut p = std::mem::MaybeUninit::uninit();
    ok(unsafe { dgq_weight_get_parts(s.0, p.as_mut_ptr()) });
    let mut copy = null_mut();
    ok(unsafe { dgq_weight_from_parts(p.as_ptr(), &mut copy) });
    let copy = W(copy);
    assert_eq!(parts_of(&copy), want);
    let mut deq = vec![0f32; 12 * 64];
    ok(unsafe { dgq_weight_dequantize(copy.0, deq.as_mut_ptr(), deq.len()) });
    assert_eq!(deq, want.dequantize().into_raw_vec_and_offset().0);
    let mut i8s = vec![0i8; 12 * 64];
    ok(unsafe { dgq_weight_to_int8(copy.0, i8s.as_mut_ptr(), i8s.len()) });
    assert_eq!(i8s, want.to_int8().into_raw_vec_and_offset().0);
    let mut packed = vec![0u8; 12 * 32];
    ok(unsafe { dgq_weight_pack_q(copy.0, packed.as_mut_ptr(), packed.len()) });
    assert_eq!(
        packed,
        dgq_core::pack::pack_u4(want.q.view())
            .unwrap()
            .into_raw_vec_and_offset()
            .0
    );
    let (mut n, mut g) = (0usize, 0usize);
    ok(unsafe { dgq_weight_shape(copy.0, &mut n, null_mut(), &mut g) });
    assert_eq!((n, g), (12, 16));
}

#[test]
fn activations_match_core_bit_for_bit() {
    let x = data(5, 48, 3, 4.0);
    let smooth = Array1::from_shape_fn(48, |j| 1.0 + j as f32 / 7.0);
    let mut q = vec![0i8; 5 * 48];
    let mut s = vec![0f32; 5];
    for sm in [None, Some(&smooth)] {
        let (sp, sl) = sm.map_or((null(), 0), |v| (v.as_ptr(), v.len()));
        ok(unsafe {
            dgq_quantize_acts_per_token(
                x.as_ptr(),
                5,
                48,
                sp,
                sl,
                q.as_mut_ptr(),
                q.len(),
                s.as_mut_ptr(),
                s.len(),
            )
        });
        let want = match sm {
            Some(v) => dgq_core::act::quantize_per_token_smoothed(x.view(), v.view()).unwrap(),
            None => dgq_core::act::quantize_per_token(x.view()).unwrap(),
        };
        assert_eq!(q, want.q.iter().copied().collect::<Vec<_>>());
        assert_eq!(s, want.scales.to_vec());

        ok(unsafe {
            dgq_quantize_acts_static(x.as_ptr(), 5, 48, sp, sl, 0.05, q.as_mut_ptr(), q.len())
        });
        let want = match sm {
            Some(v) => dgq_core::act::quantize_static_smoothed(x.view(), v.view(), 0.05).unwrap(),
            None => dgq_core::act::quantize_static(x.view(), 0.05).unwrap(),
        };
        assert_eq!(q, want.q.iter().copied().collect::<Vec<_>>());
    }
}

#[test]
fn gemm_matches_reference_and_is_safe_to_share_across_threads() {
    let w = data(24, 64, 4, 0.1);
    let x = data(7, 64, 5, 2.0);
    let wq = quantize(&w, None, &cfg(32, dgq_quant_method::DGQ_QUANT_RTN));
    let core_w = parts_of(&wq);
    let acts = dgq_core::act::quantize_per_token(x.view()).unwrap();
    let bias = Array1::from_shape_fn(24, |i| i as f32 * 0.01 - 0.1);
    let want = dgq_core::reference::w4a8_gemm(&acts, &core_w, Some(bias.view())).unwrap();
    let want_i32 = dgq_core::reference::w4a8_gemm_i32(acts.q.view(), &core_w).unwrap();
    let xq: Vec<i8> = acts.q.iter().copied().collect();
    let scales = acts.scales.to_vec();

    let handle = wq.0 as usize; // shared read-only across threads (const calls may run concurrently)
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let w = handle as *const dgq_weight;
                let mut y = vec![0f32; 7 * 24];
                ok(unsafe {
                    dgq_w4a8_gemm_cpu(
                        w,
                        xq.as_ptr(),
                        7,
                        64,
                        scales.as_ptr(),
                        7,
                        bias.as_ptr(),
                        24,
                        y.as_mut_ptr(),
                        y.len(),
                    )
                });
                assert_eq!(y, want.iter().copied().collect::<Vec<_>>());
                let mut acc = vec![0i32; 7 * 24];
                ok(unsafe {
                    dgq_w4a8_gemm_i32_cpu(w, xq.as_ptr(), 7, 64, acc.as_mut_ptr(), acc.len())
                });
                assert_eq!(acc, want_i32.iter().copied().collect::<Vec<_>>());
            });
        }
    });

    // Per-tensor scale, no bias.
    let st = dgq_core::act::quantize_static(x.view(), 0.04).unwrap();
    let want = dgq_core::reference::w4a8_gemm(&st, &core_w, None).unwrap();
    let xq: Vec<i8> = st.q.iter().copied().collect();
    let mut y = vec![0f32; 7 * 24];
    ok(unsafe {
        dgq_w4a8_gemm_cpu(
            wq.0,
            xq.as_ptr(),
            7,
            64,
            &0.04,
            1,
            null(),
            0,
            y.as_mut_ptr(),
            y.len(),
        )
    });
    assert_eq!(y, want.iter().copied().collect::<Vec<_>>());
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn models_round_trip_and_list_every_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let path = c(dir.path().join("m.dgq.safetensors").to_str().unwrap());
    let w = data(8, 32, 6, 0.1);
    let wq = quantize(&w, None, &cfg(16, dgq_quant_method::DGQ_QUANT_RTN));
    let bias: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let smooth: Vec<f32> = (0..32).map(|i| 1.0 + i as f32).collect();

    let mut m = null_mut();
    ok(unsafe { dgq_model_create(c("src").as_ptr(), c("rtn").as_ptr(), &mut m) });
    let m = Mdl(m);
    let opts = dgq_layer_options {
        act_mode: dgq_act_mode::DGQ_ACT_STATIC as i32,
        act_scale: 0.25,
        bias: bias.as_ptr(),
        bias_len: 8,
        smooth: smooth.as_ptr(),
        smooth_len: 32,
    };
    ok(unsafe { dgq_model_add_layer(m.0, c("b.proj").as_ptr(), wq.0, &opts) });
    ok(unsafe { dgq_model_add_layer(m.0, c("a.proj").as_ptr(), wq.0, null()) });
    ok(unsafe { dgq_model_save(m.0, path.as_ptr()) });

    // The file is a regular packed file: dgq-core reads what the C API wrote.
    let back = format::read(dir.path().join("m.dgq.safetensors").as_path()).unwrap();
    assert_eq!(back.source_model, "src");
    assert_eq!(
        back.layers["b.proj"].act,
        ActQuant::StaticPerTensor { scale: 0.25 }
    );
    assert_eq!(back.layers["a.proj"].act, ActQuant::DynamicPerToken);

    let mut o = null_mut();
    ok(unsafe { dgq_model_open(path.as_ptr(), &mut o) });
    let o = Mdl(o);
    let mut n = 0;
    ok(unsafe { dgq_model_num_layers(o.0, &mut n) });
    assert_eq!(n, 2);
    let mut idx = 9;
    ok(unsafe { dgq_model_find_layer(o.0, c("b.proj").as_ptr(), &mut idx) });
    assert_eq!(idx, 1);
    let mut info = std::mem::MaybeUninit::<dgq_layer_info>::uninit();
    ok(unsafe { dgq_model_layer_info(o.0, idx, info.as_mut_ptr()) });
    let info = unsafe { info.assume_init() };
    assert_eq!(
        unsafe { CStr::from_ptr(info.name) }.to_str().unwrap(),
        "b.proj"
    );
    assert_eq!(info.scheme, dgq_scheme::DGQ_SCHEME_DGQ_W4 as i32);
    assert_eq!(
        (info.ndim, info.shape[0], info.shape[1], info.shape[2]),
        (2, 8, 32, 0)
    );
    assert_eq!((info.group_size, info.bits), (16, 4));
    assert_eq!(
        (info.act_mode, info.act_scale),
        (dgq_act_mode::DGQ_ACT_STATIC as i32, 0.25)
    );
    assert!(info.has_bias && info.has_smooth);
    let mut got = null_mut();
    ok(unsafe { dgq_model_get_weight(o.0, idx, &mut got) });
    assert_eq!(parts_of(&W(got)), parts_of(&wq));
    let mut v = vec![0f32; 32];
    ok(unsafe { dgq_model_get_bias(o.0, idx, v.as_mut_ptr(), 8) });
    assert_eq!(&v[..8], &bias[..]);
    ok(unsafe { dgq_model_get_smooth(o.0, idx, v.as_mut_ptr(), 32) });
    assert_eq!(v, smooth);
    let mut f = vec![0f32; 8 * 32];
    ok(unsafe { dgq_model_get_f32(o.0, idx, f.as_mut_ptr(), f.len()) });
    assert_eq!(f, parts_of(&wq).dequantize().into_raw_vec_and_offset().0);

    // Float layers (written by dgq-core): listed, readable as f32, not as DGQ weights.
    let mut pm = PackedModel::new("", "");
    let norm = ArrayD::from_shape_vec(vec![2, 3, 4], (0..24).map(|i| i as f32).collect()).unwrap();
    pm.layers.insert(
        "norm".into(),
        PackedLayer::new(LayerWeight::Float(norm.clone())),
    );
    let fpath = dir.path().join("f.dgq.safetensors");
    format::write(&fpath, &pm).unwrap();
    let mut fm = null_mut();
    ok(unsafe { dgq_model_open(c(fpath.to_str().unwrap()).as_ptr(), &mut fm) });
    let fm = Mdl(fm);
    let mut info = std::mem::MaybeUninit::<dgq_layer_info>::uninit();
    ok(unsafe { dgq_model_layer_info(fm.0, 0, info.as_mut_ptr()) });
    let info = unsafe { info.assume_init() };
    assert_eq!(
        (info.scheme, info.ndim, info.group_size),
        (dgq_scheme::DGQ_SCHEME_F32 as i32, 3, 0)
    );
    assert_eq!(&info.shape[..4], &[2, 3, 4, 0]);
    let mut f = vec![0f32; 24];
    ok(unsafe { dgq_model_get_f32(fm.0, 0, f.as_mut_ptr(), 24) });
    assert_eq!(f, norm.iter().copied().collect::<Vec<_>>());
    let mut got = null_mut();
    fails(
        unsafe { dgq_model_get_weight(fm.0, 0, &mut got) },
        DGQ_STATUS_UNSUPPORTED,
        "f32",
    );
    assert!(got.is_null());
}

#[test]
fn damaged_files_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.dgq.safetensors");
    let w = data(4, 16, 7, 0.1);
    let core_w = DualGrainedWeight::rtn(w.view(), 8).unwrap();
    let mut pm = PackedModel::new("x", "y");
    pm.layers.insert(
        "l".into(),
        PackedLayer::new(LayerWeight::Dgq(core_w)).with_bias(Array1::zeros(4)),
    );
    format::write(&good, &pm).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.dgq.safetensors");
    let bad_c = c(bad.to_str().unwrap());
    let open = || {
        let mut h = null_mut();
        let s = unsafe { dgq_model_open(bad_c.as_ptr(), &mut h) };
        let msg = last_error();
        unsafe { dgq_model_free(h) };
        (s, h.is_null(), msg)
    };
    // Every truncation is a format error.
    for len in (0..bytes.len()).step_by(7) {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        let (s, null, msg) = open();
        assert_eq!(s, DGQ_STATUS_FORMAT, "truncated to {len}: {msg}");
        assert!(null && !msg.is_empty());
    }
    // Every byte with one bit flipped: detected (format or version error), never a panic.
    let mut detected = 0;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << (i % 8);
        std::fs::write(&bad, &b).unwrap();
        let (s, null, msg) = open();
        assert_ne!(s, DGQ_STATUS_INTERNAL, "flip at {i}: {msg}");
        if s == DGQ_STATUS_OK {
            // Only a flip that keeps the model identical could pass (e.g. header padding).
            assert_eq!(
                format::from_bytes(&b).unwrap(),
                pm,
                "flip at {i} changed the model"
            );
        } else {
            assert!(
                matches!(s, DGQ_STATUS_FORMAT | DGQ_STATUS_UNSUPPORTED_VERSION),
                "flip at {i}: {s:?} {msg}"
            );
            assert!(null && !msg.is_empty());
            detected += 1;
        }
    }
    assert!(
        detected > bytes.len() * 9 / 10,
        "{detected} of {} flips detected",
        bytes.len()
    );
}

#[test]
fn bad_arguments_have_statuses_and_messages() {
    let w = data(4, 16, 8, 0.1);
    let x = data(3, 16, 9, 1.0);
    let mut out = std::ptr::dangling_mut::<dgq_weight>();
    let c16 = cfg(8, dgq_quant_method::DGQ_QUANT_SEARCH);
    fails(
        unsafe { dgq_quantize_weight(null(), 4, 16, x.as_ptr(), 3, &c16, &mut out) },
        DGQ_STATUS_INVALID_ARGUMENT,
        "w is NULL",
    );
    assert!(out.is_null(), "out is reset on failure");
    fails(
        unsafe { dgq_quantize_weight(w.as_ptr(), usize::MAX, 3, x.as_ptr(), 3, &c16, &mut out) },
        DGQ_STATUS_INVALID_ARGUMENT,
        "overflows",
    );
    fails(
        unsafe { dgq_quantize_weight(w.as_ptr(), 4, 16, x.as_ptr(), 3, null(), &mut out) },
        DGQ_STATUS_INVALID_CONFIG,
        "group size 128",
    );
    let wq = quantize(&w, Some(&x), &c16);
    let mut y = vec![0f32; 12];
    let xq = [1i8; 3 * 16];
    fails(
        unsafe {
            dgq_w4a8_gemm_cpu(
                wq.0,
                xq.as_ptr(),
                3,
                16,
                [1.0f32; 3].as_ptr(),
                3,
                null(),
                0,
                y.as_mut_ptr(),
                11,
            )
        },
        DGQ_STATUS_SHAPE_MISMATCH,
        "y holds 11 elements, needs 12",
    );
    // A success clears the message.
    ok(unsafe {
        dgq_w4a8_gemm_cpu(
            wq.0,
            xq.as_ptr(),
            3,
            16,
            [1.0f32; 3].as_ptr(),
            3,
            null(),
            0,
            y.as_mut_ptr(),
            12,
        )
    });
    assert_eq!(last_error(), "");
    // A build without working GPU entry points says so on every call (tests/cuda.rs covers the
    // GPU build).
    #[cfg(feature = "cuda")]
    assert_eq!(dgq_cuda_built(), dgq_cuda::BUILT_WITH_CUDA);
    #[cfg(not(feature = "cuda"))]
    assert!(!dgq_cuda_built());
    if !dgq_cuda_built() {
        let mut cw = std::ptr::dangling_mut::<dgq_cuda_weight>();
        fails(
            unsafe { dgq_cuda_weight_upload(wq.0, 0, null_mut(), &mut cw) },
            DGQ_STATUS_UNSUPPORTED,
            "CUDA",
        );
        assert!(cw.is_null());
    }
}

/// `dgq_quantize_weight` on `w`, expecting a failure; returns the status and the message.
fn quantize_fails(
    w: &Array2<f32>,
    x: Option<&Array2<f32>>,
    cfg: &dgq_quant_config,
) -> (dgq_status, String) {
    let (n, k) = w.dim();
    let mut out = std::ptr::dangling_mut::<dgq_weight>();
    // SAFETY: arrays are standard layout with the sizes passed.
    let (xp, m) = x.map_or((null(), 0), |x| (x.as_ptr(), x.nrows()));
    let s = unsafe { dgq_quantize_weight(w.as_ptr(), n, k, xp, m, cfg, &mut out) };
    assert!(out.is_null(), "out is reset on failure");
    (s, last_error())
}

#[test]
fn weights_outside_the_representable_range_are_typed_errors_naming_the_row() {
    use dgq_core::quant::dual_grained::{ROW_AMAX_MAX, ROW_AMAX_MIN};
    let x = data(6, 32, 2, 1.0);
    for method in [
        dgq_quant_method::DGQ_QUANT_RTN,
        dgq_quant_method::DGQ_QUANT_SEARCH,
    ] {
        let c = cfg(16, method);
        let xo = (method == dgq_quant_method::DGQ_QUANT_SEARCH).then_some(&x);
        // Too large for the f16 s1 (1e10 used to come back as 8.3e6), up to ±3e38; non-zero
        // but too small (used to come back all zero).
        for (row, v) in [
            (2usize, 1e10f32),
            (1, 3e38),
            (3, -3e38),
            (2, 2e-6),
            (0, ROW_AMAX_MIN * 0.99),
        ] {
            let mut w = data(4, 32, 1, 0.1);
            w.row_mut(row)
                .mapv_inplace(|a| a.signum() * v * (0.5 + a.abs() * 5.0).min(1.0));
            w[[row, 5]] = v;
            let (s, msg) = quantize_fails(&w, xo, &c);
            assert_eq!(s, DGQ_STATUS_OUT_OF_RANGE, "{method:?} {v:e}: {msg}");
            assert!(msg.contains(&format!("row {row} ")), "{msg}");
            assert!(msg.contains("9.68") && msg.contains("8.319008e6"), "{msg}");
        }
        // The ends of the range and an all-zero row are fine: the zero row stays exactly zero,
        // the extreme rows come back with the error of any other row.
        let amax = |r: ndarray::ArrayView1<f32>| r.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let w0 = data(4, 32, 1, 0.1);
        let mut w = w0.clone();
        w.row_mut(0).fill(0.0);
        for (r, to) in [(1, ROW_AMAX_MAX), (2, ROW_AMAX_MIN)] {
            let a = amax(w.row(r));
            w.row_mut(r).mapv_inplace(|v| v / a * to);
            assert_eq!(amax(w.row(r)), to);
        }
        let rel = |w: &Array2<f32>, r: usize| {
            let d = parts_of(&quantize(w, xo, &c)).dequantize();
            let e: f64 = d
                .row(r)
                .iter()
                .zip(w.row(r))
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let n: f64 = w.row(r).iter().map(|&b| (b as f64).powi(2)).sum();
            (d, (e / n).sqrt())
        };
        let (d, _) = rel(&w, 0);
        assert!(d.row(0).iter().all(|&v| v == 0.0));
        for r in 1..3 {
            let (got, base) = (rel(&w, r).1, rel(&w0, r).1);
            assert!(
                got <= base * 1.25 + 1e-3,
                "{method:?} row {r}: relative error {got} vs {base} unscaled"
            );
        }
    }
}

#[test]
fn the_cpu_gemm_rejects_a_non_finite_bias() {
    let wq = quantize(
        &data(4, 16, 3, 0.1),
        None,
        &cfg(8, dgq_quant_method::DGQ_QUANT_RTN),
    );
    let xq = [1i8; 2 * 16];
    let mut y = vec![0f32; 8];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let bias = [0.5, bad, 0.0, 1.0];
        fails(
            unsafe {
                dgq_w4a8_gemm_cpu(
                    wq.0,
                    xq.as_ptr(),
                    2,
                    16,
                    [1.0f32; 2].as_ptr(),
                    2,
                    bias.as_ptr(),
                    4,
                    y.as_mut_ptr(),
                    8,
                )
            },
            DGQ_STATUS_NON_FINITE,
            "bias",
        );
    }
    let bias = [0.5, -2.0, 0.0, 1.0];
    ok(unsafe {
        dgq_w4a8_gemm_cpu(
            wq.0,
            xq.as_ptr(),
            2,
            16,
            [1.0f32; 2].as_ptr(),
            2,
            bias.as_ptr(),
            4,
            y.as_mut_ptr(),
            8,
        )
    });
}

#[cfg(unix)]
#[test]
fn saved_files_get_the_umask_default_and_replaced_files_keep_their_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let file = dir.path().join("m.dgq.safetensors");
    let path = c(file.to_str().unwrap());
    let wq = quantize(
        &data(8, 32, 6, 0.1),
        None,
        &cfg(16, dgq_quant_method::DGQ_QUANT_RTN),
    );
    let mut m = null_mut();
    ok(unsafe { dgq_model_create(c("src").as_ptr(), c("rtn").as_ptr(), &mut m) });
    let m = Mdl(m);
    ok(unsafe { dgq_model_add_layer(m.0, c("a.proj").as_ptr(), wq.0, null()) });
    ok(unsafe { dgq_model_save(m.0, path.as_ptr()) });
    assert_eq!(mode(&file), mode(&plain));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    ok(unsafe { dgq_model_save(m.0, path.as_ptr()) });
    assert_eq!(mode(&file), 0o444);
}
