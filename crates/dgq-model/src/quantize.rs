//! Layer-wise ("true sequential") post-training quantization of a whole model.
//!
//! The calibration windows are embedded once; then, layer by layer, every sub-block is calibrated
//! on the inputs produced by the **already quantized** earlier parts of the model, so each linear
//! is fitted to the activations it will really see:
//!
//! 1. `x = attn_norm(h)`: per-channel `max|x|` → smoothing factors folded into the norm and the
//!    Q/K/V input columns → calibration Hessian `XᵀX` (and static scale) → quantize Q, K, V.
//! 2. attention with the quantized Q/K/V → O's input → quantize O (no smoothing there: V's output
//!    channels are shared by GQA heads) → `h += o(ctx)`.
//! 3. `x = mlp_norm(h)` → smoothing into the norm and Gate/Up (Fc1). For the Up→Down smoothing
//!    (DGQ), Down's input statistics come from the **float** Gate/Up first; the factors are folded
//!    into Up's rows (Fc1's rows and bias for OPT: ReLU commutes with positive scaling) and Down's
//!    columns; then Gate/Up are quantized and Down is quantized on the activations of the
//!    quantized Gate/Up → `h += down(act)`, the input of the next layer.
//!
//! Memory: one layer's activations for all windows (the residual stream, one sub-block input and
//! the MLP hidden state), plus one `K × K` Hessian at a time.
//!
//! The stages themselves (norm placement, residual adds) are [`run_layer`]'s; this module is its
//! calibration backend. The result is a [`PackedModel`] with every quantized linear and every
//! norm changed by smoothing; [`apply_packed`](crate::apply_packed) rebuilds the quantized model
//! from it and the original weights.

use std::collections::BTreeMap;
use std::time::Instant;

use dgq_core::act::{ActQuant, StaticScaleObserver};
use dgq_core::format::PackedModel;
use dgq_core::quant::dual_grained::DualGrainedWeight;
use dgq_core::quant::fine_grained::{self, FineQuantConfig};
use dgq_core::quant::sym::SymIntWeight;
use dgq_core::quant::Bits;
use dgq_core::smooth::{self, ActAbsMax, PercentileConfig, SmoothQuantConfig};
use dgq_core::DgqConfig;
use ndarray::{Array1, Array2, ArrayView2};

use crate::config::Family;
use crate::error::{Error, Result};
use crate::layer::{DecoderLayer, NormSlot};
use crate::linear::LinearSlot;
use crate::model::Model;
use crate::packed::{export_layer, linear_name, model_fingerprint, FINGERPRINT_KEY};
use crate::qlinear::{Exec, QWeight, QuantLinear};
use crate::search::{dgq_search, Hessian};
use crate::stages::{run_layer, Block, LayerBackend};

/// A quantization recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// No quantization (float reference).
    Fp,
    /// INT8 per-channel symmetric weights, dynamic per-token INT8 activations.
    W8a8,
    /// W4A8: direct RTN decomposition into DGQ weights, dynamic per-token INT8 activations.
    Rtn,
    /// W4A8: SmoothQuant (α on Q/K/V and Gate/Up inputs) then RTN, dynamic per-token INT8.
    SmoothQuant,
    /// W4A8 DGQ: percentile-clipping smoothing (Q/K/V, Gate/Up, Up→Down), two-phase search,
    /// dynamic per-token INT8 activations.
    Dgq,
    /// As [`Method::Dgq`] with static per-tensor INT8 activation scales from calibration.
    DgqStatic,
    /// FineQuant W4A16: int4 symmetric weights with adaptive group size, float activations.
    FineQuant,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 7] = [
        Method::Fp,
        Method::W8a8,
        Method::Rtn,
        Method::SmoothQuant,
        Method::Dgq,
        Method::DgqStatic,
        Method::FineQuant,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Fp => "fp",
            Method::W8a8 => "w8a8",
            Method::Rtn => "rtn",
            Method::SmoothQuant => "smoothquant",
            Method::Dgq => "dgq",
            Method::DgqStatic => "dgq-static",
            Method::FineQuant => "finequant",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::config(
                    "method",
                    s,
                    "expected one of fp, w8a8, rtn, smoothquant, dgq, dgq-static, finequant",
                )
            })
    }

    fn smoothing(self, cfg: &QuantizeConfig) -> Option<smooth::Smoothing> {
        match self {
            Method::SmoothQuant => Some(smooth::Smoothing::SmoothQuant(SmoothQuantConfig {
                alpha: cfg.smoothquant_alpha,
                ..Default::default()
            })),
            Method::Dgq | Method::DgqStatic => {
                Some(smooth::Smoothing::Percentile(PercentileConfig {
                    top_fraction: cfg.percentile_top_fraction,
                }))
            }
            _ => None,
        }
    }

    /// Whether the Down (Fc2) input is smoothed too (DGQ's third smoothing site).
    fn smooths_down(self) -> bool {
        matches!(self, Method::Dgq | Method::DgqStatic)
    }
}

/// Configuration of [`quantize_model`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeConfig {
    /// The recipe.
    pub method: Method,
    /// Requested group size along K for W4 schemes; per layer the largest power of two dividing K
    /// and not above it is used (recorded in the report and the file).
    pub group_size: usize,
    /// SmoothQuant migration strength α.
    pub smoothquant_alpha: f32,
    /// DGQ percentile clipping: fraction of channels above the threshold (0.005 = top 0.5 %).
    pub percentile_top_fraction: f64,
    /// DGQ two-phase search grids (its `group_size` is replaced by the per-layer one).
    pub dgq: DgqConfig,
    /// FineQuant configuration.
    pub finequant: FineQuantConfig,
    /// Compute per-linear output errors against the float weights (`eᵀHe`, needs a Hessian per
    /// input site even for methods that do not use one).
    pub layer_errors: bool,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            method: Method::Dgq,
            group_size: 128,
            smoothquant_alpha: 0.5,
            percentile_top_fraction: 0.005,
            dgq: DgqConfig::default(),
            finequant: FineQuantConfig::default(),
            layer_errors: true,
        }
    }
}

/// The group size a linear with `k` inputs uses when `requested` is asked for: the largest power
/// of two that divides `k` and is at most `requested` (at least 2; `None` for odd `k`).
///
/// Powers of two because those are the groups GPU kernels tile (32, 64, 128): SmolLM2's K = 576
/// at a requested 128 gets 64, not the even divisor 96 that no kernel takes.
pub fn effective_group_size(k: usize, requested: usize) -> Option<usize> {
    if k == 0 {
        return None;
    }
    // The largest power of two dividing k, capped by the largest power of two ≤ requested.
    let cap = match requested {
        0 | 1 => return None,
        r => 1usize << (usize::BITS - 1 - r.leading_zeros()),
    };
    let g = (1usize << k.trailing_zeros()).min(cap);
    (g >= 2).then_some(g)
}

/// What happened to one linear layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinearReport {
    /// Packed-file name of the layer.
    pub name: String,
    /// Decoder layer index.
    pub layer: usize,
    /// Implementation label (e.g. `w4-dgq-a8-dyn-fake`).
    pub kind: String,
    /// `[N, K]`.
    pub shape: [usize; 2],
    /// Group size used.
    pub group_size: usize,
    /// Output MSE per token and channel of the quantized weight with float inputs,
    /// `Σ_rows e H eᵀ / (T·N)` on the calibration Hessian (None unless `layer_errors`).
    pub weight_out_mse: Option<f64>,
    /// Relative output error `‖Y − Ŷ‖² / ‖Y‖²` on the first calibration window, including the
    /// activation quantization (the full error the layer adds).
    pub out_nmse: f64,
    /// The part of `out_nmse` due to activation quantization alone (float weights, quantized
    /// input) on the same window: tells weight error and activation error apart.
    pub act_only_nmse: f64,
    /// DGQ search: output MSE of the direct RTN decomposition and of the search result.
    pub search_mse_rtn: Option<f64>,
    /// See `search_mse_rtn`.
    pub search_mse_final: Option<f64>,
    /// Largest smoothing factor applied to this layer's input (1 = none).
    pub max_smooth: f32,
}

/// Report of a whole run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuantizeReport {
    /// Method name.
    pub method: String,
    /// Calibration tokens (windows × ctx).
    pub calib_tokens: usize,
    /// Per linear layer, in model order.
    pub linears: Vec<LinearReport>,
    /// Wall time of the whole pipeline (s).
    pub seconds: f64,
    /// Seconds spent in: embedding/forward passes, Hessians/statistics, weight quantization.
    pub seconds_forward: f64,
    /// See `seconds_forward`.
    pub seconds_stats: f64,
    /// See `seconds_forward`.
    pub seconds_quantize: f64,
}

/// Progress of [`quantize_model`]: called at the start of every stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeProgress {
    /// Layers finished.
    pub layer: usize,
    /// Layers in the model.
    pub layers: usize,
    /// What runs now.
    pub stage: &'static str,
}

/// Timers of the pipeline stages.
#[derive(Default)]
struct Clock {
    forward: f64,
    stats: f64,
    quantize: f64,
}

fn timed<T>(acc: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed().as_secs_f64();
    r
}

/// Quantizes `model` in place with `cfg` on the calibration `windows` (each run as one sequence
/// from position 0) and returns the packed file contents and a report. For [`Method::Fp`] the
/// model is unchanged and the packed model has no layers.
///
/// Errors: no windows, empty windows, tokens out of range, a layer whose K has no usable group
/// size, numerical failures (non-finite activations).
pub fn quantize_model(
    model: &mut Model,
    windows: &[Vec<u32>],
    cfg: &QuantizeConfig,
    progress: &mut dyn FnMut(QuantizeProgress),
) -> Result<(PackedModel, QuantizeReport)> {
    let t0 = Instant::now();
    if windows.is_empty() || windows.iter().any(|w| w.is_empty()) {
        return Err(Error::argument(
            "calibration windows",
            windows.len(),
            "need at least one non-empty window",
        ));
    }
    // Before anything changes the model: the weights the file is made from.
    let fingerprint = model_fingerprint(model)?;
    let mut packed = PackedModel::new(
        model.load_info.path.display().to_string(),
        method_label(cfg),
    );
    let mut report = QuantizeReport {
        method: cfg.method.name().into(),
        calib_tokens: windows.iter().map(Vec::len).sum(),
        linears: Vec::new(),
        seconds: 0.0,
        seconds_forward: 0.0,
        seconds_stats: 0.0,
        seconds_quantize: 0.0,
    };
    let nl = model.layers.len();
    if cfg.method != Method::Fp {
        let mut clock = Clock::default();
        let mut hs: Vec<Array2<f32>> = timed(&mut clock.forward, || {
            windows.iter().map(|w| model.embed(w, 0)).collect()
        })?;
        for li in 0..nl {
            let layer = &mut model.layers[li];
            let mut p = |stage| {
                progress(QuantizeProgress {
                    layer: li,
                    layers: nl,
                    stage,
                })
            };
            quantize_layer(layer, &mut hs, cfg, &mut clock, &mut report, &mut p)?;
            export_layer(layer, cfg.method.smoothing(cfg).is_some(), &mut packed)?;
        }
        report.seconds_forward = clock.forward;
        report.seconds_stats = clock.stats;
        report.seconds_quantize = clock.quantize;
    }
    progress(QuantizeProgress {
        layer: nl,
        layers: nl,
        stage: "done",
    });
    let meta = &mut packed.metadata;
    meta.insert("dgq.method".into(), cfg.method.name().into());
    meta.insert(FINGERPRINT_KEY.into(), fingerprint);
    meta.insert(
        "dgq.group_size_requested".into(),
        cfg.group_size.to_string(),
    );
    meta.insert("dgq.calib_windows".into(), windows.len().to_string());
    meta.insert("dgq.calib_tokens".into(), report.calib_tokens.to_string());
    report.seconds = t0.elapsed().as_secs_f64();
    Ok((packed, report))
}

fn method_label(cfg: &QuantizeConfig) -> String {
    match cfg.method {
        Method::Fp => "fp".into(),
        Method::W8a8 => "w8a8 per-channel int8, per-token int8".into(),
        Method::Rtn => format!("rtn-w4a8 g{} per-token int8", cfg.group_size),
        Method::SmoothQuant => format!(
            "smoothquant a={} + rtn-w4a8 g{} per-token int8",
            cfg.smoothquant_alpha, cfg.group_size
        ),
        Method::Dgq => format!("dgq-search g{} a8-dynamic", cfg.group_size),
        Method::DgqStatic => format!("dgq-search g{} a8-static", cfg.group_size),
        Method::FineQuant => "finequant w4a16".into(),
    }
}

/// Statistics of one input site over all windows.
struct SiteStats {
    hessian: Option<Hessian>,
    observer: StaticScaleObserver,
}

fn site_stats(
    xs: &[Array2<f32>],
    k: usize,
    want_hessian: bool,
    clock: &mut Clock,
) -> Result<SiteStats> {
    timed(&mut clock.stats, || {
        let mut hessian = want_hessian.then(|| Hessian::new(k));
        let mut observer = StaticScaleObserver::new();
        for x in xs {
            if let Some(h) = hessian.as_mut() {
                h.add_batch(x.view())?;
            }
            observer.observe(x.view())?;
        }
        Ok(SiteStats { hessian, observer })
    })
}

fn absmax(xs: &[Array2<f32>], k: usize) -> Result<Array1<f32>> {
    let mut m = ActAbsMax::new(k);
    for x in xs {
        m.update(x.view())?;
    }
    Ok(m.into_absmax())
}

fn float_weight(layer: &DecoderLayer, slot: LinearSlot) -> Result<&crate::FloatLinear> {
    layer.linear(slot)?.as_float().ok_or_else(|| {
        Error::Unsupported(format!(
            "layer {} {slot:?} is already replaced; quantize a freshly loaded model",
            layer.index
        ))
    })
}

fn float_weight_mut(layer: &mut DecoderLayer, slot: LinearSlot) -> Result<&mut crate::FloatLinear> {
    let idx = layer.index;
    layer.linear_mut(slot)?.as_float_mut().ok_or_else(|| {
        Error::Unsupported(format!(
            "layer {idx} {slot:?} is already replaced; quantize a freshly loaded model"
        ))
    })
}

/// Smoothing factors for the input `xs` of `consumers` (None when the method does not smooth).
fn smoothing_factors(
    layer: &DecoderLayer,
    consumers: &[LinearSlot],
    xs: &[Array2<f32>],
    cfg: &QuantizeConfig,
) -> Result<Option<Array1<f32>>> {
    let Some(sm) = cfg.method.smoothing(cfg) else {
        return Ok(None);
    };
    let k = xs.first().map(|x| x.ncols()).unwrap_or(0);
    let z = absmax(xs, k)?;
    let ws: Vec<ArrayView2<f32>> = consumers
        .iter()
        .map(|s| float_weight(layer, *s).map(|f| f.weight.view()))
        .collect::<Result<_>>()?;
    Ok(Some(sm.factors(z.view(), &ws)?))
}

/// The calibration backend of [`run_layer`]: runs every calibration window through one layer at
/// once and, before each linear runs, measures its input over all windows, folds the smoothing
/// into its producer and quantizes it.
struct Calibrate<'a, 'p> {
    layer: &'a mut DecoderLayer,
    cfg: &'a QuantizeConfig,
    clock: &'a mut Clock,
    report: &'a mut QuantizeReport,
    progress: &'a mut (dyn FnMut(&'static str) + 'p),
    /// Whether input statistics include the Hessian.
    want_hessian: bool,
    /// Largest smoothing factor folded into the current block's input (1 = none).
    smooth_in: f32,
    /// Largest smoothing factor folded into Down's (Fc2's) input.
    smooth_down: f32,
}

impl Calibrate<'_, '_> {
    fn quantize(
        &mut self,
        slot: LinearSlot,
        st: &SiteStats,
        x0: ArrayView2<f32>,
        smooth: f32,
    ) -> Result<()> {
        let r = quantize_slot(self.layer, slot, st, x0, self.cfg, self.clock, smooth)?;
        self.report.linears.push(r);
        Ok(())
    }
}

impl LayerBackend for Calibrate<'_, '_> {
    type Hidden = Vec<Array2<f32>>;
    type Act = Vec<Array2<f32>>;

    /// The block input; with a norm and a smoothing method, the smoothing factors of that input
    /// are folded into the norm and the first linears, and the input is computed again.
    fn block_input(
        &mut self,
        block: Block,
        norm: Option<NormSlot>,
        hs: &Vec<Array2<f32>>,
    ) -> Result<Vec<Array2<f32>>> {
        (self.progress)(match block {
            Block::Attn => "attn: stats",
            Block::Mlp => "mlp: stats",
        });
        let layer = &mut *self.layer;
        let inputs = |layer: &DecoderLayer| -> Result<Vec<Array2<f32>>> {
            hs.iter()
                .map(|h| layer.block_input(norm, h.view()))
                .collect()
        };
        let mut xs = timed(&mut self.clock.forward, || inputs(layer))?;
        self.smooth_in = 1.0;
        if let Some(norm) = norm {
            let consumers = layer.wiring().first_linears(block);
            if let Some(k) = timed(&mut self.clock.stats, || {
                smoothing_factors(layer, consumers, &xs, self.cfg)
            })? {
                layer.norm_mut(norm).scale_output_channels_inv(&k)?;
                for &s in consumers {
                    float_weight_mut(layer, s)?.scale_input_channels(&k)?;
                }
                self.smooth_in = k.fold(1.0, |a, &b| a.max(b));
                xs = timed(&mut self.clock.forward, || inputs(layer))?;
            }
        }
        Ok(xs)
    }

    /// Quantizes Q/K/V on their input, then runs the attention with them.
    fn attention(&mut self, xs: Vec<Array2<f32>>) -> Result<Vec<Array2<f32>>> {
        let d = self.layer.hidden_size();
        let st = site_stats(&xs, d, self.want_hessian, self.clock)?;
        (self.progress)("attn: quantize q/k/v");
        for &s in self.layer.wiring().first_linears(Block::Attn) {
            self.quantize(s, &st, xs[0].view(), self.smooth_in)?;
        }
        (self.progress)("attn: o_proj");
        let layer = &*self.layer;
        timed(&mut self.clock.forward, || {
            xs.iter()
                .map(|x| layer.attention_context(x.view(), 0))
                .collect()
        })
    }

    /// Folds the Up→Down smoothing (DGQ; statistics from the float Gate/Up), quantizes Gate/Up
    /// (Fc1) on their input, then computes Down's (Fc2's) input with them.
    fn mlp(&mut self, xs: Vec<Array2<f32>>) -> Result<Vec<Array2<f32>>> {
        let wiring = self.layer.wiring();
        let last = wiring.last_linear(Block::Mlp);
        self.smooth_down = 1.0;
        if self.cfg.method.smooths_down() {
            (self.progress)("mlp: down smoothing");
            let layer = &*self.layer;
            let acts: Vec<Array2<f32>> = timed(&mut self.clock.forward, || {
                xs.iter().map(|x| layer.mlp_hidden(x.view())).collect()
            })?;
            if let Some(k) = timed(&mut self.clock.stats, || {
                smoothing_factors(layer, &[last], &acts, self.cfg)
            })? {
                // Up (or Fc1) rows produce Down's input: dividing them divides it (SwiGLU is
                // linear in up; ReLU commutes with positive factors).
                let producer = match wiring.family {
                    Family::Opt => LinearSlot::Fc1,
                    _ => LinearSlot::Up,
                };
                float_weight_mut(self.layer, producer)?.scale_output_channels_inv(&k)?;
                float_weight_mut(self.layer, last)?.scale_input_channels(&k)?;
                self.smooth_down = k.fold(1.0, |a, &b| a.max(b));
            }
        }
        let d = self.layer.hidden_size();
        let st = site_stats(&xs, d, self.want_hessian, self.clock)?;
        (self.progress)("mlp: quantize gate/up");
        for &s in wiring.first_linears(Block::Mlp) {
            self.quantize(s, &st, xs[0].view(), self.smooth_in)?;
        }
        drop(st);
        (self.progress)("mlp: down_proj");
        let layer = &*self.layer;
        timed(&mut self.clock.forward, || {
            xs.iter().map(|x| layer.mlp_hidden(x.view())).collect()
        })
    }

    /// Quantizes the block's last linear on its input, then adds its output to every window's
    /// residual stream.
    fn add_linear(
        &mut self,
        slot: LinearSlot,
        xs: Vec<Array2<f32>>,
        hs: &mut Vec<Array2<f32>>,
    ) -> Result<()> {
        let k = xs[0].ncols();
        let st = site_stats(&xs, k, self.want_hessian, self.clock)?;
        // No smoothing at O's input: V's output channels are shared by GQA heads.
        let smooth = if slot == LinearSlot::O {
            1.0
        } else {
            self.smooth_down
        };
        self.quantize(slot, &st, xs[0].view(), smooth)?;
        drop(st);
        let layer = &*self.layer;
        timed(&mut self.clock.forward, || {
            for (h, x) in hs.iter_mut().zip(&xs) {
                layer.add_residual(slot, x.view(), h)?;
            }
            Ok(())
        })
    }

    fn norm_hidden(&mut self, norm: NormSlot, hs: &mut Vec<Array2<f32>>) -> Result<()> {
        let n = self.layer.norm(norm);
        timed(&mut self.clock.forward, || {
            for h in hs.iter_mut() {
                *h = n.forward(h.view())?;
            }
            Ok(())
        })
    }
}

/// Calibrates and quantizes one layer on the residual streams `hs` of all windows, which it
/// advances to the next layer's input (computed with the quantized layer).
fn quantize_layer(
    layer: &mut DecoderLayer,
    hs: &mut Vec<Array2<f32>>,
    cfg: &QuantizeConfig,
    clock: &mut Clock,
    report: &mut QuantizeReport,
    progress: &mut dyn FnMut(&'static str),
) -> Result<()> {
    for h in hs.iter() {
        layer.check_input(h.view())?;
    }
    let wiring = layer.wiring();
    let mut cal = Calibrate {
        layer,
        cfg,
        clock,
        report,
        progress,
        want_hessian: cfg.layer_errors || matches!(cfg.method, Method::Dgq | Method::DgqStatic),
        smooth_in: 1.0,
        smooth_down: 1.0,
    };
    run_layer(wiring, &mut cal, hs)
}

/// Output MSE `Σ_rows e H eᵀ / (T·N)` of replacing `w` by `wq` for inputs with Hessian `h`.
fn hessian_mse(w: ArrayView2<f32>, wq: ArrayView2<f32>, h: &Hessian) -> Result<f64> {
    let e = &w - &wq;
    let hf = h.matrix().mapv(|v| v as f32);
    let eh = dgq_core::reference::matmul_f32_nt(e.view(), hf.view())?;
    let loss: f64 = eh
        .iter()
        .zip(e.iter())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    Ok(loss / (h.tokens().max(1) * w.nrows().max(1)) as f64)
}

fn nmse(y: ArrayView2<f32>, yq: ArrayView2<f32>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in y.iter().zip(yq.iter()) {
        num += ((a - b) as f64).powi(2);
        den += (a as f64).powi(2);
    }
    if den > 0.0 {
        num / den
    } else {
        num
    }
}

fn quantize_slot(
    layer: &mut DecoderLayer,
    slot: LinearSlot,
    st: &SiteStats,
    x0: ArrayView2<f32>,
    cfg: &QuantizeConfig,
    clock: &mut Clock,
    max_smooth: f32,
) -> Result<LinearReport> {
    let fl = float_weight(layer, slot)?;
    let (n, k) = fl.weight.dim();
    let w = fl.weight.view();
    let bias = fl.bias.clone();
    let name = linear_name(layer.family, layer.index, slot);
    let group = |requested: usize| {
        effective_group_size(k, requested).ok_or_else(|| {
            Error::config(
                "group_size",
                requested,
                format!("{name}: K = {k} is odd: no power-of-two group divides it"),
            )
        })
    };
    let mut search = None;
    let (qw, act) = timed(&mut clock.quantize, || {
        Ok(match cfg.method {
            Method::Fp => return Err(Error::argument("method", "fp", "nothing to quantize")),
            Method::W8a8 => (
                QWeight::Sym(SymIntWeight::quantize_rtn(w, Bits::Int8, k)?),
                ActQuant::DynamicPerToken,
            ),
            Method::Rtn | Method::SmoothQuant => (
                QWeight::Dgq(DualGrainedWeight::rtn(w, group(cfg.group_size)?)?),
                ActQuant::DynamicPerToken,
            ),
            Method::Dgq | Method::DgqStatic => {
                let dcfg = DgqConfig {
                    group_size: group(cfg.group_size)?,
                    ..cfg.dgq.clone()
                };
                let h = st.hessian.as_ref().ok_or_else(|| {
                    Error::Unsupported("DGQ search without a calibration Hessian".into())
                })?;
                let (q, stats) = dgq_search(w, h, &dcfg)?;
                search = stats;
                let act = if cfg.method == Method::DgqStatic {
                    st.observer.act_quant()?
                } else {
                    ActQuant::DynamicPerToken
                };
                (QWeight::Dgq(q), act)
            }
            Method::FineQuant => (
                QWeight::Sym(fine_grained::quantize(w, &cfg.finequant)?.weight),
                ActQuant::None,
            ),
        })
    })?;
    let group_size = qw.group_size();
    let q = QuantLinear::new(qw, act, bias, Exec::FakeQuant)?;
    let weight_out_mse = match &st.hessian {
        Some(h) if cfg.layer_errors => Some(timed(&mut clock.stats, || {
            hessian_mse(w, q.weight().dequantize().view(), h)
        })?),
        _ => None,
    };
    let y = crate::linear::LinearOp::forward(fl, x0)?;
    let yq = crate::linear::LinearOp::forward(&q, x0)?;
    let out_nmse = nmse(y.view(), yq.view());
    let xa = dgq_core::act::fake_quantize(x0, &act)?;
    let ya = crate::linear::LinearOp::forward(fl, xa.view())?;
    let act_only_nmse = nmse(y.view(), ya.view());
    let kind = crate::linear::LinearOp::kind(&q).to_string();
    layer.linear_mut(slot)?.replace(Box::new(q))?;
    Ok(LinearReport {
        name,
        layer: layer.index,
        kind,
        shape: [n, k],
        group_size,
        weight_out_mse,
        out_nmse,
        act_only_nmse,
        search_mse_rtn: search.map(|s| s.mse_rtn),
        search_mse_final: search.map(|s| s.mse_final),
        max_smooth,
    })
}

/// Mean `out_nmse` and `act_only_nmse` per projection name (`q_proj`, `down_proj`...) over all
/// layers.
pub fn mean_out_nmse_by_slot(report: &QuantizeReport) -> Vec<(String, f64, f64)> {
    let mut acc: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for l in &report.linears {
        let short = l.name.rsplit('.').next().unwrap_or(&l.name).to_string();
        let e = acc.entry(short).or_default();
        e.0 += l.out_nmse;
        e.1 += l.act_only_nmse;
        e.2 += 1;
    }
    acc.into_iter()
        .map(|(k, (s, a, n))| (k, s / n.max(1) as f64, a / n.max(1) as f64))
        .collect()
}
