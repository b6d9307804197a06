//! Activation quantization: symmetric INT8, static per-tensor or dynamic per-token, and FP8-E4M3
//! conversion.
//!
//! INT8 codes are in `[−127, 127]` (−128 unused), `x ≈ scale · q`, with round-half-to-even
//! (`f32::round_ties_even`) so CPU and GPU agree bit for bit.
//!
//! # The INT8 recipe (normative: GPU kernels reproduce it bit for bit)
//!
//! All arithmetic is IEEE-754 binary32 with round-to-nearest-even, each operation rounded on its own
//! (no FMA contraction; on CUDA use `__fdiv_rn` / `__fmul_rn`, never `__fdividef` or fast-math).
//!
//! 1. **Input.** f16 input is first converted to f32 (exact). With a smoothing factor `k [K]`
//!    ([`quantize_per_token_smoothed`], [`quantize_static_smoothed`]) every element becomes
//!    `x'[m, j] = x[m, j] / k[j]` (one IEEE division, *not* a multiplication by `1/k`); everything
//!    below reads `x'`. Non-finite `x` (or `x'`, if the division overflows) is an error.
//! 2. **Scale (dynamic per token).** `amax = max_j |x'[m, j]|` (exact). If `amax < MIN_AMAX`
//!    (2⁻¹⁰⁰; includes `amax == 0`) the row is all zero: `q = 0`, `scale = 0`. Otherwise
//!    `scale = amax / 127` and `inv = 127 / amax`, two separate IEEE divisions.
//!    **(Static per tensor.)** The caller's `scale` must be finite and `≥ MIN_STATIC_SCALE` (2⁻¹¹⁰);
//!    `inv = 1 / scale`.
//! 3. **Codes.** `q = clamp(round_ties_even(x' · inv), −127, 127)` (one IEEE multiplication, then
//!    rounding to the nearest integer with ties to even, then saturation). In the per-token case
//!    `|x' · inv|` can exceed 127 by at most one ulp, so the clamp only matters for static scales.
//! 4. **Dequantization** (fake quant): `x̂ = (q as f32) · scale`.
//!
//! The `MIN_AMAX` / `MIN_STATIC_SCALE` floors keep `inv` finite and make the result independent of
//! whether denormals are flushed to zero: with them, any subnormal input has `|x' · inv| < 2⁻¹⁶` and
//! quantizes to 0 either way.
//!
//! # FP8-E4M3
//!
//! [`f32_to_e4m3`] / [`e4m3_to_f32`] implement the OCP / NVIDIA `e4m3fn` format (bias 7, no
//! infinities, `S.1111.111` is NaN, largest finite 448, smallest subnormal 2⁻⁹), encoding with
//! round-to-nearest-even (subnormals included) and saturation to ±448 (CUDA's `__NV_SATFINITE`).
//! FP8 activations use the same recipe as INT8 with 127 replaced by 448 and step 3 replaced by
//! `code = f32_to_e4m3(x' · inv)`.

use half::f16;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{check_finite, Error, Result};

/// Largest INT8 activation code.
pub const Q_MAX: f32 = 127.0;

/// Largest finite FP8-E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// The E4M3 NaN code this module produces (`0x7F`; `0xFF` is the other NaN).
pub const E4M3_NAN: u8 = 0x7f;

/// Rows (or tensors) whose `max|x|` is below this (2⁻¹⁰⁰) are quantized as all-zero with scale 0.
pub const MIN_AMAX: f32 = f32::from_bits((127 - 100) << 23);

/// Smallest static activation scale accepted (2⁻¹¹⁰); keeps `1 / scale` finite and denormal-proof.
pub const MIN_STATIC_SCALE: f32 = f32::from_bits((127 - 110) << 23);

/// Below this many elements the work is not split across threads.
const PAR_MIN_ELEMS: usize = 1 << 15;

/// How a linear layer's input activations are quantized.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ActQuant {
    /// Activations stay floating point (weight-only schemes).
    None,
    /// One scale per token (row), computed at run time: `scale_m = max|X_m| / 127`.
    DynamicPerToken,
    /// One scale for the whole tensor, fixed at calibration time.
    StaticPerTensor { scale: f32 },
}

/// INT8 activations `[M, K]` with their scales: `[M]` (per token) or `[1]` (per tensor).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActs {
    /// Codes in `[−127, 127]`.
    pub q: Array2<i8>,
    /// Per-token scales `[M]`, or a single per-tensor scale `[1]`.
    pub scales: Array1<f32>,
}

impl QuantizedActs {
    /// The scale that applies to token `m`.
    #[inline]
    pub fn scale(&self, m: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[m]
        }
    }

    /// Checks that `scales` has length `M` or 1 and holds finite, non-negative values.
    pub fn validate(&self) -> Result<()> {
        check_scales(self.q.nrows(), self.scales.view())
    }

    /// The dequantized activations `x̂ = (q as f32) · scale` `[M, K]`.
    pub fn dequantize(&self) -> Result<Array2<f32>> {
        self.validate()?;
        let mut out = self.q.mapv(f32::from);
        for (m, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            let s = self.scale(m);
            row.mapv_inplace(|v| v * s);
        }
        Ok(out)
    }
}

/// FP8-E4M3 activations `[M, K]` (codes as raw bytes) with their scales `[M]` or `[1]`:
/// `x ≈ scale · e4m3_to_f32(code)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Acts {
    /// E4M3 codes.
    pub q: Array2<u8>,
    /// Per-token scales `[M]`, or a single per-tensor scale `[1]`.
    pub scales: Array1<f32>,
}

impl Fp8Acts {
    /// The scale that applies to token `m`.
    #[inline]
    pub fn scale(&self, m: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[m]
        }
    }

    /// The dequantized activations `e4m3_to_f32(code) · scale` `[M, K]`.
    pub fn dequantize(&self) -> Result<Array2<f32>> {
        check_scales(self.q.nrows(), self.scales.view())?;
        let mut out = self.q.mapv(e4m3_to_f32);
        for (m, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            let s = self.scale(m);
            row.mapv_inplace(|v| v * s);
        }
        Ok(out)
    }
}

/// Scales must be `[M]` or `[1]`, finite and `≥ 0`.
pub(crate) fn check_scales(m: usize, scales: ArrayView1<f32>) -> Result<()> {
    if scales.len() != m && scales.len() != 1 {
        return Err(Error::shape(
            "activation scales",
            format!("[{m}] or [1]"),
            format!("[{}]", scales.len()),
        ));
    }
    for (i, &s) in scales.iter().enumerate() {
        if !s.is_finite() || s < 0.0 {
            return Err(Error::invariant(
                "activation scales",
                format!("scales[{i}] = {s} must be finite and >= 0"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Element and code abstractions shared by the INT8 and FP8 paths.

/// Input element types: converted to f32 exactly.
trait Elem: Copy + Send + Sync {
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Output code types: INT8 (`[−127, 127]`) or FP8-E4M3 bytes.
trait Code: Copy + Send + Sync + Default {
    /// Largest code magnitude: 127 or 448.
    const MAX: f32;
    /// Encodes an already scaled value (`x' · inv`).
    fn encode(v: f32) -> Self;
}
impl Code for i8 {
    const MAX: f32 = Q_MAX;
    #[inline(always)]
    fn encode(v: f32) -> i8 {
        // `as` saturates and maps NaN to 0; inputs are finite here, the clamp is the spec.
        v.round_ties_even().clamp(-Q_MAX, Q_MAX) as i8
    }
}
impl Code for u8 {
    const MAX: f32 = E4M3_MAX;
    #[inline(always)]
    fn encode(v: f32) -> u8 {
        f32_to_e4m3(v)
    }
}

/// How the scale is chosen.
#[derive(Clone, Copy)]
enum Scaling {
    /// `amax` of each row.
    PerToken,
    /// `amax` of the whole tensor.
    PerTensorDynamic,
    /// A fixed, validated scale.
    Static(f32),
}

/// `(scale, inv)` for an observed `amax` (step 2 of the recipe); `None` means an all-zero block.
#[inline]
fn scale_from_amax(amax: f32, qmax: f32) -> Option<(f32, f32)> {
    if amax < MIN_AMAX {
        None
    } else {
        Some((amax / qmax, qmax / amax))
    }
}

fn check_static_scale(scale: f32) -> Result<f32> {
    if !scale.is_finite() || scale < MIN_STATIC_SCALE {
        return Err(Error::config(
            "activation scale",
            scale,
            "must be finite and >= 2^-110",
        ));
    }
    Ok(1.0 / scale)
}

fn check_smooth(k: usize, smooth: Option<ArrayView1<f32>>) -> Result<()> {
    if let Some(s) = smooth {
        if s.len() != k {
            return Err(Error::shape(
                "smoothing factors",
                format!("[{k}] (K)"),
                format!("[{}]", s.len()),
            ));
        }
        for (j, &v) in s.iter().enumerate() {
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invariant(
                    "smoothing factors",
                    format!("k[{j}] = {v} must be finite and > 0"),
                ));
            }
        }
    }
    Ok(())
}

/// Step 1 for one row: `x'` into `buf`; returns `max|x'|`, or the column of the first non-finite
/// `x` (`Err(Ok(j))`) or non-finite `x'` (`Err(Err(j))`).
#[inline]
fn load_row<T: Elem>(
    row: ArrayView1<T>,
    smooth: Option<ArrayView1<f32>>,
    buf: &mut [f32],
) -> std::result::Result<f32, std::result::Result<usize, usize>> {
    let mut amax = 0.0f32;
    let mut finite = true;
    match smooth {
        None => {
            for (b, &v) in buf.iter_mut().zip(row.iter()) {
                let v = v.to_f32();
                finite &= v.is_finite();
                amax = amax.max(v.abs());
                *b = v;
            }
        }
        Some(k) => {
            for ((b, &v), &kj) in buf.iter_mut().zip(row.iter()).zip(k.iter()) {
                let v = v.to_f32() / kj;
                finite &= v.is_finite();
                amax = amax.max(v.abs());
                *b = v;
            }
        }
    }
    if finite {
        return Ok(amax);
    }
    // Cold path: name the first offending column, distinguishing input from smoothed overflow.
    for (j, &v) in row.iter().enumerate() {
        if !v.to_f32().is_finite() {
            return Err(Ok(j));
        }
    }
    let j = buf.iter().position(|v| !v.is_finite()).unwrap_or(0);
    Err(Err(j))
}

fn row_error(m: usize, e: std::result::Result<usize, usize>) -> Error {
    match e {
        Ok(j) => Error::NonFinite {
            what: "activations".into(),
            index: vec![m, j],
        },
        Err(j) => Error::NonFinite {
            what: "activations / smoothing factors".into(),
            index: vec![m, j],
        },
    }
}

/// The shared quantizer: returns codes `[M, K]` and scales `[M]` (per token) or `[1]`.
fn quantize_core<T: Elem, C: Code>(
    x: ArrayView2<T>,
    smooth: Option<ArrayView1<f32>>,
    scaling: Scaling,
) -> Result<(Array2<C>, Array1<f32>)> {
    let (m, k) = x.dim();
    check_smooth(k, smooth)?;
    let fixed = match scaling {
        Scaling::Static(s) => Some((s, check_static_scale(s)?)),
        Scaling::PerTensorDynamic => {
            let amax = tensor_amax(x, smooth)?;
            Some(scale_from_amax(amax, C::MAX).unwrap_or((0.0, 0.0)))
        }
        Scaling::PerToken => None,
    };
    let mut codes = vec![C::default(); m * k];
    let mut scales = vec![0.0f32; m];
    if k > 0 {
        let work =
            |buf: &mut Vec<f32>, (r, (out, scale)): (usize, (&mut [C], &mut f32))| -> Result<()> {
                let amax = load_row(x.row(r), smooth, buf).map_err(|e| row_error(r, e))?;
                let (s, inv) = match fixed {
                    Some(si) => si,
                    None => match scale_from_amax(amax, C::MAX) {
                        Some(si) => si,
                        None => {
                            // All-zero row: codes stay at their default (0 / +0.0), scale 0.
                            *scale = 0.0;
                            return Ok(());
                        }
                    },
                };
                *scale = s;
                for (o, &v) in out.iter_mut().zip(buf.iter()) {
                    *o = C::encode(v * inv);
                }
                Ok(())
            };
        let init = || vec![0.0f32; k];
        if m * k >= PAR_MIN_ELEMS {
            codes
                .par_chunks_mut(k)
                .zip(scales.par_iter_mut())
                .enumerate()
                .try_for_each_init(init, work)
                .map_err(|_| first_row_error(x, smooth))?;
        } else {
            let mut buf = init();
            for item in codes.chunks_mut(k).zip(scales.iter_mut()).enumerate() {
                work(&mut buf, item)?;
            }
        }
    }
    let codes = Array2::from_shape_vec((m, k), codes)
        .map_err(|e| Error::shape("codes", format!("[{m}, {k}]"), e))?;
    let scales = match fixed {
        Some((s, _)) => Array1::from_elem(1, s),
        None => Array1::from_vec(scales),
    };
    Ok((codes, scales))
}

/// Re-scans sequentially so that a parallel failure reports the first offending index.
fn first_row_error<T: Elem>(x: ArrayView2<T>, smooth: Option<ArrayView1<f32>>) -> Error {
    let mut buf = vec![0.0f32; x.ncols()];
    for (r, row) in x.axis_iter(Axis(0)).enumerate() {
        if let Err(e) = load_row(row, smooth, &mut buf) {
            return row_error(r, e);
        }
    }
    Error::invariant(
        "activations",
        "non-finite value reported but not found on re-scan",
    )
}

/// `max |x'|` over the whole tensor (errors on non-finite values).
fn tensor_amax<T: Elem>(x: ArrayView2<T>, smooth: Option<ArrayView1<f32>>) -> Result<f32> {
    let k = x.ncols();
    let row_amax =
        |buf: &mut Vec<f32>, r: usize| load_row(x.row(r), smooth, buf).map_err(|e| row_error(r, e));
    if x.len() >= PAR_MIN_ELEMS {
        (0..x.nrows())
            .into_par_iter()
            .map_init(|| vec![0.0f32; k], row_amax)
            .try_reduce(|| 0.0f32, |a, b| Ok(a.max(b)))
            .map_err(|_| first_row_error(x, smooth))
    } else {
        let mut buf = vec![0.0f32; k];
        let mut amax = 0.0f32;
        for r in 0..x.nrows() {
            amax = amax.max(row_amax(&mut buf, r)?);
        }
        Ok(amax)
    }
}

// ---------------------------------------------------------------------------------------------
// INT8 public API.

/// Dynamic per-token INT8 quantization (recipe in the module docs): one scale per row,
/// `scale = max|x_m| / 127`.
pub fn quantize_per_token(x: ArrayView2<f32>) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f32, i8>(x, None, Scaling::PerToken)?;
    Ok(QuantizedActs { q, scales })
}

/// [`quantize_per_token`] for f16 input (converted to f32 exactly first).
pub fn quantize_per_token_f16(x: ArrayView2<f16>) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f16, i8>(x, None, Scaling::PerToken)?;
    Ok(QuantizedActs { q, scales })
}

/// Per-token quantization of `x[:, j] / k[j]` (smoothing folded into the same pass; the division
/// happens first, in f32, then the recipe runs on the quotient). `k` must be `[K]`, finite, `> 0`.
pub fn quantize_per_token_smoothed(
    x: ArrayView2<f32>,
    k: ArrayView1<f32>,
) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f32, i8>(x, Some(k), Scaling::PerToken)?;
    Ok(QuantizedActs { q, scales })
}

/// [`quantize_per_token_smoothed`] for f16 input.
pub fn quantize_per_token_smoothed_f16(
    x: ArrayView2<f16>,
    k: ArrayView1<f32>,
) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f16, i8>(x, Some(k), Scaling::PerToken)?;
    Ok(QuantizedActs { q, scales })
}

/// Static per-tensor INT8 quantization with a calibrated `scale` (finite, `≥ 2⁻¹¹⁰`):
/// `q = clamp(round_ties_even(x · (1/scale)), −127, 127)`. Values beyond `127·scale` saturate.
pub fn quantize_static(x: ArrayView2<f32>, scale: f32) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f32, i8>(x, None, Scaling::Static(scale))?;
    Ok(QuantizedActs { q, scales })
}

/// [`quantize_static`] for f16 input.
pub fn quantize_static_f16(x: ArrayView2<f16>, scale: f32) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f16, i8>(x, None, Scaling::Static(scale))?;
    Ok(QuantizedActs { q, scales })
}

/// Static quantization of `x[:, j] / k[j]` (division first, then the static recipe).
pub fn quantize_static_smoothed(
    x: ArrayView2<f32>,
    k: ArrayView1<f32>,
    scale: f32,
) -> Result<QuantizedActs> {
    let (q, scales) = quantize_core::<f32, i8>(x, Some(k), Scaling::Static(scale))?;
    Ok(QuantizedActs { q, scales })
}

/// Quantizes with the mode of `act`; [`ActQuant::None`] is a config error (nothing to quantize).
pub fn quantize(x: ArrayView2<f32>, act: &ActQuant) -> Result<QuantizedActs> {
    match *act {
        ActQuant::None => Err(Error::config(
            "act",
            "none",
            "weight-only layers have no INT8 activations",
        )),
        ActQuant::DynamicPerToken => quantize_per_token(x),
        ActQuant::StaticPerTensor { scale } => quantize_static(x, scale),
    }
}

/// Quantize-dequantize (`x̂ = q · scale`) with the mode of `act`; [`ActQuant::None`] returns `x`.
pub fn fake_quantize(x: ArrayView2<f32>, act: &ActQuant) -> Result<Array2<f32>> {
    match act {
        ActQuant::None => Ok(x.to_owned()),
        _ => quantize(x, act)?.dequantize(),
    }
}

// ---------------------------------------------------------------------------------------------
// Static-scale calibration.

/// Calibrates a static per-tensor scale from `max|X|` over every observed batch:
/// `scale = amax / 127`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaticScaleObserver {
    amax: f32,
    elements: usize,
}

impl StaticScaleObserver {
    /// An observer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accumulates one batch `[tokens, K]` (non-finite values are an error; the state is unchanged).
    pub fn observe(&mut self, x: ArrayView2<f32>) -> Result<()> {
        let amax = tensor_amax(x, None)?;
        self.amax = self.amax.max(amax);
        self.elements += x.len();
        Ok(())
    }

    /// Largest `|x|` seen so far.
    pub fn amax(&self) -> f32 {
        self.amax
    }

    /// The calibrated scale `amax / 127`; an error when nothing (or only values below
    /// [`MIN_AMAX`]) was observed, since no valid static scale exists then.
    pub fn scale(&self) -> Result<f32> {
        static_scale_for(self.amax, self.elements, Q_MAX)
    }

    /// The calibrated mode, ready for [`quantize`].
    pub fn act_quant(&self) -> Result<ActQuant> {
        Ok(ActQuant::StaticPerTensor {
            scale: self.scale()?,
        })
    }
}

fn static_scale_for(amax: f32, elements: usize, qmax: f32) -> Result<f32> {
    if elements == 0 {
        return Err(Error::config(
            "observer",
            "empty",
            "no activations were observed",
        ));
    }
    match scale_from_amax(amax, qmax) {
        Some((s, _)) if s >= MIN_STATIC_SCALE => Ok(s),
        _ => Err(Error::config(
            "observer amax",
            amax,
            "all observed activations are (near) zero",
        )),
    }
}

/// Bins of [`PercentileScaleObserver`]'s histogram.
const HIST_BINS: usize = 2048;

/// Calibrates a static per-tensor scale that clips the largest `|x|` values: the scale maps the
/// `percentile`-th percentile of `|x|` over all observed elements to 127 (TensorRT-style
/// percentile calibration, e.g. 99.99).
///
/// A histogram of 2048 bins over `[0, range)` is kept, with `range` a power of two above every
/// observed `|x|`; when a batch reaches it the range doubles (merging bin pairs, which is exact for
/// power-of-two ranges), so memory stays constant and the result does not depend on how the data
/// is split into batches. Resolution is `range / 2048`. The returned clip value is the upper edge of the bin that reaches the
/// percentile, capped at the true `max|x|`.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentileScaleObserver {
    percentile: f64,
    /// `None` until a value ≥ [`MIN_AMAX`] is seen.
    range: Option<f32>,
    hist: Vec<u64>,
    /// Elements seen before the range was known (all `< MIN_AMAX`, i.e. bin 0).
    pending_zeros: u64,
    amax: f32,
}

impl PercentileScaleObserver {
    /// `percentile` in `(0, 100]`; `100` reproduces [`StaticScaleObserver`] up to bin resolution.
    pub fn new(percentile: f64) -> Result<Self> {
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(Error::config(
                "percentile",
                percentile,
                "must be in (0, 100]",
            ));
        }
        Ok(PercentileScaleObserver {
            percentile,
            range: None,
            hist: vec![0; HIST_BINS],
            pending_zeros: 0,
            amax: 0.0,
        })
    }

    /// Accumulates one batch (non-finite values are an error; the state is unchanged).
    pub fn observe(&mut self, x: ArrayView2<f32>) -> Result<()> {
        check_finite("activations", x)?;
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        self.amax = self.amax.max(amax);
        if amax >= MIN_AMAX {
            self.grow_to(amax);
        }
        let Some(range) = self.range else {
            self.pending_zeros += x.len() as u64;
            return Ok(());
        };
        let per_bin = HIST_BINS as f32 / range;
        for &v in x.iter() {
            // `range` is a power of two above every |v|, so `|v| · per_bin` is exact and < 2048.
            let b = ((v.abs() * per_bin) as usize).min(HIST_BINS - 1);
            self.hist[b] += 1;
        }
        Ok(())
    }

    /// Makes `range ≥ amax`, merging bins when the range doubles.
    fn grow_to(&mut self, amax: f32) {
        let mut range = match self.range {
            Some(r) => r,
            None => {
                let r = next_pow2_above(amax);
                self.range = Some(r);
                self.hist[0] += std::mem::take(&mut self.pending_zeros);
                return;
            }
        };
        while range <= amax {
            range *= 2.0;
            for i in 0..HIST_BINS / 2 {
                self.hist[i] = self.hist[2 * i] + self.hist[2 * i + 1];
            }
            for h in &mut self.hist[HIST_BINS / 2..] {
                *h = 0;
            }
        }
        self.range = Some(range);
    }

    /// Largest `|x|` seen so far.
    pub fn amax(&self) -> f32 {
        self.amax
    }

    /// The clipping value: the `percentile`-th percentile of `|x|` (bin upper edge, `≤ amax`).
    pub fn clip_value(&self) -> Result<f32> {
        let total: u64 = self.hist.iter().sum::<u64>() + self.pending_zeros;
        if total == 0 {
            return Err(Error::config(
                "observer",
                "empty",
                "no activations were observed",
            ));
        }
        let Some(range) = self.range else {
            return Ok(0.0);
        };
        let target = ((self.percentile / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut acc = 0u64;
        for (b, &h) in self.hist.iter().enumerate() {
            acc += h;
            if acc >= target {
                return Ok(((b + 1) as f32 * (range / HIST_BINS as f32)).min(self.amax));
            }
        }
        Ok(self.amax)
    }

    /// The calibrated scale `clip / 127`.
    pub fn scale(&self) -> Result<f32> {
        let total: u64 = self.hist.iter().sum::<u64>() + self.pending_zeros;
        static_scale_for(self.clip_value()?, total as usize, Q_MAX)
    }
}

/// Smallest power of two `> v` (for normal `v`), so every observed `|x| < range` and bins never
/// need clamping, which makes bin merging exact (batch splits do not change the histogram).
fn next_pow2_above(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7f80_0000) * 2.0 // 2^floor(log2 v) · 2
}

// ---------------------------------------------------------------------------------------------
// FP8-E4M3.

/// Encodes `x` as FP8-E4M3 (`e4m3fn`): round to nearest, ties to even (subnormals included),
/// saturating `|x| > 448` (and ±∞) to ±448; NaN becomes `0x7F`. The sign of zero is kept.
#[inline]
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return E4M3_NAN;
    }
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7e;
    }
    // Exponent of a as an E4M3 normal, or 1 for the subnormal range (same quantum 2^-9 as e = 1).
    let e = ((a.to_bits() >> 23) as i32 - 127).max(-6);
    // Quantum of the binade is 2^(e-3); scaling by a power of two is exact, so the only rounding
    // is round_ties_even. m ∈ [0, 16]; m = 16 carries into the next binade by plain addition.
    let quantum_inv = f32::from_bits(((127 - (e - 3)) as u32) << 23);
    let m = (a * quantum_inv).round_ties_even() as u32;
    let code = if e == -6 && m < 8 {
        m // subnormal (or zero)
    } else {
        (((e + 7) as u32) << 3) + m - 8
    };
    sign | code as u8
}

/// Decodes an FP8-E4M3 (`e4m3fn`) byte: `0x7F` / `0xFF` are NaN, there are no infinities.
#[inline]
pub fn e4m3_to_f32(c: u8) -> f32 {
    let sign = if c & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = (c >> 3) & 0x0f;
    let m = (c & 0x07) as u32;
    if e == 0x0f && m == 7 {
        return f32::NAN;
    }
    let mag = if e == 0 {
        m as f32 * f32::from_bits((127 - 9) << 23) // m · 2^-9
    } else {
        f32::from_bits(((e as u32 + 120) << 23) | (m << 20)) // (1 + m/8) · 2^(e-7)
    };
    sign * mag
}

/// Encodes a slice (`dst.len()` must equal `src.len()`).
pub fn f32_slice_to_e4m3(src: &[f32], dst: &mut [u8]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape("e4m3 destination", src.len(), dst.len()));
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_e4m3(s);
    }
    Ok(())
}

/// Decodes a slice (`dst.len()` must equal `src.len()`).
pub fn e4m3_slice_to_f32(src: &[u8], dst: &mut [f32]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape("f32 destination", src.len(), dst.len()));
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = e4m3_to_f32(s);
    }
    Ok(())
}

/// Encodes an array element-wise (no scaling).
pub fn array_to_e4m3(x: ArrayView2<f32>) -> Array2<u8> {
    x.mapv(f32_to_e4m3)
}

/// Decodes an array element-wise (no scaling).
pub fn e4m3_array_to_f32(c: ArrayView2<u8>) -> Array2<f32> {
    c.mapv(e4m3_to_f32)
}

/// Dynamic per-token FP8 quantization: `scale_m = max|x_m| / 448`, codes `f32_to_e4m3(x · inv)`.
pub fn quantize_fp8_per_token(x: ArrayView2<f32>) -> Result<Fp8Acts> {
    let (q, scales) = quantize_core::<f32, u8>(x, None, Scaling::PerToken)?;
    Ok(Fp8Acts { q, scales })
}

/// Dynamic per-tensor FP8 quantization: one `scale = max|x| / 448` for the whole tensor.
pub fn quantize_fp8_per_tensor(x: ArrayView2<f32>) -> Result<Fp8Acts> {
    let (q, scales) = quantize_core::<f32, u8>(x, None, Scaling::PerTensorDynamic)?;
    Ok(Fp8Acts { q, scales })
}

/// Static per-tensor FP8 quantization with a calibrated scale (finite, `≥ 2⁻¹¹⁰`); saturates at ±448.
pub fn quantize_fp8_static(x: ArrayView2<f32>, scale: f32) -> Result<Fp8Acts> {
    let (q, scales) = quantize_core::<f32, u8>(x, None, Scaling::Static(scale))?;
    Ok(Fp8Acts { q, scales })
}
