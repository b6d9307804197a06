//! The W4A8 GEMM on the CPU reference (`dgq_core::reference`): integer-exact accumulation and
//! the normative f32 epilogue that the GPU kernels mirror bit for bit.

use ndarray::{Array1, ArrayView1, ArrayView2};

use dgq_core::act::QuantizedActs;

use crate::args::{self, mul, nonzero};
use crate::status::{dgq_status, guard, CResult, Failure};
use crate::weight::dgq_weight;

/// `xq [m, k]` as a view, with `k` checked against the weight's K.
///
/// # Safety
/// `xq` must hold `m·k` bytes.
unsafe fn int8_input<'a>(
    w: &dgq_weight,
    xq: *const i8,
    m: usize,
    k: usize,
) -> CResult<ArrayView2<'a, i8>> {
    if k != w.w.k() {
        return Err(Failure::shape(format!(
            "activations have k = {k} columns but the weight has K = {}",
            w.w.k()
        )));
    }
    let mk = mul("m·k", nonzero("m", m)?, nonzero("k", k)?)?;
    // SAFETY: caller's contract.
    let xs = unsafe { args::slice("xq", xq, mk)? };
    ArrayView2::from_shape((m, k), xs).map_err(|e| Failure::invalid(format!("xq: {e}")))
}

/// `y = (x_scales ⊗ s1) · (xq · W_s8ᵀ) (+ bias)`: the W4A8 GEMM of INT8 activations `xq`
/// `[m, k]` (from `dgq_quantize_acts_*`) and the DGQ weight `w` `[N, K]`, into f32 `y` `[m, N]`.
///
/// `x_scales` holds `num_scales` activation scales: `m` (per token) or 1 (per tensor).
/// `bias` is `[N]` (`bias_len == N`) or NULL with `bias_len = 0`. `y_len` is the capacity of `y`
/// (at least m·N). Per output: `acc` exact INT32, then `(float)acc * (s_x * s1[n]) (+ bias[n])`
/// with each f32 operation rounded separately. A NaN or infinite bias is
/// `DGQ_STATUS_NON_FINITE`.
///
/// # Safety
/// Pointers must hold the sizes stated; `y` writable and not overlapping the inputs.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dgq_w4a8_gemm_cpu(
    w: *const dgq_weight,
    xq: *const i8,
    m: usize,
    k: usize,
    x_scales: *const f32,
    num_scales: usize,
    bias: *const f32,
    bias_len: usize,
    y: *mut f32,
    y_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = unsafe { args::handle("w", w)? };
        let xv = unsafe { int8_input(w, xq, m, k)? };
        if num_scales != m && num_scales != 1 {
            return Err(Failure::shape(format!(
                "num_scales = {num_scales}: must be m = {m} (per token) or 1 (per tensor)"
            )));
        }
        let sx = unsafe { args::slice("x_scales", x_scales, num_scales)? };
        let b = unsafe { args::opt_slice("bias", bias, bias_len)? };
        let n = w.w.n();
        if let Some(b) = b {
            if b.len() != n {
                return Err(Failure::shape(format!(
                    "bias has {} elements, needs N = {n}",
                    b.len()
                )));
            }
        }
        let need = mul("m·N", m, n)?;
        let yo = unsafe { args::out_slice("y", y, y_len, need)? };
        let acts = QuantizedActs {
            q: xv.to_owned(),
            scales: Array1::from(sx.to_vec()),
        };
        let r = dgq_core::reference::w4a8_gemm(&acts, &w.w, b.map(ArrayView1::from))?;
        for (o, v) in yo.iter_mut().zip(r.iter()) {
            *o = *v;
        }
        Ok(())
    })
}

/// The exact INT32 accumulators `acc [m, N] = xq · W_s8ᵀ` (no scales). `acc_len` is the capacity
/// of `acc` (at least m·N). K is limited to 131071 so that no sum can overflow.
///
/// # Safety
/// Pointers must hold the sizes stated; `acc` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_w4a8_gemm_i32_cpu(
    w: *const dgq_weight,
    xq: *const i8,
    m: usize,
    k: usize,
    acc: *mut i32,
    acc_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = unsafe { args::handle("w", w)? };
        let xv = unsafe { int8_input(w, xq, m, k)? };
        let need = mul("m·N", m, w.w.n())?;
        let ao = unsafe { args::out_slice("acc", acc, acc_len, need)? };
        let r = dgq_core::reference::w4a8_gemm_i32(xv, &w.w)?;
        for (o, v) in ao.iter_mut().zip(r.iter()) {
            *o = *v;
        }
        Ok(())
    })
}
