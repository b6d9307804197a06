//! Smoothing: percentile clipping (DGQ eq. 7) and SmoothQuant, and the folds into the preceding
//! norm / linear and the following weights.
//!
//! Both methods produce per-input-channel factors `k [K]`. The activations are divided by `k`
//! and the consuming weights' columns multiplied by it, so the network function is unchanged:
//! `(X / k) · (W · k)ᵀ = X · Wᵀ` (division and multiplication broadcast over columns). The division
//! of `X` is never done at run time; it is folded into whatever produced `X`:
//!
//! - an RMSNorm / LayerNorm (`input_layernorm` → q, k, v; `post_attention_layernorm` → gate, up):
//!   [`fold_into_norm`] divides the norm's weight (and bias);
//! - a linear layer (`up_proj` → `down_proj` in SwiGLU, since `down`'s input is
//!   `silu(gate) · up`, dividing `up`'s output rows divides the product): [`fold_into_prev_linear_rows`].
//!
//! The consumers get [`fold_into_weight_cols`]. Calibration statistics come from [`ActAbsMax`].
//!
//! Typical use, for one norm feeding q, k, v:
//! ```
//! # use dgq_core::smooth::*;
//! # use ndarray::{Array1, Array2};
//! # fn main() -> dgq_core::Result<()> {
//! let (k_dim, n) = (8, 4);
//! let x = Array2::from_shape_fn((16, k_dim), |(t, j)| (t as f32 - 7.5) * (1.0 + j as f32));
//! let mut stats = ActAbsMax::new(k_dim);
//! stats.update(x.view())?;
//! let (mut wq, mut wk, mut wv) = (Array2::<f32>::ones((n, k_dim)), Array2::<f32>::ones((n, k_dim)), Array2::<f32>::ones((n, k_dim)));
//! let k = smoothquant_factors(stats.absmax(), &[wq.view(), wk.view(), wv.view()], &SmoothQuantConfig::default())?;
//! let mut norm_weight = Array1::<f32>::ones(k_dim);
//! fold_into_norm(&mut norm_weight, None, k.view())?;
//! for w in [&mut wq, &mut wk, &mut wv] {
//!     fold_into_weight_cols(w, k.view())?;
//! }
//! # Ok(())
//! # }
//! ```

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::{check_finite, Error, Result};

/// Running per-channel `max_t |X_tj|` over calibration batches.
#[derive(Debug, Clone, PartialEq)]
pub struct ActAbsMax {
    absmax: Array1<f32>,
    tokens: usize,
}

impl ActAbsMax {
    /// An empty accumulator for `k` input channels (all maxima 0, no tokens seen).
    pub fn new(k: usize) -> Self {
        ActAbsMax {
            absmax: Array1::zeros(k),
            tokens: 0,
        }
    }

    /// Folds one batch of activations `[M, K]` (tokens × channels) into the running maxima.
    ///
    /// Errors: `K` differs from the accumulator's, or the batch holds a NaN/∞ (the first
    /// offending `[t, j]` is named). On error the accumulator is unchanged.
    pub fn update(&mut self, x: ArrayView2<f32>) -> Result<()> {
        if x.ncols() != self.absmax.len() {
            return Err(Error::shape(
                "activations",
                format!("[M, {}]", self.absmax.len()),
                format!("{:?}", x.shape()),
            ));
        }
        // Validate before touching the state so a bad batch leaves no partial update.
        check_finite("activations", x)?;
        for row in x.axis_iter(Axis(0)) {
            for (m, &v) in self.absmax.iter_mut().zip(row.iter()) {
                *m = m.max(v.abs());
            }
        }
        self.tokens += x.nrows();
        Ok(())
    }

    /// Merges another accumulator over the same channels (e.g. one per calibration shard).
    pub fn merge(&mut self, other: &ActAbsMax) -> Result<()> {
        if other.absmax.len() != self.absmax.len() {
            return Err(Error::shape(
                "ActAbsMax to merge",
                format!("K = {}", self.absmax.len()),
                format!("K = {}", other.absmax.len()),
            ));
        }
        self.absmax
            .zip_mut_with(&other.absmax, |a, &b| *a = a.max(b));
        self.tokens += other.tokens;
        Ok(())
    }

    /// Per-channel maxima `z [K]` so far.
    pub fn absmax(&self) -> ArrayView1<'_, f32> {
        self.absmax.view()
    }

    /// Number of tokens (rows) seen.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Number of channels K.
    pub fn k(&self) -> usize {
        self.absmax.len()
    }

    /// The maxima, consuming the accumulator.
    pub fn into_absmax(self) -> Array1<f32> {
        self.absmax
    }
}

/// Percentile clipping (DGQ eq. 7) parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentileConfig {
    /// Fraction of channels allowed above the threshold `P`; the DGQ paper uses the top 0.5 %.
    /// Must be in `[0, 1)`; `0` makes `P` the largest maximum, i.e. no clipping.
    pub top_fraction: f64,
}

impl Default for PercentileConfig {
    /// `top_fraction = 0.005` (the DGQ paper's top-0.5 %).
    fn default() -> Self {
        PercentileConfig {
            top_fraction: 0.005,
        }
    }
}

/// SmoothQuant parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothQuantConfig {
    /// Migration strength `α ∈ [0, 1]`: `s_j = max|X_j|^α / max|W_j|^(1−α)`. 0.5 is the
    /// SmoothQuant paper's default for most models.
    pub alpha: f32,
    /// Factors are clamped to `[eps, 1/eps]` so they stay finite and positive whatever the
    /// statistics; must be in `(0, 1)`.
    pub eps: f32,
}

impl Default for SmoothQuantConfig {
    /// `alpha = 0.5`, `eps = 1e-5`.
    fn default() -> Self {
        SmoothQuantConfig {
            alpha: 0.5,
            eps: 1e-5,
        }
    }
}

/// Either smoothing method, for pipelines that pick one by configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    /// DGQ percentile clipping: only activation statistics are used.
    Percentile(PercentileConfig),
    /// SmoothQuant: activation and weight statistics.
    SmoothQuant(SmoothQuantConfig),
}

impl Smoothing {
    /// Factors `k [K]` for the activation maxima `act_absmax` and the consumers `weights`
    /// (each `[N_i, K]`; ignored by percentile clipping, whose factors depend on X only).
    pub fn factors(
        &self,
        act_absmax: ArrayView1<f32>,
        weights: &[ArrayView2<f32>],
    ) -> Result<Array1<f32>> {
        match self {
            Smoothing::Percentile(cfg) => percentile_clip_factors(act_absmax, cfg),
            Smoothing::SmoothQuant(cfg) => smoothquant_factors(act_absmax, weights, cfg),
        }
    }
}

fn check_absmax(what: &str, z: ArrayView1<f32>) -> Result<()> {
    if z.is_empty() {
        return Err(Error::shape(what, "a non-empty [K] vector", "[0]"));
    }
    check_finite(what, z)?;
    if let Some(j) = z.iter().position(|&v| v < 0.0) {
        return Err(Error::invariant(
            what,
            format!("{what}[{j}] = {} is negative; maxima of |X| are >= 0", z[j]),
        ));
    }
    Ok(())
}

/// The percentile threshold `P` of DGQ eq. 7.
///
/// Definition: sort the channel maxima `z` in descending order (`z₍₀₎ ≥ z₍₁₎ ≥ …`) and take
/// `P = z₍i₎` with `i = ⌊top_fraction · K⌋`. At most `i` channels (those ranked before `i`) can
/// exceed `P`, so with the default 0.5 % at most `⌊0.005·K⌋` channels are clipped: for K = 4096,
/// `i = 20` and `P` is the 21st largest maximum. When `top_fraction · K < 1` (K < 200 at 0.5 %),
/// `i = 0` and `P = max z`: nothing is clipped.
///
/// Errors: empty, non-finite or negative `z`; `top_fraction` outside `[0, 1)`.
pub fn percentile_threshold(z: ArrayView1<f32>, top_fraction: f64) -> Result<f32> {
    if !(top_fraction.is_finite() && (0.0..1.0).contains(&top_fraction)) {
        return Err(Error::config(
            "top_fraction",
            top_fraction,
            "must be in [0, 1)",
        ));
    }
    check_absmax("activation absmax", z)?;
    let mut sorted = z.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    // top_fraction < 1 keeps the index below K.
    let i = ((top_fraction * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    Ok(sorted[i])
}

/// Percentile-clipping factors (DGQ eq. 7): `k_j = max(1, z_j / P)` with `z` the per-channel
/// `max_t |X_tj|` and `P` from [`percentile_threshold`]. After smoothing, every channel's
/// maximum is at most `P` (the clipped ones are brought exactly down to `P`, up to rounding).
///
/// If `P = 0` (more than `1 − top_fraction` of the channels never fire) there is no meaningful
/// threshold and all factors are 1.
///
/// Errors: as [`percentile_threshold`].
pub fn percentile_clip_factors(
    act_absmax: ArrayView1<f32>,
    cfg: &PercentileConfig,
) -> Result<Array1<f32>> {
    let p = percentile_threshold(act_absmax, cfg.top_fraction)?;
    if p <= 0.0 {
        return Ok(Array1::ones(act_absmax.len()));
    }
    Ok(act_absmax.mapv(|z| (z / p).max(1.0)))
}

/// Per-column `max |W_nj|` pooled over several consumers of the same input (q, k, v share one;
/// gate, up share another). Each weight is `[N_i, K]`.
///
/// Errors: no weights, a weight with another K or no rows, non-finite entries.
pub fn weight_col_absmax(weights: &[ArrayView2<f32>]) -> Result<Array1<f32>> {
    let Some(first) = weights.first() else {
        return Err(Error::shape(
            "consumer weights",
            "at least one [N, K] matrix",
            "none",
        ));
    };
    let k = first.ncols();
    let mut out = Array1::<f32>::zeros(k);
    for (i, w) in weights.iter().enumerate() {
        if w.ncols() != k || w.nrows() == 0 || k == 0 {
            return Err(Error::shape(
                format!("consumer weight {i}"),
                format!("[N > 0, {k}]"),
                format!("{:?}", w.shape()),
            ));
        }
        check_finite(&format!("consumer weight {i}"), *w)?;
        for row in w.axis_iter(Axis(0)) {
            out.zip_mut_with(&row, |m, &v| *m = m.max(v.abs()));
        }
    }
    Ok(out)
}

/// SmoothQuant factors `s_j = max|X_j|^α / max|W_j|^(1−α)`, where `max|W_j|` is column `j`'s
/// maximum over all consumers' rows (see [`weight_col_absmax`]).
///
/// Guards: a channel whose activation maximum or weight-column maximum is 0 gets `s_j = 1`:
/// its product term `X_j · W_j` is identically 0, so any factor is exact, and 1 avoids dividing
/// by 0 or multiplying a dead column by ∞. Every factor is then clamped to `[eps, 1/eps]` so it
/// is finite and positive even for extreme statistics.
///
/// Errors: `alpha` outside `[0, 1]`, `eps` outside `(0, 1)`, bad statistics (empty, non-finite,
/// negative), consumer weights whose K differs from `act_absmax`'s.
pub fn smoothquant_factors(
    act_absmax: ArrayView1<f32>,
    weights: &[ArrayView2<f32>],
    cfg: &SmoothQuantConfig,
) -> Result<Array1<f32>> {
    if !(cfg.alpha.is_finite() && (0.0..=1.0).contains(&cfg.alpha)) {
        return Err(Error::config("alpha", cfg.alpha, "must be in [0, 1]"));
    }
    if !(cfg.eps.is_finite() && cfg.eps > 0.0 && cfg.eps < 1.0) {
        return Err(Error::config("eps", cfg.eps, "must be in (0, 1)"));
    }
    check_absmax("activation absmax", act_absmax)?;
    let w_max = weight_col_absmax(weights)?;
    if w_max.len() != act_absmax.len() {
        return Err(Error::shape(
            "consumer weights",
            format!("[N, {}] (K of the activations)", act_absmax.len()),
            format!("[N, {}]", w_max.len()),
        ));
    }
    let (lo, hi) = (cfg.eps, 1.0 / cfg.eps);
    let a = cfg.alpha;
    Ok(ndarray::Zip::from(act_absmax)
        .and(&w_max)
        .map_collect(|&x, &w| {
            if x <= 0.0 || w <= 0.0 {
                return 1.0;
            }
            // Computed in f64: x^α / w^(1−α) of f32 inputs cannot overflow there.
            let s = (x as f64).powf(a as f64) / (w as f64).powf(1.0 - a as f64);
            (s as f32).clamp(lo, hi)
        }))
}

/// Checks smoothing factors against the channel count: length `k`, finite and `> 0`.
pub fn check_factors(k: usize, factors: ArrayView1<f32>) -> Result<()> {
    if factors.len() != k {
        return Err(Error::shape(
            "smoothing factors",
            format!("[{k}]"),
            format!("[{}]", factors.len()),
        ));
    }
    check_finite("smoothing factors", factors)?;
    if let Some(j) = factors.iter().position(|&v| v <= 0.0) {
        return Err(Error::config(
            "smoothing factor",
            format!("k[{j}] = {}", factors[j]),
            "must be finite and > 0",
        ));
    }
    Ok(())
}

/// Folds `X / k` into the norm producing `X` (RMSNorm or LayerNorm): `weight /= k` and, for
/// LayerNorm, `bias /= k`. `weight` must be the norm's multiplicative gain (for norms that apply
/// `1 + γ`, fold into the effective gain instead).
///
/// Errors (nothing is modified): length mismatch, non-finite or non-positive factors.
pub fn fold_into_norm(
    weight: &mut Array1<f32>,
    bias: Option<&mut Array1<f32>>,
    k: ArrayView1<f32>,
) -> Result<()> {
    check_factors(weight.len(), k)?;
    if let Some(b) = &bias {
        if b.len() != weight.len() {
            return Err(Error::shape(
                "norm bias",
                format!("[{}]", weight.len()),
                format!("[{}]", b.len()),
            ));
        }
    }
    weight.zip_mut_with(&k, |w, &s| *w /= s);
    if let Some(b) = bias {
        b.zip_mut_with(&k, |v, &s| *v /= s);
    }
    Ok(())
}

/// Folds `X / k` into the linear layer producing `X`: `w_prev [K, K_prev]` row `j` (and
/// `bias_prev[j]`) divided by `k_j`. For SwiGLU, fold the smoothing of `down_proj`'s input into
/// `up_proj`: `down`'s input is `silu(gate) · up`, which is linear in `up`'s output.
///
/// Errors (nothing is modified): `w_prev` rows ≠ `k.len()`, bias length ≠ rows, bad factors.
pub fn fold_into_prev_linear_rows(
    w_prev: &mut Array2<f32>,
    bias_prev: Option<&mut Array1<f32>>,
    k: ArrayView1<f32>,
) -> Result<()> {
    check_factors(w_prev.nrows(), k)?;
    if let Some(b) = &bias_prev {
        if b.len() != w_prev.nrows() {
            return Err(Error::shape(
                "previous linear bias",
                format!("[{}]", w_prev.nrows()),
                format!("[{}]", b.len()),
            ));
        }
    }
    for (mut row, &s) in w_prev.axis_iter_mut(Axis(0)).zip(k.iter()) {
        row.mapv_inplace(|v| v / s);
    }
    if let Some(b) = bias_prev {
        b.zip_mut_with(&k, |v, &s| *v /= s);
    }
    Ok(())
}

/// Multiplies the consumer weight's columns by the factors: `w [N, K]`, `w[n, j] *= k_j`.
///
/// Errors (nothing is modified): `w` columns ≠ `k.len()`, bad factors.
pub fn fold_into_weight_cols(w: &mut Array2<f32>, k: ArrayView1<f32>) -> Result<()> {
    check_factors(w.ncols(), k)?;
    for mut row in w.axis_iter_mut(Axis(0)) {
        row.zip_mut_with(&k, |v, &s| *v *= s);
    }
    Ok(())
}

/// Divides activations `[M, K]` by the factors (`x[t, j] /= k_j`): what the folds do implicitly,
/// for callers holding cached calibration activations of the next layer.
///
/// Errors (nothing is modified): `x` columns ≠ `k.len()`, bad factors.
pub fn smooth_activations(x: &mut Array2<f32>, k: ArrayView1<f32>) -> Result<()> {
    check_factors(x.ncols(), k)?;
    for mut row in x.axis_iter_mut(Axis(0)) {
        row.zip_mut_with(&k, |v, &s| *v /= s);
    }
    Ok(())
}
