//! CPU reference kernels: the truth every other kernel is tested against.
//!
//! Shapes follow the crate convention: activations `[M, K]`, weights `[N, K]`, outputs
//! `[M, N] = X · Wᵀ`. Every public function validates its shapes (K agreement, activation scales of
//! length M or 1, bias of length N) and returns [`crate::Error::Shape`] otherwise.
//!
//! # Integer paths (bit-exact)
//!
//! [`gemm_i8_i32`], [`w4a8_gemm_i32`] and the INT32 part of [`w4a8_gemm`] / [`w8a8_gemm`] are exact:
//! every product and sum is an integer, and `K ≤ MAX_K_I32` (131071) guarantees no INT32 overflow.
//! Other kernels must match them bit for bit.
//!
//! # The W4A8 epilogue (normative: GPU kernels mirror it bit for bit)
//!
//! For `acc = Σ_k X_s8[m, k] · W_s8[n, k]` (INT32), with IEEE binary32 round-to-nearest-even and
//! every operation rounded separately (no FMA contraction; CUDA: `__int2float_rn`, `__fmul_rn`,
//! `__fadd_rn`):
//!
//! ```text
//! a = (float) acc                  // i32 → f32, round to nearest even
//! t = s_x[m] * s1[n]               // s1 is f16, widened to f32 exactly; s_x[m] (or s_x[0] per tensor)
//! y = a * t
//! y = y + bias[n]                  // only when a bias is given (no `+ 0.0`, so −0 stays −0)
//! ```
//!
//! [`w8a8_gemm`] with per-group scales sums `t_g = (float) acc_g * (s_x[m] * s_w[n, g])` over groups
//! left to right starting from `t_0`, then adds the bias; with one group (per channel) it is the
//! epilogue above.
//!
//! # Float paths
//!
//! [`matmul_f32_nt`] (the `gemm` crate), the weight-only GEMMs [`w4a16_gemm`] / [`w4a16_gemm_dgq`]
//! and the fake-quant paths [`fake_quant_w4a8`] / [`fake_quant_w8a8`] accumulate in f32 in the
//! `gemm` crate's order. They equal the mathematically exact result to within
//! `γ_K · Σ_k |x_k · ŵ_k|` (`γ_K = K·u/(1 − K·u)`, `u = 2⁻²⁴`) per output, which is how the tests
//! compare them.

mod float;
mod int;

pub use float::{fake_quant_w4a8, fake_quant_w8a8, matmul_f32_nt, w4a16_gemm, w4a16_gemm_dgq};
pub use int::{gemm_i8_i32, w4a8_gemm, w4a8_gemm_i32, w8a8_gemm, MAX_K_I32};

use ndarray::{ArrayView1, ArrayView2, CowArray, Ix2};

use crate::error::{Error, Result};

/// Bias, when given, must be `[N]` and finite.
fn check_bias(n: usize, bias: Option<ArrayView1<f32>>) -> Result<()> {
    match bias {
        Some(b) if b.len() != n => Err(Error::shape(
            "bias",
            format!("[{n}] (N)"),
            format!("[{}]", b.len()),
        )),
        // A NaN or infinite bias would poison its output column without any error.
        Some(b) => crate::error::check_finite("bias", b),
        None => Ok(()),
    }
}

/// The contiguous row-major slice of a standard-layout array.
fn contiguous<'a, T>(what: &str, a: &'a CowArray<'_, T, Ix2>) -> Result<&'a [T]> {
    a.as_slice()
        .ok_or_else(|| Error::invariant(what, "expected a standard-layout array"))
}

/// Normalized mean squared error `Σ (actual − reference)² / Σ reference²` in f64, the metric of
/// every float comparison. `0` when both are all-zero, `+∞` when only the reference is.
pub fn nmse(reference: ArrayView2<f32>, actual: ArrayView2<f32>) -> Result<f64> {
    if reference.dim() != actual.dim() {
        return Err(Error::shape(
            "nmse operands",
            format!("{:?}", reference.shape()),
            format!("{:?}", actual.shape()),
        ));
    }
    crate::error::check_finite("nmse reference", reference)?;
    crate::error::check_finite("nmse actual", actual)?;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&r, &a) in reference.iter().zip(actual.iter()) {
        num += (a as f64 - r as f64).powi(2);
        den += (r as f64).powi(2);
    }
    Ok(if den > 0.0 {
        num / den
    } else if num == 0.0 {
        0.0
    } else {
        f64::INFINITY
    })
}
