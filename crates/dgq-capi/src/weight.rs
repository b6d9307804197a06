//! DGQ weights: quantization of a float matrix, canonical parts in and out, dequantization.

use half::f16;
use ndarray::{Array1, Array2, ArrayView2};

use dgq_core::quant::dual_grained::DualGrainedWeight;
use dgq_core::DgqConfig;

use crate::args::{self, mul, nonzero};
use crate::status::{dgq_status, guard, CResult, Failure};

/// A DGQ-quantized `[N, K]` weight matrix held by the library (opaque).
///
/// Created by `dgq_quantize_weight`, `dgq_weight_from_parts` or `dgq_model_get_weight`; freed
/// by `dgq_weight_free`. Independent of any model it came from. Functions taking a
/// `const dgq_weight*` may be called on the same weight from several threads at once.
pub struct dgq_weight {
    pub(crate) w: DualGrainedWeight,
}

impl dgq_weight {
    /// Wraps a weight, making every array contiguous row-major so that borrowed pointers
    /// (`dgq_weight_get_parts`) describe it directly.
    pub(crate) fn new(w: DualGrainedWeight) -> Self {
        let std = |a: Array2<u8>| a.as_standard_layout().into_owned();
        let std8 = |a: Array2<i8>| a.as_standard_layout().into_owned();
        let std1 = |a: Array1<f16>| a.as_standard_layout().into_owned();
        dgq_weight {
            w: DualGrainedWeight {
                group_size: w.group_size,
                q: std(w.q),
                zeros: std8(w.zeros),
                s2: std8(w.s2),
                s1: std1(w.s1),
            },
        }
    }
}

/// How `dgq_quantize_weight` chooses the DGQ parameters (values of `dgq_quant_config.method`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_quant_method {
    /// The DGQ two-phase grid search on calibration activations (paper eq. 3 and 6).
    DGQ_QUANT_SEARCH = 0,
    /// Direct RTN decomposition (paper Table 1, "RTN"); no calibration data needed.
    DGQ_QUANT_RTN = 1,
}

/// How the search evaluates its output-MSE loss (values of `dgq_quant_config.loss`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dgq_loss_mode {
    /// Pick the cheaper of the two from the shapes.
    DGQ_LOSS_AUTO = 0,
    /// `eᵀ H e` with `H = XᵀX`.
    DGQ_LOSS_HESSIAN = 1,
    /// `‖X e‖²` on the calibration activations.
    DGQ_LOSS_DIRECT = 2,
}

/// Parameters of `dgq_quantize_weight`. Start from `dgq_quant_config_default()` and change
/// what you need. Enum-valued fields are plain integers so that any value is safe to pass;
/// unknown values are rejected with `DGQ_STATUS_INVALID_ARGUMENT`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dgq_quant_config {
    /// A `dgq_quant_method` value. Default: `DGQ_QUANT_SEARCH`.
    pub method: i32,
    /// Group size along K: even, dividing K. Default: 128.
    pub group_size: usize,
    /// Phase 1 grid points (per-group scale and zero). Default: 20.
    pub phase1_grid: usize,
    /// Smallest clipping ratio of a group's min/max tried in phase 1, in (0, 1]. Default: 0.8.
    pub phase1_min_ratio: f32,
    /// Phase 2 grid points (per-channel scale s1). Default: 80.
    pub phase2_grid: usize,
    /// Smallest ratio of `max|W_row|/127` tried for s1 in phase 2, in (0, 1]. Default: 0.2.
    pub phase2_min_ratio: f32,
    /// A `dgq_loss_mode` value. Default: `DGQ_LOSS_AUTO`.
    pub loss: i32,
}

/// The default quantization parameters (the DGQ authors' search settings, group size 128).
#[no_mangle]
pub extern "C" fn dgq_quant_config_default() -> dgq_quant_config {
    let d = DgqConfig::default();
    dgq_quant_config {
        method: dgq_quant_method::DGQ_QUANT_SEARCH as i32,
        group_size: d.group_size,
        phase1_grid: d.phase1_grid,
        phase1_min_ratio: d.phase1_min_ratio,
        phase2_grid: d.phase2_grid,
        phase2_min_ratio: d.phase2_min_ratio,
        loss: dgq_loss_mode::DGQ_LOSS_AUTO as i32,
    }
}

impl dgq_quant_config {
    fn method(&self) -> CResult<dgq_quant_method> {
        match self.method {
            0 => Ok(dgq_quant_method::DGQ_QUANT_SEARCH),
            1 => Ok(dgq_quant_method::DGQ_QUANT_RTN),
            v => Err(Failure::invalid(format!(
                "config.method = {v} is not a dgq_quant_method"
            ))),
        }
    }

    fn to_core(self) -> CResult<DgqConfig> {
        use dgq_core::LossMode;
        let loss = match self.loss {
            0 => LossMode::Auto,
            1 => LossMode::Hessian,
            2 => LossMode::Direct,
            v => {
                return Err(Failure::invalid(format!(
                    "config.loss = {v} is not a dgq_loss_mode"
                )))
            }
        };
        // Fields dgq-core adds later keep their defaults.
        #[allow(clippy::needless_update)]
        Ok(DgqConfig {
            group_size: self.group_size,
            phase1_grid: self.phase1_grid,
            phase1_min_ratio: self.phase1_min_ratio,
            phase2_grid: self.phase2_grid,
            phase2_min_ratio: self.phase2_min_ratio,
            loss,
            ..DgqConfig::default()
        })
    }
}

/// Quantizes a float weight `w` `[n, k]` (row-major, output × input channels) to DGQ W4.
///
/// With `DGQ_QUANT_SEARCH`, `x` holds `m` calibration activations `[m, k]` (row-major, the
/// layer's inputs); with `DGQ_QUANT_RTN` pass `x = NULL, m = 0` (calibration is ignored).
/// `config = NULL` means `dgq_quant_config_default()`. On success `*out` receives a new weight
/// (free with `dgq_weight_free`); on failure it is set to NULL.
///
/// Every row of `w` must be all zero or have its max |w| in [127·2⁻¹⁷, 127·65504] ≈
/// [9.69e-4, 8.32e6], the range the f16 channel scale `s1` covers at full precision (see
/// docs/FORMAT.md); otherwise `DGQ_STATUS_OUT_OF_RANGE` and the message names the row.
///
/// # Safety
/// `w` must hold `n·k` floats, `x` (if non-NULL) `m·k` floats, `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_quantize_weight(
    w: *const f32,
    n: usize,
    k: usize,
    x: *const f32,
    m: usize,
    config: *const dgq_quant_config,
    out: *mut *mut dgq_weight,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let mut out = unsafe { args::out_ptr("out", out)? };
        out.set(std::ptr::null_mut());
        let cfg = if config.is_null() {
            dgq_quant_config_default()
        } else {
            // SAFETY: non-null; caller's contract.
            unsafe { *config }
        };
        let method = cfg.method()?;
        let core_cfg = cfg.to_core()?;
        nonzero("n", n)?;
        nonzero("k", k)?;
        let nk = mul("n·k", n, k)?;
        // SAFETY: caller's contract.
        let wv = ArrayView2::from_shape((n, k), unsafe { args::slice("w", w, nk)? })
            .map_err(|e| Failure::invalid(format!("w: {e}")))?;
        let q = match method {
            dgq_quant_method::DGQ_QUANT_RTN => {
                if !x.is_null() || m != 0 {
                    return Err(Failure::invalid(
                        "DGQ_QUANT_RTN takes no calibration data: pass x = NULL and m = 0",
                    ));
                }
                DualGrainedWeight::rtn(wv, core_cfg.group_size)?
            }
            dgq_quant_method::DGQ_QUANT_SEARCH => {
                nonzero("m (calibration tokens)", m)?;
                let mk = mul("m·k", m, k)?;
                // SAFETY: caller's contract.
                let xs = unsafe { args::slice("x", x, mk)? };
                let xv = ArrayView2::from_shape((m, k), xs)
                    .map_err(|e| Failure::invalid(format!("x: {e}")))?;
                dgq_core::quant::search::search(wv, xv, &core_cfg)?
            }
        };
        out.set(args::into_handle(dgq_weight::new(q)));
        Ok(())
    })
}

/// The canonical, unpacked parts of a DGQ weight (all arrays row-major):
/// `W[n, j] ≈ s1[n] · s2[n, j/g] · (q[n, j] − zeros[n, j/g])`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dgq_weight_parts {
    /// Output channels N.
    pub n: usize,
    /// Input channels K.
    pub k: usize,
    /// Group size g along K (even, divides K).
    pub group_size: usize,
    /// u4 codes `[N, K]`, one per byte, values 0..=15.
    pub q: *const u8,
    /// Zero points `[N, K/g]`, values 0..=15.
    pub zeros: *const i8,
    /// INT8 group scales S2 `[N, K/g]`, values 1..=127.
    pub s2: *const i8,
    /// Per-channel scales s1 `[N]` as IEEE binary16 bit patterns, finite and > 0.
    pub s1: *const u16,
}

/// Fills `*out` with the weight's shape and pointers to its arrays. The pointers borrow from
/// `w`: they stay valid until `w` is freed, and must not be written through.
///
/// # Safety
/// `w` must be a live weight, `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_get_parts(
    w: *const dgq_weight,
    out: *mut dgq_weight_parts,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = &unsafe { args::handle("w", w)? }.w;
        let mut out = unsafe { args::out_ptr("out", out)? };
        // dgq_weight::new makes every array standard-layout, so `as_slice` cannot fail.
        let internal = || {
            Failure::new(
                dgq_status::DGQ_STATUS_INTERNAL,
                "weight arrays are not contiguous",
            )
        };
        out.set(dgq_weight_parts {
            n: w.n(),
            k: w.k(),
            group_size: w.group_size,
            q: w.q.as_slice().ok_or_else(internal)?.as_ptr(),
            zeros: w.zeros.as_slice().ok_or_else(internal)?.as_ptr(),
            s2: w.s2.as_slice().ok_or_else(internal)?.as_ptr(),
            s1: w.s1.as_slice().ok_or_else(internal)?.as_ptr().cast::<u16>(),
        });
        Ok(())
    })
}

/// Builds a weight from canonical parts (copied; `parts`' arrays are only read during the call),
/// checking every invariant: `DGQ_STATUS_INVALID_DATA` names the first offending element.
///
/// # Safety
/// `parts` must be readable and its arrays hold the sizes documented on `dgq_weight_parts`;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_from_parts(
    parts: *const dgq_weight_parts,
    out: *mut *mut dgq_weight,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let mut out = unsafe { args::out_ptr("out", out)? };
        out.set(std::ptr::null_mut());
        let p = unsafe { args::handle("parts", parts)? };
        let (n, k, g) = (nonzero("n", p.n)?, nonzero("k", p.k)?, p.group_size);
        dgq_core::error::check_group_size(k, g)?;
        let nk = mul("n·k", n, k)?;
        let ng = n * (k / g);
        // SAFETY: caller's contract on the parts' arrays.
        let (q, z, s2, s1) = unsafe {
            (
                args::slice("parts.q", p.q, nk)?,
                args::slice("parts.zeros", p.zeros, ng)?,
                args::slice("parts.s2", p.s2, ng)?,
                args::slice("parts.s1", p.s1, n)?,
            )
        };
        let shape_err = |e: ndarray::ShapeError| Failure::invalid(e.to_string());
        let w = DualGrainedWeight::new(
            g,
            Array2::from_shape_vec((n, k), q.to_vec()).map_err(shape_err)?,
            Array2::from_shape_vec((n, k / g), z.to_vec()).map_err(shape_err)?,
            Array2::from_shape_vec((n, k / g), s2.to_vec()).map_err(shape_err)?,
            Array1::from_iter(s1.iter().map(|&b| f16::from_bits(b))),
        )?;
        out.set(args::into_handle(dgq_weight::new(w)));
        Ok(())
    })
}

/// Writes the shape of `w`; any of `n`, `k`, `group_size` may be NULL when not wanted.
///
/// # Safety
/// `w` must be a live weight; non-NULL out-pointers writable.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_shape(
    w: *const dgq_weight,
    n: *mut usize,
    k: *mut usize,
    group_size: *mut usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = &unsafe { args::handle("w", w)? }.w;
        for (p, v) in [(n, w.n()), (k, w.k()), (group_size, w.group_size)] {
            if !p.is_null() {
                // SAFETY: non-null; caller's contract.
                unsafe { args::out_ptr("shape out-pointer", p)? }.set(v);
            }
        }
        Ok(())
    })
}

/// Dequantizes `w` to f32 `[N, K]` row-major: `s1 · S2 · (q − z)`. `out_len` is the capacity
/// of `out` in floats (at least N·K).
///
/// # Safety
/// `w` must be a live weight, `out` hold `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_dequantize(
    w: *const dgq_weight,
    out: *mut f32,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = &unsafe { args::handle("w", w)? }.w;
        let need = mul("N·K", w.n(), w.k())?;
        let out = unsafe { args::out_slice("out", out, out_len, need)? };
        for (o, v) in out.iter_mut().zip(w.dequantize().iter()) {
            *o = *v;
        }
        Ok(())
    })
}

/// Writes the INT8 weight the GEMM multiplies, `W_s8 = S2 · (q − z)` `[N, K]` row-major
/// (values in [−127, 127]). `out_len` is the capacity of `out` (at least N·K).
///
/// # Safety
/// `w` must be a live weight, `out` hold `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_to_int8(
    w: *const dgq_weight,
    out: *mut i8,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = &unsafe { args::handle("w", w)? }.w;
        let need = mul("N·K", w.n(), w.k())?;
        let out = unsafe { args::out_slice("out", out, out_len, need)? };
        for (o, v) in out.iter_mut().zip(w.to_int8().iter()) {
            *o = *v;
        }
        Ok(())
    })
}

/// Writes the u4 codes packed two per byte, `[N, K/2]` row-major: byte `i` of a row holds
/// element `2i` in its low nibble and `2i + 1` in its high nibble (the file format's order).
/// `out_len` is the capacity of `out` (at least N·K/2).
///
/// # Safety
/// `w` must be a live weight, `out` hold `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_pack_q(
    w: *const dgq_weight,
    out: *mut u8,
    out_len: usize,
) -> dgq_status {
    guard(|| {
        // SAFETY: caller's contract.
        let w = &unsafe { args::handle("w", w)? }.w;
        let need = mul("N·K/2", w.n(), w.k() / 2)?;
        let out = unsafe { args::out_slice("out", out, out_len, need)? };
        let packed = dgq_core::pack::pack_u4(w.q.view())?;
        for (o, v) in out.iter_mut().zip(packed.iter()) {
            *o = *v;
        }
        Ok(())
    })
}

/// Frees a weight; NULL is a no-op.
///
/// # Safety
/// `w` must be NULL or a weight not freed before.
#[no_mangle]
pub unsafe extern "C" fn dgq_weight_free(w: *mut dgq_weight) {
    // SAFETY: caller's contract.
    crate::status::guard_value((), || unsafe { args::free_handle(w) })
}
