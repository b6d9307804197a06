//! The GPU entry points (`dgq_cuda_*`) called through the C ABI with caller-owned device memory
//! (allocated with cudarc) and a caller-created stream: INT32 accumulators bit-exact against
//! `dgq_core::reference::w4a8_gemm_i32`, f16/bf16 outputs bit-exact against the f32 reference
//! epilogue rounded the same way, activation codes and scales bit-exact against `dgq_core::act`,
//! and statuses for bad input. GPU tests skip with a printed reason without a usable GPU (fail
//! under `DGQ_REQUIRE_GPU=1`).

#![cfg(feature = "cuda")]

use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::Arc;

use dgq_capi::*;
use dgq_core::act::QuantizedActs;
use dgq_core::DualGrainedWeight;
use dgq_cuda::cudarc::driver::{
    result as cu, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits,
};
use half::{bf16, f16};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use dgq_status::*;
use dgq_testkit::capi::{fails, last_error, ok};
use dgq_testkit::{gpu_own_stream, random_acts, Gpu, SplitMix64};

fn stream_ptr(s: &CudaStream) -> *mut c_void {
    s.cu_stream().cast()
}

fn addr<T>(s: &CudaStream, d: &CudaSlice<T>) -> u64 {
    let (p, _g) = d.device_ptr(s);
    p
}

fn zeros<T: DeviceRepr + ValidAsZeroBits>(s: &Arc<CudaStream>, n: usize) -> CudaSlice<T> {
    s.alloc_zeros::<T>(n).unwrap()
}

/// An owned host weight handle.
struct W(*mut dgq_weight);
impl Drop for W {
    fn drop(&mut self) {
        // SAFETY: a handle from this library, freed once.
        unsafe { dgq_weight_free(self.0) }
    }
}

/// An owned device weight handle.
struct Cw(*mut dgq_cuda_weight);
impl Drop for Cw {
    fn drop(&mut self) {
        // SAFETY: a handle from this library, freed once, after the test synchronised.
        unsafe { dgq_cuda_weight_free(self.0) }
    }
}

/// An RTN-quantized random `[n, k]` weight (through the C API) and its canonical parts.
fn weight(n: usize, k: usize, g: usize, seed: u64) -> (W, DualGrainedWeight) {
    let mut rng = SplitMix64::new(seed);
    let w: Vec<f32> = (0..n * k).map(|_| rng.sym()).collect();
    let cfg = dgq_quant_config {
        method: dgq_quant_method::DGQ_QUANT_RTN as i32,
        group_size: g,
        ..dgq_quant_config_default()
    };
    let mut out = null_mut();
    // SAFETY: `w` holds n·k floats.
    ok(unsafe { dgq_quantize_weight(w.as_ptr(), n, k, null(), 0, &cfg, &mut out) });
    let h = W(out);
    let mut p = std::mem::MaybeUninit::<dgq_weight_parts>::uninit();
    // SAFETY: live handle; `p` is written on success.
    ok(unsafe { dgq_weight_get_parts(h.0, p.as_mut_ptr()) });
    let p = unsafe { p.assume_init() };
    let ng = n * (k / g);
    // SAFETY: the parts' documented sizes, borrowed from the live handle.
    let dw = unsafe {
        DualGrainedWeight::new(
            g,
            Array2::from_shape_vec((n, k), std::slice::from_raw_parts(p.q, n * k).to_vec())
                .unwrap(),
            Array2::from_shape_vec((n, k / g), std::slice::from_raw_parts(p.zeros, ng).to_vec())
                .unwrap(),
            Array2::from_shape_vec((n, k / g), std::slice::from_raw_parts(p.s2, ng).to_vec())
                .unwrap(),
            std::slice::from_raw_parts(p.s1, n)
                .iter()
                .map(|&b| f16::from_bits(b))
                .collect(),
        )
        .unwrap()
    };
    (h, dw)
}

fn upload(w: &W, s: &CudaStream) -> Cw {
    let mut cw = null_mut();
    // SAFETY: live weight; `s` is a live stream of device 0.
    ok(unsafe { dgq_cuda_weight_upload(w.0, 0, stream_ptr(s), &mut cw) });
    assert!(!cw.is_null());
    Cw(cw)
}

fn gcfg(kernel: dgq_cuda_kernel, split_k: u32) -> dgq_cuda_gemm_config {
    dgq_cuda_gemm_config {
        kernel: kernel as i32,
        split_k,
        ..dgq_cuda_gemm_config_default()
    }
}

fn ws_size(cw: &Cw, m: usize, cfg: &dgq_cuda_gemm_config) -> usize {
    let mut bytes = usize::MAX;
    // SAFETY: live handle, readable config, writable size.
    ok(unsafe { dgq_cuda_gemm_workspace_size(cw.0, m, cfg, &mut bytes) });
    bytes
}

#[test]
fn gemm_i32_is_bit_exact_with_caller_memory_and_stream() {
    let Some(Gpu { stream: s, .. }) = gpu_own_stream() else {
        return;
    };
    use dgq_cuda_kernel::*;
    // Two wgmma tilings of N (2 and 3 tiles of 128 channels), group sizes 128 and 64; K spans
    // several groups.
    let shapes = [(256usize, 1024usize, 128usize), (384, 512, 64)];
    let weights: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k, g))| {
            let (h, dw) = weight(n, k, g, 10 + i as u64);
            let cw = upload(&h, &s);
            (dw, cw)
        })
        .collect();
    let ms = [1usize, 7, 33, 64, 100];
    let configs = |m: usize| {
        let mut c = vec![
            dgq_cuda_gemm_config_default(),
            gcfg(DGQ_CUDA_KERNEL_WGMMA, 0),
            gcfg(DGQ_CUDA_KERNEL_MMA, 0),
            gcfg(DGQ_CUDA_KERNEL_AUTO, 2),
        ];
        if m <= 64 {
            c.push(gcfg(DGQ_CUDA_KERNEL_DECODE, 0));
            c.push(gcfg(DGQ_CUDA_KERNEL_DECODE, 3));
        }
        c
    };
    // One workspace, sized for the largest query, serves every weight, M and configuration:
    // the tile counters must come back to zero after each GEMM for later ones to be right.
    let mut max_ws = 0;
    for (_, cw) in &weights {
        for &m in &ms {
            for c in configs(m) {
                max_ws = max_ws.max(ws_size(cw, m, &c));
            }
        }
    }
    assert!(max_ws > 0, "some configuration must want split-K scratch");
    assert_eq!(max_ws % 4, 0);
    let ws = zeros::<u8>(&s, max_ws);
    let mut splits_seen = 0;
    for (dw, cw) in &weights {
        let (n, k) = (dw.n(), dw.k());
        for &m in &ms {
            let x = random_acts(m, k, 1000 + m as u64);
            let xv = ArrayView2::from_shape((m, k), &x[..]).unwrap();
            let want: Vec<i32> = dgq_core::reference::w4a8_gemm_i32(xv, dw)
                .unwrap()
                .iter()
                .copied()
                .collect();
            let xd = s.clone_htod(&x).unwrap();
            for c in configs(m) {
                let need = ws_size(cw, m, &c);
                splits_seen += usize::from(need > 0);
                // With the workspace, and with none (the GEMM then runs without split-K).
                for (wp, wb) in [(addr(&s, &ws) as *mut c_void, max_ws), (null_mut(), 0)] {
                    let out = s.clone_htod(&vec![0x7f7f_7f7fi32; m * n]).unwrap();
                    // SAFETY: device buffers of the documented sizes on device 0; live stream.
                    ok(unsafe {
                        dgq_cuda_w4a8_gemm_i32(
                            cw.0,
                            addr(&s, &xd) as *const i8,
                            m,
                            addr(&s, &out) as *mut i32,
                            &c,
                            wp,
                            wb,
                            stream_ptr(&s),
                        )
                    });
                    s.synchronize().unwrap();
                    let got = s.clone_dtoh(&out).unwrap();
                    let bad = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert!(
                        bad.is_none(),
                        "N={n} K={k} M={m} {c:?} ws={wb}: first mismatch at {bad:?}"
                    );
                }
            }
        }
    }
    assert!(splits_seen > 0);
    // The workspace's counters are zero again after all of it.
    let counters = s.clone_dtoh(&ws.slice(0..dgq_cuda::raw::WORKSPACE_COUNTERS * 4));
    assert!(counters.unwrap().iter().all(|&b| b == 0));
}

/// The f32 reference rounded to the output type must match bit for bit.
fn check_exact<T: Copy + PartialEq + std::fmt::Debug>(
    what: &str,
    got: &[T],
    want: &[f32],
    round: impl Fn(f32) -> T,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    let bad = got.iter().zip(want).position(|(&g, &w)| g != round(w));
    assert!(
        bad.is_none(),
        "{what}: first mismatch at {bad:?}: got {:?}, reference {:?}",
        bad.map(|i| got[i]),
        bad.map(|i| want[i])
    );
}

#[test]
fn quantize_then_gemm_epilogue_is_bit_exact() {
    let Some(Gpu { stream: s, .. }) = gpu_own_stream() else {
        return;
    };
    let (n, k, g) = (256usize, 512usize, 128usize);
    let (h, dw) = weight(n, k, g, 77);
    let cw = upload(&h, &s);
    let mut rng = SplitMix64::new(5);
    let bias: Vec<f32> = (0..n).map(|_| rng.sym()).collect();
    let bias_d = s.clone_htod(&bias).unwrap();
    let smooth: Vec<f32> = (0..k).map(|_| 1.0 + 1.5 * (rng.sym() + 1.0)).collect();
    let smooth_d = s.clone_htod(&smooth).unwrap();
    for &m in &[1usize, 5, 40, 130] {
        let cfg = dgq_cuda_gemm_config_default();
        let wsb = ws_size(&cw, m, &cfg);
        let ws = zeros::<u8>(&s, wsb.max(4));
        let x: Vec<f32> = (0..m * k).map(|_| 4.0 * rng.sym()).collect();
        for bf in [false, true] {
            // What the device sees: the 16-bit values.
            let (xr, xd): (Vec<f32>, CudaSlice<u16>) = if bf {
                let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let bits: Vec<u16> = h.iter().map(|v| v.to_bits()).collect();
                (
                    h.iter().map(|v| v.to_f32()).collect(),
                    s.clone_htod(&bits).unwrap(),
                )
            } else {
                let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let bits: Vec<u16> = h.iter().map(|v| v.to_bits()).collect();
                (
                    h.iter().map(|v| v.to_f32()).collect(),
                    s.clone_htod(&bits).unwrap(),
                )
            };
            let dtype = if bf {
                dgq_dtype::DGQ_DTYPE_BF16
            } else {
                dgq_dtype::DGQ_DTYPE_F16
            } as i32;
            let xv = ArrayView2::from_shape((m, k), &xr[..]).unwrap();
            for use_smooth in [false, true] {
                let tag = format!("M={m} bf16={bf} smooth={use_smooth}");
                let sm_ptr = if use_smooth {
                    addr(&s, &smooth_d) as *const f32
                } else {
                    null()
                };
                let want = if use_smooth {
                    dgq_core::act::quantize_per_token_smoothed(xv, ArrayView1::from(&smooth[..]))
                } else {
                    dgq_core::act::quantize_per_token(xv)
                }
                .unwrap();
                let want_static = if use_smooth {
                    dgq_core::act::quantize_static_smoothed(
                        xv,
                        ArrayView1::from(&smooth[..]),
                        0.021,
                    )
                } else {
                    dgq_core::act::quantize_static(xv, 0.021)
                }
                .unwrap();
                let q = zeros::<i8>(&s, m * k);
                let sc = zeros::<f32>(&s, m);
                let qs = zeros::<i8>(&s, m * k);
                // SAFETY: device buffers of the documented sizes on device 0; live stream.
                unsafe {
                    ok(dgq_cuda_quantize_acts_per_token(
                        0,
                        addr(&s, &xd) as *const c_void,
                        dtype,
                        m,
                        k,
                        sm_ptr,
                        addr(&s, &q) as *mut i8,
                        addr(&s, &sc) as *mut f32,
                        stream_ptr(&s),
                    ));
                    ok(dgq_cuda_quantize_acts_static(
                        0,
                        addr(&s, &xd) as *const c_void,
                        dtype,
                        m,
                        k,
                        sm_ptr,
                        0.021,
                        addr(&s, &qs) as *mut i8,
                        stream_ptr(&s),
                    ));
                }
                s.synchronize().unwrap();
                let got_q = s.clone_dtoh(&q).unwrap();
                assert_eq!(got_q, want.q.iter().copied().collect::<Vec<_>>(), "{tag}");
                let got_s: Vec<u32> = s
                    .clone_dtoh(&sc)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let want_s: Vec<u32> = want.scales.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got_s, want_s, "scales {tag}");
                assert_eq!(
                    s.clone_dtoh(&qs).unwrap(),
                    want_static.q.iter().copied().collect::<Vec<_>>(),
                    "static {tag}"
                );

                // GEMM on the device-quantized activations: per token (its scales) and per
                // tensor, with and without bias, into f16 and bf16.
                let st = s.clone_htod(&[0.021f32]).unwrap();
                for (per_token, scales_d, nscales) in [(true, &sc, m), (false, &st, 1)] {
                    let qa = QuantizedActs {
                        q: want.q.clone(),
                        scales: if per_token {
                            want.scales.clone()
                        } else {
                            Array1::from_elem(m, 0.021f32)
                        },
                    };
                    for with_bias in [false, true] {
                        let ref_y = dgq_core::reference::w4a8_gemm(
                            &qa,
                            &dw,
                            with_bias.then(|| ArrayView1::from(&bias[..])),
                        )
                        .unwrap();
                        let ref_y: Vec<f32> = ref_y.iter().copied().collect();
                        let b_ptr = if with_bias {
                            addr(&s, &bias_d) as *const f32
                        } else {
                            null()
                        };
                        for out_bf in [false, true] {
                            let y = s.clone_htod(&vec![0xffffu16; m * n]).unwrap();
                            let ot = if out_bf {
                                dgq_dtype::DGQ_DTYPE_BF16
                            } else {
                                dgq_dtype::DGQ_DTYPE_F16
                            } as i32;
                            // SAFETY: as above.
                            ok(unsafe {
                                dgq_cuda_w4a8_gemm(
                                    cw.0,
                                    addr(&s, &q) as *const i8,
                                    m,
                                    addr(&s, scales_d) as *const f32,
                                    nscales,
                                    b_ptr,
                                    addr(&s, &y) as *mut c_void,
                                    ot,
                                    &cfg,
                                    addr(&s, &ws) as *mut c_void,
                                    wsb,
                                    stream_ptr(&s),
                                )
                            });
                            s.synchronize().unwrap();
                            let got = s.clone_dtoh(&y).unwrap();
                            let what = format!(
                                "{tag} per_token={per_token} bias={with_bias} out_bf16={out_bf}"
                            );
                            if out_bf {
                                let got: Vec<bf16> =
                                    got.iter().map(|&b| bf16::from_bits(b)).collect();
                                check_exact(&what, &got, &ref_y, bf16::from_f32);
                            } else {
                                let got: Vec<f16> =
                                    got.iter().map(|&b| f16::from_bits(b)).collect();
                                check_exact(&what, &got, &ref_y, f16::from_f32);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_input_gets_the_right_status_and_launches_nothing() {
    let Some(Gpu { stream: s, .. }) = gpu_own_stream() else {
        return;
    };
    use dgq_cuda_kernel::*;
    let (m, n, k) = (4usize, 256usize, 256usize);
    let (h, _) = weight(n, k, 128, 3);
    let cw = upload(&h, &s);
    let x = s.clone_htod(&random_acts(m + 1, k + 16, 1)).unwrap();
    let xp = addr(&s, &x);
    let sentinel = vec![0x1234_5678i32; m * n];
    let out = s.clone_htod(&sentinel).unwrap();
    let op = addr(&s, &out);
    let sx = s.clone_htod(&vec![0.5f32; m + 1]).unwrap();
    let sxp = addr(&s, &sx);
    let ws = zeros::<u8>(&s, 1 << 20);
    let wsp = addr(&s, &ws);
    let def = dgq_cuda_gemm_config_default();
    let st = stream_ptr(&s);
    let gemm = |xq: u64,
                m: usize,
                scales: u64,
                nsc: usize,
                bias: u64,
                y: u64,
                dt: i32,
                cfg: *const dgq_cuda_gemm_config,
                wsp: u64,
                wsb: usize| {
        // SAFETY: every pointer is a live device allocation (possibly offset) or NULL; the
        // library must reject the bad ones before launching.
        unsafe {
            dgq_cuda_w4a8_gemm(
                cw.0,
                xq as *const i8,
                m,
                scales as *const f32,
                nsc,
                bias as *const f32,
                y as *mut c_void,
                dt,
                cfg,
                wsp as *mut c_void,
                wsb,
                st,
            )
        }
    };
    let f16t = dgq_dtype::DGQ_DTYPE_F16 as i32;
    fails(
        gemm(0, m, sxp, m, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "x",
    );
    fails(
        gemm(xp + 1, m, sxp, m, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "aligned",
    );
    fails(
        gemm(xp, m, 0, m, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "scales",
    );
    fails(
        gemm(xp, m, sxp + 2, m, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "scales",
    );
    fails(
        gemm(xp, m, sxp, m, sxp + 1, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "bias",
    );
    fails(
        gemm(xp, m, sxp, m, 0, 0, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "out",
    );
    fails(
        gemm(xp, m, sxp, m, 0, op + 1, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "out",
    );
    fails(
        gemm(xp, 0, sxp, 0, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "m",
    );
    fails(
        gemm(xp, m, sxp, 2, 0, op, f16t, &def, 0, 0),
        DGQ_STATUS_SHAPE_MISMATCH,
        "num_scales",
    );
    fails(
        gemm(xp, m, sxp, m, 0, op, 7, &def, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "y_dtype",
    );
    let bad_kernel = dgq_cuda_gemm_config {
        kernel: 9,
        ..dgq_cuda_gemm_config_default()
    };
    fails(
        gemm(xp, m, sxp, m, 0, op, f16t, &bad_kernel, 0, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "kernel",
    );
    // Launch knobs: flags are 0 or 1, a forced decode plan has both fields, the cap is >= 1.
    for (bad, what) in [
        (dgq_cuda_gemm_config { pdl: 2, ..def }, "pdl"),
        (
            dgq_cuda_gemm_config {
                wgmma_tma_store: -1,
                ..def
            },
            "wgmma_tma_store",
        ),
        (
            dgq_cuda_gemm_config {
                decode_plan_parts: 2,
                ..def
            },
            "decode_plan",
        ),
        (
            dgq_cuda_gemm_config {
                decode_plan_parts: 3,
                decode_plan_split: 1,
                ..def
            },
            "decode_plan",
        ),
        (
            dgq_cuda_gemm_config {
                decode_max_cta_parts: 0,
                ..def
            },
            "decode_max_cta_parts",
        ),
    ] {
        fails(
            gemm(xp, m, sxp, m, 0, op, f16t, &bad, 0, 0),
            DGQ_STATUS_INVALID_CONFIG,
            what,
        );
    }
    let big_split = gcfg(DGQ_CUDA_KERNEL_DECODE, 1000);
    fails(
        gemm(xp, m, sxp, m, 0, op, f16t, &big_split, 0, 0),
        DGQ_STATUS_INVALID_CONFIG,
        "split_k",
    );
    let decode = gcfg(DGQ_CUDA_KERNEL_DECODE, 0);
    fails(
        gemm(xp, 65, sxp, 65, 0, op, f16t, &decode, 0, 0),
        DGQ_STATUS_UNSUPPORTED,
        "decode",
    );
    fails(
        gemm(xp, m, sxp, m, 0, op, f16t, &def, 0, 64),
        DGQ_STATUS_INVALID_ARGUMENT,
        "workspace",
    );
    fails(
        gemm(xp, m, sxp, m, 0, op, f16t, &def, wsp + 2, 1 << 16),
        DGQ_STATUS_INVALID_ARGUMENT,
        "workspace",
    );
    // SAFETY: NULL handle / NULL out-pointer are rejected.
    unsafe {
        fails(
            dgq_cuda_w4a8_gemm_i32(
                null(),
                xp as *const i8,
                m,
                op as *mut i32,
                &def,
                null_mut(),
                0,
                st,
            ),
            DGQ_STATUS_INVALID_ARGUMENT,
            "w",
        );
        let mut bytes = 7usize;
        fails(
            dgq_cuda_gemm_workspace_size(cw.0, 0, &def, &mut bytes),
            DGQ_STATUS_INVALID_ARGUMENT,
            "m",
        );
        fails(
            dgq_cuda_gemm_workspace_size(cw.0, 65, &decode, &mut bytes),
            DGQ_STATUS_UNSUPPORTED,
            "decode",
        );
        fails(
            dgq_cuda_gemm_workspace_size(cw.0, 1, &def, null_mut()),
            DGQ_STATUS_INVALID_ARGUMENT,
            "bytes",
        );
    }
    s.synchronize().unwrap();
    assert_eq!(
        s.clone_dtoh(&out).unwrap(),
        sentinel,
        "a rejected call wrote"
    );

    // Activation quantization.
    let xh = s.clone_htod(&vec![0u16; 2 * m * (k + 16)]).unwrap();
    let xhp = addr(&s, &xh);
    let q = s.clone_htod(&vec![5i8; m * (k + 16)]).unwrap();
    let qp = addr(&s, &q);
    let sm = s.clone_htod(&vec![1f32; k + 8]).unwrap();
    let smp = addr(&s, &sm);
    let quant = |dev: i32, x: u64, dt: i32, m: usize, k: usize, smooth: u64, q: u64, sc: u64| {
        // SAFETY: as for `gemm` above.
        unsafe {
            dgq_cuda_quantize_acts_per_token(
                dev,
                x as *const c_void,
                dt,
                m,
                k,
                smooth as *const f32,
                q as *mut i8,
                sc as *mut f32,
                st,
            )
        }
    };
    fails(
        quant(0, 0, f16t, m, k, 0, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "x",
    );
    fails(
        quant(0, xhp, f16t, m, k, 0, 0, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "q",
    );
    fails(
        quant(0, xhp, f16t, m, k, 0, qp, 0),
        DGQ_STATUS_INVALID_ARGUMENT,
        "scales",
    );
    fails(
        quant(0, xhp + 2, f16t, m, k, 0, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "x",
    );
    fails(
        quant(0, xhp, f16t, m, k, 0, qp + 4, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "q",
    );
    fails(
        quant(0, xhp, f16t, m, k, smp + 4, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "smoothing",
    );
    fails(
        quant(0, xhp, f16t, m, 12, 0, qp, sxp),
        DGQ_STATUS_UNSUPPORTED,
        "K % 8",
    );
    fails(
        quant(0, xhp, f16t, 0, k, 0, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "m",
    );
    fails(
        quant(0, xhp, 2, m, k, 0, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "x_dtype",
    );
    fails(
        quant(-1, xhp, f16t, m, k, 0, qp, sxp),
        DGQ_STATUS_INVALID_ARGUMENT,
        "device",
    );
    fails(
        quant(4096, xhp, f16t, m, k, 0, qp, sxp),
        DGQ_STATUS_CUDA,
        "device",
    );
    for bad_scale in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
        // SAFETY: as above.
        fails(
            unsafe {
                dgq_cuda_quantize_acts_static(
                    0,
                    xhp as *const c_void,
                    f16t,
                    m,
                    k,
                    null(),
                    bad_scale,
                    qp as *mut i8,
                    st,
                )
            },
            DGQ_STATUS_INVALID_ARGUMENT,
            "scale",
        );
    }
    s.synchronize().unwrap();
    assert!(
        s.clone_dtoh(&q).unwrap().iter().all(|&v| v == 5),
        "a rejected quantization wrote"
    );

    // Upload: shapes the kernels do not take, and bad handles.
    let (small, _) = weight(64, 256, 128, 4);
    let mut cw2 = std::ptr::dangling_mut::<dgq_cuda_weight>();
    // SAFETY: live weight and stream; writable out-pointer, or NULLs to be rejected.
    unsafe {
        fails(
            dgq_cuda_weight_upload(small.0, 0, st, &mut cw2),
            DGQ_STATUS_UNSUPPORTED,
            "N",
        );
        assert!(cw2.is_null());
        cw2 = std::ptr::dangling_mut();
        fails(
            dgq_cuda_weight_upload(null(), 0, st, &mut cw2),
            DGQ_STATUS_INVALID_ARGUMENT,
            "w",
        );
        assert!(cw2.is_null());
        fails(
            dgq_cuda_weight_upload(h.0, 0, st, null_mut()),
            DGQ_STATUS_INVALID_ARGUMENT,
            "out",
        );
        fails(
            dgq_cuda_weight_upload(h.0, -3, st, &mut cw2),
            DGQ_STATUS_INVALID_ARGUMENT,
            "device",
        );
    }
}

#[test]
fn calls_leave_the_threads_current_context_alone() {
    let Some(Gpu { stream: s, .. }) = gpu_own_stream() else {
        return;
    };
    let (m, k) = (2usize, 64usize);
    let x = s.clone_htod(&vec![0x3c00u16; m * k]).unwrap();
    let q = zeros::<i8>(&s, m * k);
    let sc = zeros::<f32>(&s, m);
    let (xp, qp, scp) = (addr(&s, &x), addr(&s, &q), addr(&s, &sc));
    s.synchronize().unwrap();
    // A thread with no current context (as a fresh runtime-API thread before its first call):
    // the library binds the device's context for the call and unbinds it again.
    std::thread::scope(|t| {
        t.spawn(|| {
            assert_eq!(cu::ctx::get_current().unwrap(), None);
            // SAFETY: device buffers of the documented sizes on device 0; live stream.
            ok(unsafe {
                dgq_cuda_quantize_acts_per_token(
                    0,
                    xp as *const c_void,
                    dgq_dtype::DGQ_DTYPE_F16 as i32,
                    m,
                    k,
                    null(),
                    qp as *mut i8,
                    scp as *mut f32,
                    stream_ptr(&s),
                )
            });
            assert_eq!(cu::ctx::get_current().unwrap(), None);
        });
    });
    s.synchronize().unwrap();
    // x = 1.0 everywhere: scale 1/127 and codes 127.
    assert!(s.clone_dtoh(&q).unwrap().iter().all(|&v| v == 127));
    assert_eq!(s.clone_dtoh(&sc).unwrap(), vec![1.0f32 / 127.0; m]);
}

/// Host-side checks that need no GPU (these run everywhere).
#[test]
fn statuses_without_a_device() {
    assert_eq!(dgq_cuda_built(), dgq_cuda::BUILT_WITH_CUDA);
    let want_null = if dgq_cuda_built() {
        DGQ_STATUS_INVALID_ARGUMENT
    } else {
        DGQ_STATUS_UNSUPPORTED
    };
    let mut bytes = 0usize;
    // SAFETY: NULL handles must be rejected (or the build says it has no CUDA).
    unsafe {
        assert_eq!(
            dgq_cuda_gemm_workspace_size(null(), 1, null(), &mut bytes),
            want_null
        );
        assert_eq!(
            dgq_cuda_w4a8_gemm_i32(
                null(),
                null(),
                1,
                null_mut(),
                null(),
                null_mut(),
                0,
                null_mut()
            ),
            want_null
        );
        assert_eq!(
            dgq_cuda_quantize_acts_per_token(
                0,
                null(),
                0,
                1,
                8,
                null(),
                null_mut(),
                null_mut(),
                null_mut()
            ),
            want_null
        );
        assert_eq!(
            dgq_cuda_quantize_acts_static(0, null(), 5, 1, 8, null(), 1.0, null_mut(), null_mut()),
            want_null
        );
    }
    assert!(!last_error().is_empty());
}
