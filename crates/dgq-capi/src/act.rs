//! INT8 activation quantization on the CPU (the normative recipe of `dgq_core::act`, which the
//! GPU quantizers reproduce bit for bit).

use ndarray::{ArrayView1, ArrayView2};

use dgq_core::act::QuantizedActs;

use crate::args::{self, mul, nonzero};
use crate::status::{dgq_status, guard, CResult, Failure};

/// How a layer's input activations are quantized (values of `dgq_layer_info.act_mode` and
/// `dgq_layer_options.act_mode`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_act_mode {
    /// Activations stay floating point (weight-only layers).
    DGQ_ACT_NONE = 0,
    /// Dynamic per-token INT8: one scale per row, `max|x_m| / 127`, computed at run time.
    DGQ_ACT_PER_TOKEN = 1,
    /// Static per-tensor INT8 with a scale fixed at calibration time.
    DGQ_ACT_STATIC = 2,
}

/// `x [m, k]` (and the optional smoothing divisor `[k]`) as array views, all checked.
///
/// # Safety
/// `x` must hold `m·k` floats, `smooth` (if non-NULL) `smooth_len` floats.
pub(crate) unsafe fn input<'a>(
    x: *const f32,
    m: usize,
    k: usize,
    smooth: *const f32,
    smooth_len: usize,
) -> CResult<(ArrayView2<'a, f32>, Option<ArrayView1<'a, f32>>)> {
    let mk = mul("m·k", nonzero("m", m)?, nonzero("k", k)?)?;
    // SAFETY: caller's contract.
    let xs = unsafe { args::slice("x", x, mk)? };
    let xv = ArrayView2::from_shape((m, k), xs).map_err(|e| Failure::invalid(format!("x: {e}")))?;
    // SAFETY: caller's contract.
    let sm = unsafe { args::opt_slice("smooth", smooth, smooth_len)? };
    if let Some(s) = sm {
        if s.len() != k {
            return Err(Failure::shape(format!(
                "smooth has {} elements, needs k = {k}",
                s.len()
            )));
        }
    }
    Ok((xv, sm.map(ArrayView1::from)))
}

fn copy_out(src: &QuantizedActs, q: &mut [i8]) {
    for (o, v) in q.iter_mut().zip(src.q.iter()) {
        *o = *v;
    }
}

/// Dynamic per-token INT8 quantization of `x` `[m, k]`: `scales[i] = max|x_i| / 127` (0 for an
/// all-zero row) and `q = clamp(round_half_even(x · (127 / max|x_i|)), −127, 127)`.
///
/// `smooth` (`[k]`, finite, > 0; or NULL with `smooth_len = 0`) divides each column first
/// (SmoothQuant / DGQ smoothing that could not be folded into a previous op). `q_len` and
/// `scales_len` are the capacities of `q` (at least m·k) and `scales` (at least m).
///
/// # Safety
/// Pointers must hold the sizes stated; outputs writable and not overlapping the inputs.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dgq_quantize_acts_per_token(
    x: *const f32,
    m: usize,
    k: usize,
    smooth: *const f32,
    smooth_len: usize,
    q: *mut i8,
    q_len: usize,
    scales: *mut f32,
    scales_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let (xv, sm) = unsafe { input(x, m, k, smooth, smooth_len)? };
        let qo = unsafe { args::out_slice("q", q, q_len, m * k)? };
        let so = unsafe { args::out_slice("scales", scales, scales_len, m)? };
        let r = match sm {
            Some(s) => dgq_core::act::quantize_per_token_smoothed(xv, s)?,
            None => dgq_core::act::quantize_per_token(xv)?,
        };
        copy_out(&r, qo);
        for (o, v) in so.iter_mut().zip(r.scales.iter()) {
            *o = *v;
        }
        Ok(())
    })
}

/// Static per-tensor INT8 quantization with a calibrated `scale` (finite, ≥ 2⁻¹¹⁰):
/// `q = clamp(round_half_even(x · (1 / scale)), −127, 127)`. `smooth` as for
/// `dgq_quantize_acts_per_token`; `q_len` is the capacity of `q` (at least m·k).
///
/// # Safety
/// Pointers must hold the sizes stated; `q` writable and not overlapping the inputs.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dgq_quantize_acts_static(
    x: *const f32,
    m: usize,
    k: usize,
    smooth: *const f32,
    smooth_len: usize,
    scale: f32,
    q: *mut i8,
    q_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let (xv, sm) = unsafe { input(x, m, k, smooth, smooth_len)? };
        let qo = unsafe { args::out_slice("q", q, q_len, m * k)? };
        let r = match sm {
            Some(s) => dgq_core::act::quantize_static_smoothed(xv, s, scale)?,
            None => dgq_core::act::quantize_static(xv, scale)?,
        };
        copy_out(&r, qo);
        Ok(())
    })
}

/// Maps a C act mode and scale to dgq-core's.
pub(crate) fn act_from_c(mode: i32, scale: f32) -> CResult<dgq_core::act::ActQuant> {
    use dgq_core::act::ActQuant;
    match mode {
        0 => Ok(ActQuant::None),
        1 => Ok(ActQuant::DynamicPerToken),
        2 => Ok(ActQuant::StaticPerTensor { scale }),
        v => Err(Failure::new(
            dgq_status::DGQ_STATUS_INVALID_ARGUMENT,
            format!("act_mode = {v} is not a dgq_act_mode"),
        )),
    }
}

/// Maps dgq-core's act mode to the C mode and scale (0 unless static).
pub(crate) fn act_to_c(a: &dgq_core::act::ActQuant) -> (i32, f32) {
    use dgq_core::act::ActQuant;
    match *a {
        ActQuant::None => (dgq_act_mode::DGQ_ACT_NONE as i32, 0.0),
        ActQuant::DynamicPerToken => (dgq_act_mode::DGQ_ACT_PER_TOKEN as i32, 0.0),
        ActQuant::StaticPerTensor { scale } => (dgq_act_mode::DGQ_ACT_STATIC as i32, scale),
    }
}
