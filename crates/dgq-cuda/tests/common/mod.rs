//! The CPU references of the GPU tests (random weights and activations come from dgq-testkit).
#![allow(dead_code)]

use dgq_core::DualGrainedWeight;

/// Exact INT32 reference `X · W_s8ᵀ`: the CPU reference kernel of `dgq_core`.
pub fn ref_gemm_i32(x: &[i8], m: usize, w: &DualGrainedWeight) -> Vec<i32> {
    let xv = ndarray::ArrayView2::from_shape((m, w.k()), x).expect("x is [M, K]");
    dgq_core::reference::w4a8_gemm_i32(xv, w)
        .expect("reference GEMM")
        .iter()
        .copied()
        .collect()
}

/// CPU dynamic per-token quantization (`dgq_core::act`), optionally after smoothing:
/// `(codes [M·K], scales [M])`.
pub fn ref_quant_dynamic(
    x: &[f32],
    m: usize,
    k: usize,
    smooth: Option<&[f32]>,
) -> (Vec<i8>, Vec<f32>) {
    let xv = ndarray::ArrayView2::from_shape((m, k), x).expect("x is [M, K]");
    let qa = match smooth {
        Some(sm) => dgq_core::act::quantize_per_token_smoothed(xv, ndarray::ArrayView1::from(sm)),
        None => dgq_core::act::quantize_per_token(xv),
    }
    .expect("reference quantization");
    (qa.q.iter().copied().collect(), qa.scales.to_vec())
}

/// CPU static per-tensor quantization (`dgq_core::act`), optionally after smoothing.
pub fn ref_quant_static(
    x: &[f32],
    m: usize,
    k: usize,
    smooth: Option<&[f32]>,
    scale: f32,
) -> Vec<i8> {
    let xv = ndarray::ArrayView2::from_shape((m, k), x).expect("x is [M, K]");
    let qa = match smooth {
        Some(sm) => {
            dgq_core::act::quantize_static_smoothed(xv, ndarray::ArrayView1::from(sm), scale)
        }
        None => dgq_core::act::quantize_static(xv, scale),
    }
    .expect("reference quantization");
    qa.q.iter().copied().collect()
}
