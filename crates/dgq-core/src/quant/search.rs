//! DGQ two-phase grid search (paper eq. 3 and 6).
//!
//! The loss of a quantized row is the output MSE on calibration activations `X [T, K]`:
//! `‖X eᵀ‖² = eᵀ H e` with `e = w − ŵ` and `H = XᵀX`.
//!
//! - **Phase 1**, per group: the group's zero-widened `[min, max]` is shrunk by `phase1_grid` ratios
//!   from 1.0 down to `phase1_min_ratio` (both ends included); each gives a plain asymmetric u4
//!   quantizer `(s_g, z)` whose loss is `e_gᵀ H_gg e_g` with the `g×g` diagonal block of `H`.
//! - **Phase 2**, per output channel: `s1 = f16(r · max|w| / 127)` for `phase2_grid` ratios `r` from
//!   1.0 down to `phase2_min_ratio`; each gives `S2 = clamp(rne(s_g / s1), 1, 127)` and codes
//!   re-rounded with `s1·S2` inside [`q_bounds`]; loss `eᵀ H e`
//!   with the full `H`. The direct RTN decomposition of the row
//!   ([`DualGrainedWeight::rtn`]) is one more candidate, so the search is never worse than RTN on
//!   its own loss, up to the rounding of the loss evaluation: phase 2 accumulates `X ŵ` in f32
//!   and subtracts it from `X w`, so its losses carry an absolute error of about 1e-7 of the
//!   output energy `‖X w‖²` (tested bound: 1e-6, plus 1e-4 relative).
//!
//! ## How phase 2 is made fast
//! Evaluating every candidate densely costs `K·M` multiply-adds per candidate and row (`M = T`
//! with activations, `M = K` with a Hessian). Instead the row is written group by group as
//! `C ŵ = Σ_g t_g · y_g`, with `t_g = s1·S2` the group's effective scale, `y_g = Σ_{j∈g} u_j C_j`,
//! `u_j = q_j − z` the integer codes, and `C` the `[K, M]` matrix whose row `j` is column `j` of
//! `X` (or of `H`). Each group visits the candidates in an order where consecutive code vectors are
//! close (clamp radius `⌊127/S2⌋` from loose to tight, and inside each radius the effective scale
//! swept up and down alternately): about 2.4 code changes per weight over the whole grid of 81 on
//! Gaussian rows. `y_g` then costs one `axpy` with a row of `C` per changed code, and every
//! candidate's `C ŵ` accumulates `t_g·y_g`. Per row that is about `(2 + 2.4 + 81/g)·K·M`
//! multiply-adds instead of `81·K·M`; the dense part (`C w` and each group's first `y_g`) runs as
//! GEMMs, and the rest is tiled over `M` so that a group's rows of `C` stay in cache while a block
//! of rows replays its changes on them. Losses are accumulated in f32 per tile and f64 across
//! tiles; phase 1 (small `g×g` blocks) is exact in f64.

use std::ops::Range;

use half::f16;
use ndarray::{s, Array1, Array2, ArrayView2, Axis, CowArray, Ix2};
use rayon::prelude::*;

use super::dual_grained::{channel_scale, check_dgq_shape, q_bounds, DualGrainedWeight, W_S8_MAX};
use super::rtn::asym_params;
use crate::error::{check_finite, Error, Result};

/// How the output-MSE loss is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossMode {
    /// Pick the cheaper of the two below from the shapes: activations directly when `T ≤ K`,
    /// otherwise the Hessian.
    #[default]
    Auto,
    /// `eᵀ H e` with `H = XᵀX` (per group the `g×g` diagonal block in phase 1).
    Hessian,
    /// `‖X e‖²`, multiplying the calibration activations for every candidate (phase 2; phase 1
    /// always uses the `g×g` Gram blocks `X_gᵀX_g`, which give the same numbers for less work).
    Direct,
}

/// Configuration of the DGQ two-phase search. Defaults are the authors' (grid 20 over
/// ratio 1.0→0.8 of the group min/max; grid 80 over ratio 1.0→0.2 of `max|W_row|/127`).
#[derive(Debug, Clone, PartialEq)]
pub struct DgqConfig {
    /// Group size along K (must divide K and be even).
    pub group_size: usize,
    /// Phase 1 grid points (per group scale/zero).
    pub phase1_grid: usize,
    /// Smallest clipping ratio of the group's min/max tried in phase 1.
    pub phase1_min_ratio: f32,
    /// Phase 2 grid points (per channel s1).
    pub phase2_grid: usize,
    /// Smallest ratio of `max|W_row|/127` tried for s1 in phase 2.
    pub phase2_min_ratio: f32,
    /// How the loss is evaluated.
    pub loss: LossMode,
}

impl Default for DgqConfig {
    fn default() -> Self {
        DgqConfig {
            group_size: 128,
            phase1_grid: 20,
            phase1_min_ratio: 0.8,
            phase2_grid: 80,
            phase2_min_ratio: 0.2,
            loss: LossMode::Auto,
        }
    }
}

/// Largest grid accepted for either phase; far beyond any useful resolution, and it bounds the
/// per-thread scratch memory (which grows linearly with the phase 2 grid).
pub const MAX_GRID: usize = 4096;

impl DgqConfig {
    /// Checks every field that does not depend on the weight's shape: a positive, even group size,
    /// grids in `1..=MAX_GRID`, ratios finite in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if self.group_size == 0 || self.group_size % 2 != 0 {
            return Err(Error::config(
                "group_size",
                self.group_size,
                "must be positive and even (groups align with packed nibble pairs)",
            ));
        }
        for (field, v) in [
            ("phase1_grid", self.phase1_grid),
            ("phase2_grid", self.phase2_grid),
        ] {
            if v == 0 || v > MAX_GRID {
                return Err(Error::config(field, v, "must be in 1..=4096"));
            }
        }
        for (field, v) in [
            ("phase1_min_ratio", self.phase1_min_ratio),
            ("phase2_min_ratio", self.phase2_min_ratio),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(Error::config(field, v, "must be finite and in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// The `i`-th of `n` ratios evenly spaced from 1.0 down to `min` (both ends included).
fn grid_ratio(i: usize, n: usize, min: f32) -> f32 {
    if n <= 1 {
        1.0
    } else {
        1.0 - (1.0 - min) * i as f32 / (n - 1) as f32
    }
}

/// Accumulator of the calibration Hessian `H = Σ_batches XᵀX` `[K, K]`.
///
/// Each batch is multiplied in f32 (GEMM, in slices of at most [`Hessian::SLICE_TOKENS`] tokens) and
/// added into f64 storage, so the rounding does not grow with the number of calibration tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    k: usize,
    /// `[K, K]`, standard layout.
    h: Array2<f64>,
    tokens: usize,
}

impl Hessian {
    /// Tokens multiplied in f32 before the f64 accumulation.
    pub const SLICE_TOKENS: usize = 2048;

    /// An empty accumulator for `K` input channels.
    pub fn new(k: usize) -> Self {
        Hessian {
            k,
            h: Array2::zeros((k, k)),
            tokens: 0,
        }
    }

    /// A Hessian computed elsewhere (e.g. on a GPU): `h` must be `[K, K]` and finite; it is
    /// symmetrized as `(h + hᵀ)/2`. `tokens` is the number of calibration tokens it sums.
    pub fn from_matrix(h: ArrayView2<f64>, tokens: usize) -> Result<Self> {
        let (r, c) = h.dim();
        if r != c {
            return Err(Error::shape(
                "hessian",
                "a square [K, K] matrix",
                format!("[{r}, {c}]"),
            ));
        }
        for ((i, j), v) in h.indexed_iter() {
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    what: "hessian".into(),
                    index: vec![i, j],
                });
            }
        }
        let sym = Array2::from_shape_fn((r, r), |(i, j)| 0.5 * (h[[i, j]] + h[[j, i]]));
        Ok(Hessian {
            k: r,
            h: sym,
            tokens,
        })
    }

    /// Input channels K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Calibration tokens accumulated so far.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The accumulated `[K, K]` matrix.
    pub fn matrix(&self) -> ArrayView2<'_, f64> {
        self.h.view()
    }

    /// Adds `XᵀX` of a batch of activations `x [T, K]`.
    ///
    /// Errors: `x` has the wrong number of columns or a non-finite value.
    pub fn add_batch(&mut self, x: ArrayView2<f32>) -> Result<()> {
        let (t, k) = x.dim();
        if k != self.k {
            return Err(Error::shape(
                "activations",
                format!("[T, {}]", self.k),
                format!("[{t}, {k}]"),
            ));
        }
        check_finite("activations", x)?;
        if t == 0 || k == 0 {
            return Ok(());
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().unwrap_or_default();
        let mut tmp = vec![0f32; k * k];
        for t0 in (0..t).step_by(Self::SLICE_TOKENS) {
            let t1 = (t0 + Self::SLICE_TOKENS).min(t);
            gram_f32(
                &xs[t0 * k..t1 * k],
                k,
                0..k,
                &mut tmp,
                gemm::Parallelism::Rayon(0),
            );
            self.h
                .axis_iter_mut(Axis(0))
                .into_par_iter()
                .zip(tmp.par_chunks(k))
                .for_each(|(mut h, s)| h.iter_mut().zip(s).for_each(|(h, &s)| *h += s as f64));
        }
        self.tokens += t;
        Ok(())
    }

    /// Adds another accumulator of the same K (e.g. one filled on another thread).
    pub fn merge(&mut self, other: &Hessian) -> Result<()> {
        if other.k != self.k {
            return Err(Error::shape(
                "hessian",
                format!("[{0}, {0}]", self.k),
                format!("[{0}, {0}]", other.k),
            ));
        }
        self.h += &other.h;
        self.tokens += other.tokens;
        Ok(())
    }
}

/// `dst [n, n] = X[:, cols]ᵀ X[:, cols]` for a row-major `x` with `k` columns, in f32 with `gemm`.
fn gram_f32(x: &[f32], k: usize, cols: Range<usize>, dst: &mut [f32], par: gemm::Parallelism) {
    let n = cols.len();
    let t = x.len().checked_div(k).unwrap_or(0);
    assert!(cols.end <= k && dst.len() >= n * n && x.len() == t * k);
    if n == 0 {
        return;
    }
    if t == 0 {
        dst[..n * n].fill(0.0);
        return;
    }
    let base = x[cols.start..].as_ptr();
    // SAFETY: lhs(i, l) = x[l·k + cols.start + i] and rhs(l, j) = x[l·k + cols.start + j] for
    // i, j < n, l < t stay inside `x` (checked above: cols.end ≤ k, x.len() = t·k); dst(i, j) =
    // dst[i·n + j] stays inside `dst` (len ≥ n·n). No aliasing between dst and x.
    unsafe {
        gemm::gemm(
            n,
            n,
            t,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            base,
            k as isize,
            1,
            base,
            1,
            k as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Which row of the search won for one output channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowChoice {
    /// The direct RTN decomposition (no candidate of the grid was better).
    Rtn,
    /// Phase 2 grid point `index` (ratio `ratio` of `max|w|/127`), with the phase 1 group params.
    Grid { index: usize, ratio: f32 },
}

/// What the search found, for logging per-layer errors.
///
/// Losses are output squared errors summed over calibration tokens and output channels,
/// `Σ_rows ‖X e_rowᵀ‖²`; divide by [`SearchReport::tokens`]` × N` for a mean.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchReport {
    /// The loss evaluation that ran: [`LossMode::Direct`] or [`LossMode::Hessian`].
    pub mode: LossMode,
    /// Calibration tokens behind the loss.
    pub tokens: usize,
    /// Loss of the direct RTN decomposition ([`DualGrainedWeight::rtn`]).
    pub loss_rtn: f64,
    /// Loss with the phase 1 group params and `s1 = max|w|/127` (no phase 2 search).
    pub loss_phase1_only: f64,
    /// Loss of the result.
    pub loss_final: f64,
    /// Per output channel: loss of the RTN decomposition.
    pub row_loss_rtn: Vec<f64>,
    /// Per output channel: loss of the result.
    pub row_loss_final: Vec<f64>,
    /// Per output channel: which candidate won.
    pub row_choice: Vec<RowChoice>,
}

impl SearchReport {
    /// Mean squared output error per token and output channel of the result.
    pub fn mse_final(&self) -> f64 {
        self.loss_final / (self.tokens.max(1) * self.row_loss_final.len().max(1)) as f64
    }
    /// Mean squared output error per token and output channel of the RTN decomposition.
    pub fn mse_rtn(&self) -> f64 {
        self.loss_rtn / (self.tokens.max(1) * self.row_loss_rtn.len().max(1)) as f64
    }
}

/// Runs the two-phase search on calibration activations `x [T, K]` for the weight `w [N, K]`.
///
/// Errors: bad config, shapes (`x` must have K columns and at least one row), non-finite values.
pub fn search(
    w: ArrayView2<f32>,
    x: ArrayView2<f32>,
    cfg: &DgqConfig,
) -> Result<DualGrainedWeight> {
    search_report(w, x, cfg).map(|(q, _)| q)
}

/// [`search`] with a calibration Hessian accumulated over batches instead of the activations.
///
/// Errors: bad config (including [`LossMode::Direct`], which needs the activations), shapes, a
/// Hessian without tokens, non-finite values.
pub fn search_with_hessian(
    w: ArrayView2<f32>,
    h: &Hessian,
    cfg: &DgqConfig,
) -> Result<DualGrainedWeight> {
    search_with_hessian_report(w, h, cfg).map(|(q, _)| q)
}

/// [`search`], also returning the per-layer and per-row losses.
pub fn search_report(
    w: ArrayView2<f32>,
    x: ArrayView2<f32>,
    cfg: &DgqConfig,
) -> Result<(DualGrainedWeight, SearchReport)> {
    cfg.validate()?;
    check_weight(w, cfg.group_size)?;
    let k = w.ncols();
    let (t, kx) = x.dim();
    if kx != k || t == 0 {
        return Err(Error::shape(
            "activations",
            format!("[T ≥ 1, {k}]"),
            format!("[{t}, {kx}]"),
        ));
    }
    check_finite("activations", x)?;
    let direct = match cfg.loss {
        LossMode::Direct => true,
        LossMode::Hessian => false,
        // Phase 2 costs ~M per changed code with M = T (direct) or K (Hessian), and building H
        // costs T·K² once, so the activations win whenever T ≤ K.
        LossMode::Auto => t <= k,
    };
    let calib = if direct {
        Calib::from_activations(x, cfg.group_size)
    } else {
        let mut h = Hessian::new(k);
        h.add_batch(x)?;
        Calib::from_hessian(&h, cfg.group_size)?
    };
    run(w, &calib, cfg)
}

/// [`search_with_hessian`], also returning the per-layer and per-row losses.
pub fn search_with_hessian_report(
    w: ArrayView2<f32>,
    h: &Hessian,
    cfg: &DgqConfig,
) -> Result<(DualGrainedWeight, SearchReport)> {
    cfg.validate()?;
    if cfg.loss == LossMode::Direct {
        return Err(Error::config(
            "loss",
            "Direct",
            "needs the activations: call search(), or use LossMode::Auto/Hessian",
        ));
    }
    check_weight(w, cfg.group_size)?;
    let k = w.ncols();
    if h.k() != k {
        return Err(Error::shape(
            "hessian",
            format!("[{k}, {k}]"),
            format!("[{0}, {0}]", h.k()),
        ));
    }
    if h.tokens() == 0 {
        return Err(Error::shape("hessian", "at least one token", "0 tokens"));
    }
    let calib = Calib::from_hessian(h, cfg.group_size)?;
    run(w, &calib, cfg)
}

/// [`check_dgq_shape`], plus the size limit of the replay's column index.
fn check_weight(w: ArrayView2<f32>, group_size: usize) -> Result<()> {
    check_dgq_shape(w, group_size)?;
    if w.ncols() > MAX_K {
        return Err(Error::shape(
            "weight",
            format!("at most {MAX_K} input channels"),
            format!("{:?}", w.shape()),
        ));
    }
    Ok(())
}

/// The calibration data in the form the search reads.
struct Calib {
    /// Loss is `‖Σ_j e_j C_j‖²` (true) or `eᵀ (Σ_j e_j C_j)` (false, `C = H`).
    direct: bool,
    /// `[K, M]` row-major: `Xᵀ` (M = T) or `H` (M = K).
    c: Vec<f32>,
    m: usize,
    /// Phase 1 diagonal blocks `H_gg`, `[K/g, g, g]`, f64.
    blocks: Vec<f64>,
    tokens: usize,
}

impl Calib {
    fn from_activations(x: ArrayView2<f32>, g: usize) -> Self {
        let (t, k) = x.dim();
        let xs = x.as_standard_layout();
        let xs = xs.as_slice().unwrap_or_default();
        let mut c = vec![0f32; k * t];
        c.par_chunks_mut(t.max(1)).enumerate().for_each(|(j, row)| {
            for (tt, v) in row.iter_mut().enumerate() {
                *v = xs[tt * k + j];
            }
        });
        let ng = k / g;
        let mut blocks = vec![0f64; ng * g * g];
        blocks
            .par_chunks_mut(g * g)
            .enumerate()
            .for_each(|(gi, b)| {
                let mut tmp = vec![0f32; g * g];
                gram_f32(
                    xs,
                    k,
                    gi * g..(gi + 1) * g,
                    &mut tmp,
                    gemm::Parallelism::None,
                );
                b.iter_mut().zip(&tmp).for_each(|(b, &v)| *b = v as f64);
            });
        Calib {
            direct: true,
            c,
            m: t,
            blocks,
            tokens: t,
        }
    }

    fn from_hessian(h: &Hessian, g: usize) -> Result<Self> {
        let k = h.k;
        if let Some(((i, j), _)) = h.h.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "hessian".into(),
                index: vec![i, j],
            });
        }
        let c: Vec<f32> = h.h.iter().map(|&v| v as f32).collect();
        let ng = k / g;
        let mut blocks = vec![0f64; ng * g * g];
        blocks
            .par_chunks_mut(g * g)
            .enumerate()
            .for_each(|(gi, b)| {
                let blk = h.h.slice(s![gi * g..(gi + 1) * g, gi * g..(gi + 1) * g]);
                b.iter_mut().zip(blk.iter()).for_each(|(b, &v)| *b = v);
            });
        Ok(Calib {
            direct: false,
            c,
            m: k,
            blocks,
            tokens: h.tokens,
        })
    }
}

/// Columns of `C` per tile: a group's `g` rows of the tile (64 KiB at g = 128) stay in L2 while
/// the rows of a block replay on them, and the per-candidate accumulators `[candidates, MT]` of a
/// block (about 660 KiB with the default grid) fit beside them.
const MT: usize = 128;
/// Rows per task (they share each tile of `C` and the GEMMs that start the replay).
const ROW_BLOCK: usize = 16;
/// Budget for a block's accumulators; a larger phase 2 grid gets fewer rows per block.
const ACC_BYTES: usize = 1 << 20;
/// Rows whose `a = C w` is computed by one multi-threaded GEMM before their blocks run; fixed so
/// that the GEMM's shapes (and hence its rounding) do not depend on the thread count.
const SUPER_BLOCK: usize = 256;
/// A replay op is one `u32` (ops are re-read for every tile, so they are kept small):
/// - emit, `EMIT | c`: `acc[c] += t_g(c)·y`;
/// - code change, `(δ + 64) << 24 | j`: `y += δ·C[j]` with `δ = Δ(q − z) ∈ [−30, 30]`.
const EMIT: u32 = 1 << 31;
/// Largest K whose column index fits a change op.
const MAX_K: usize = 1 << 24;

#[inline(always)]
fn change_op(j: usize, delta: i8) -> u32 {
    (((delta as i32 + 64) as u32) << 24) | j as u32
}

/// Everything phase 2 needs about one row.
struct RowPlan {
    /// Group params of phase 1 and of plain RTN.
    p1: Vec<(f32, i32)>,
    rtn: Vec<(f32, i32)>,
    /// Per candidate (0 = RTN, 1.. = grid) the channel scale.
    s1: Vec<f16>,
    /// Per candidate and group: effective scale `s1·S2`, zero, clamp bounds (as f32).
    cg: Vec<[f32; 4]>,
    /// Codes `q − z` of each group's first candidate in replay order.
    u0: Vec<f32>,
    /// Replay ops, group by group (`group_ops[g]..group_ops[g + 1]`).
    ops: Vec<u32>,
    /// Per group and candidate the effective scale `t`, `[groups, candidates]` (for emits).
    t: Vec<f32>,
    group_ops: Vec<usize>,
    /// Loss per candidate, accumulated over tiles.
    loss: Vec<f64>,
}

/// What is kept of a row once its losses are known.
struct RowResult {
    p1: Vec<(f32, i32)>,
    rtn: Vec<(f32, i32)>,
    s1: Vec<f16>,
    loss: Vec<f64>,
}

struct Grids {
    g: usize,
    p1: Vec<f32>,
    p2: Vec<f32>,
}

fn run(
    w: ArrayView2<f32>,
    calib: &Calib,
    cfg: &DgqConfig,
) -> Result<(DualGrainedWeight, SearchReport)> {
    let (n, k) = w.dim();
    let g = cfg.group_size;
    let grids = Grids {
        g,
        p1: (0..cfg.phase1_grid)
            .map(|i| grid_ratio(i, cfg.phase1_grid, cfg.phase1_min_ratio))
            .collect(),
        p2: (0..cfg.phase2_grid)
            .map(|i| grid_ratio(i, cfg.phase2_grid, cfg.phase2_min_ratio))
            .collect(),
    };
    let w: CowArray<f32, Ix2> = w.as_standard_layout();
    let ws = w.as_slice().unwrap_or_default();
    let n_cand = 1 + grids.p2.len();
    let rb = (ACC_BYTES / (n_cand * MT * 4)).clamp(1, ROW_BLOCK);
    let m = calib.m;
    let mut results: Vec<RowResult> = Vec::with_capacity(n);
    let mut a = vec![0f32; SUPER_BLOCK.min(n) * m];
    for sup in ws.chunks(SUPER_BLOCK * k) {
        let rows = sup.len() / k;
        let a = &mut a[..rows * m];
        matmul(
            rows,
            m,
            k,
            a,
            m,
            sup,
            k,
            &calib.c,
            m,
            gemm::Parallelism::Rayon(0),
        );
        let a = &*a;
        results.par_extend(
            sup.par_chunks(rb * k)
                .zip(a.par_chunks(rb * m))
                .flat_map_iter(|(rows, a_rows)| process_block(rows, a_rows, k, calib, &grids)),
        );
    }

    let ng = k / g;
    let mut out = DualGrainedWeight {
        group_size: g,
        q: Array2::zeros((n, k)),
        zeros: Array2::zeros((n, ng)),
        s2: Array2::zeros((n, ng)),
        s1: Array1::from_elem(n, f16::ONE),
    };
    let mut report = SearchReport {
        mode: if calib.direct {
            LossMode::Direct
        } else {
            LossMode::Hessian
        },
        tokens: calib.tokens,
        loss_rtn: 0.0,
        loss_phase1_only: 0.0,
        loss_final: 0.0,
        row_loss_rtn: Vec::with_capacity(n),
        row_loss_final: Vec::with_capacity(n),
        row_choice: Vec::with_capacity(n),
    };
    for (r, plan) in results.iter().enumerate() {
        // Strictly smaller wins, scanning RTN first: ties keep the RTN decomposition.
        let mut best = 0;
        for (c, &l) in plan.loss.iter().enumerate().skip(1) {
            if l < plan.loss[best] {
                best = c;
            }
        }
        let params = if best == 0 { &plan.rtn } else { &plan.p1 };
        out.set_row(r, w.row(r), plan.s1[best], params);
        report.loss_rtn += plan.loss[0];
        report.loss_phase1_only += plan.loss[1];
        report.loss_final += plan.loss[best];
        report.row_loss_rtn.push(plan.loss[0]);
        report.row_loss_final.push(plan.loss[best]);
        report.row_choice.push(if best == 0 {
            RowChoice::Rtn
        } else {
            RowChoice::Grid {
                index: best - 1,
                ratio: grids.p2[best - 1],
            }
        });
    }
    Ok((out, report))
}

/// Phases 1 and 2 for a block of rows (row-major, `k` columns each).
fn process_block(
    rows: &[f32],
    a_rows: &[f32],
    k: usize,
    calib: &Calib,
    grids: &Grids,
) -> Vec<RowResult> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `process_block_avx2` is compiled for.
        return unsafe { process_block_avx2(rows, a_rows, k, calib, grids) };
    }
    // aarch64 has fused multiply-add in its base instruction set.
    process_block_impl::<{ cfg!(target_arch = "aarch64") }>(rows, a_rows, k, calib, grids)
}

/// The same code compiled with AVX2 + FMA, so the loops below vectorize 8 wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn process_block_avx2(
    rows: &[f32],
    a_rows: &[f32],
    k: usize,
    calib: &Calib,
    grids: &Grids,
) -> Vec<RowResult> {
    process_block_impl::<true>(rows, a_rows, k, calib, grids)
}

#[inline(always)]
fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn fma64<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn process_block_impl<const F: bool>(
    rows: &[f32],
    a_rows: &[f32],
    k: usize,
    calib: &Calib,
    grids: &Grids,
) -> Vec<RowResult> {
    let g = grids.g;
    let n_cand = 1 + grids.p2.len();
    let mut p1_scratch = Phase1Scratch::new(g);
    let mut codes = vec![0i8; n_cand * g];
    let mut order: Vec<usize> = Vec::with_capacity(n_cand);
    // Plain loops here and below: iterator adapters that LLVM declines to inline would run
    // outside this target-feature function, unvectorized (and with `mul_add` as a libm call).
    let mut plans: Vec<RowPlan> = Vec::with_capacity(rows.len() / k);
    for w in rows.chunks_exact(k) {
        let p1 = phase1_row::<F>(w, calib, grids, &mut p1_scratch);
        plans.push(plan_row(w, p1, grids, &mut codes, &mut order));
    }

    // Each group's first `y = C u0` per tile, as a small GEMM over the block's rows; the replay
    // then only applies the sparse code changes.
    let nr = plans.len();
    let ng = k / g;
    let mut u0 = vec![0f32; nr * k];
    for (dst, plan) in u0.chunks_exact_mut(k).zip(&plans) {
        dst.copy_from_slice(&plan.u0);
    }
    let m = calib.m;
    let mut y0 = vec![0f32; nr * ng * MT];
    let mut y = vec![0f32; MT];
    let mut acc = vec![0f32; nr * n_cand * MT];
    for m0 in (0..m).step_by(MT) {
        let m1 = (m0 + MT).min(m);
        let len = m1 - m0;
        let ctile = &calib.c[m0..];
        for gi in 0..ng {
            matmul(
                nr,
                len,
                g,
                &mut y0[gi * len..],
                ng * len,
                &u0[gi * g..],
                k,
                &ctile[gi * g * m..],
                m,
                gemm::Parallelism::None,
            );
        }
        let acc = &mut acc[..nr * n_cand * len];
        acc.fill(0.0);
        // Group-major, then rows: the group's `g` rows of the tile of C stay in cache while every
        // row of the block replays its changes on them.
        for gi in 0..ng {
            for (r, plan) in plans.iter().enumerate() {
                let y = &mut y[..len];
                y.copy_from_slice(&y0[(r * ng + gi) * len..(r * ng + gi + 1) * len]);
                let ops = &plan.ops[plan.group_ops[gi]..plan.group_ops[gi + 1]];
                replay_group::<F>(
                    ops,
                    &plan.t[gi * n_cand..(gi + 1) * n_cand],
                    &calib.c,
                    m,
                    m0..m1,
                    y,
                    &mut acc[r * n_cand * len..(r + 1) * n_cand * len],
                );
            }
        }
        for (r, (w, plan)) in rows.chunks_exact(k).zip(plans.iter_mut()).enumerate() {
            tile_losses(
                w,
                plan,
                calib.direct,
                g,
                m0..m1,
                &a_rows[r * m + m0..r * m + m1],
                &acc[r * n_cand * len..(r + 1) * n_cand * len],
            );
        }
    }
    plans
        .into_iter()
        .map(|p| RowResult {
            p1: p.p1,
            rtn: p.rtn,
            s1: p.s1,
            loss: p.loss,
        })
        .collect()
}

/// `dst[i·dst_rs + j] = Σ_l lhs[i·lhs_rs + l] · rhs[l·rhs_rs + j]` for `i < m, j < n, l < k`, in
/// f32 with `gemm`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            dst[i * dst_rs..i * dst_rs + n].fill(0.0);
        }
        return;
    }
    assert!(
        dst.len() >= (m - 1) * dst_rs + n
            && lhs.len() >= (m - 1) * lhs_rs + k
            && rhs.len() >= (k - 1) * rhs_rs + n
            && dst_rs >= n
    );
    // SAFETY: every element read or written lies inside the slices (checked above; column
    // strides are 1), `dst` rows do not overlap (dst_rs ≥ n), and `dst` is a unique borrow.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

struct Phase1Scratch {
    wg: Vec<f64>,
    hw: Vec<f64>,
    v: Vec<f64>,
    u: Vec<i8>,
    un: Vec<i8>,
}

impl Phase1Scratch {
    fn new(g: usize) -> Self {
        Phase1Scratch {
            wg: vec![0.0; g],
            hw: vec![0.0; g],
            v: vec![0.0; g],
            u: vec![0; g],
            un: vec![0; g],
        }
    }
}

/// Phase 1 for one row: per group the `(s_g, z)` of the grid with the smallest `e_gᵀ H_gg e_g`.
///
/// With `u` the integer codes `q − z` and `ŵ = s·u`, the loss is `wᵀHw − 2s·uᵀHw + s²·uᵀHu`;
/// consecutive ratios change few codes, so `Hu` and `uᵀHu` are updated per changed code (f64, so
/// the expansion does not lose the small loss to cancellation).
#[inline(always)]
fn phase1_row<const F: bool>(
    w: &[f32],
    calib: &Calib,
    grids: &Grids,
    s: &mut Phase1Scratch,
) -> Vec<(f32, i32)> {
    let g = grids.g;
    let mut out = Vec::with_capacity(w.len() / g);
    for (gi, wg32) in w.chunks_exact(g).enumerate() {
        let h = &calib.blocks[gi * g * g..(gi + 1) * g * g];
        for (d, &x) in s.wg.iter_mut().zip(wg32) {
            *d = x as f64;
        }
        // hw = H w as Σ_j w_j H[j, :] (H symmetric): axpys vectorize, dot products would not.
        s.hw.fill(0.0);
        for (j, hj) in h.chunks_exact(g).enumerate() {
            let wj = s.wg[j];
            for (d, &hv) in s.hw.iter_mut().zip(hj) {
                *d = fma64::<F>(wj, hv, *d);
            }
        }
        let mut whw = 0f64;
        for (a, b) in s.wg.iter().zip(&s.hw) {
            whw += a * b;
        }
        let (mut lo, mut hi) = (wg32[0], wg32[0]);
        for &x in wg32 {
            lo = lo.min(x);
            hi = hi.max(x);
        }
        s.v.fill(0.0);
        s.u.fill(0);
        let (mut uhu, mut uhw) = (0f64, 0f64);
        let mut best = (f64::INFINITY, asym_params(lo, hi, 15));
        for &r in &grids.p1 {
            let (sc, z) = asym_params(r * lo, r * hi, 15);
            let zf = z as f32;
            fill_codes(&mut s.un, wg32, sc, zf, 0.0, 15.0);
            for_each_diff(&s.u, &s.un, |j, old, new| {
                let d = (new - old) as f64;
                let hj = &h[j * g..(j + 1) * g];
                uhu += d * (2.0 * s.v[j] + d * hj[j]);
                uhw += d * s.hw[j];
                for (v, &hv) in s.v.iter_mut().zip(hj) {
                    *v = fma64::<F>(d, hv, *v);
                }
            });
            std::mem::swap(&mut s.u, &mut s.un);
            let sf = sc as f64;
            let loss = whw - 2.0 * sf * uhw + sf * sf * uhu;
            if loss < best.0 {
                best = (loss, (sc, z));
            }
        }
        out.push(best.1);
    }
    out
}

/// Builds the phase 2 candidates of one row and its replay ops.
#[inline(always)]
fn plan_row(
    w: &[f32],
    p1: Vec<(f32, i32)>,
    grids: &Grids,
    codes: &mut [i8],
    order: &mut Vec<usize>,
) -> RowPlan {
    let g = grids.g;
    let k = w.len();
    let ng = k / g;
    let n_cand = 1 + grids.p2.len();
    let mut amax = 0f32;
    for &x in w {
        amax = amax.max(x.abs());
    }
    let mut rtn = Vec::with_capacity(ng);
    for wg in w.chunks_exact(g) {
        let (mut lo, mut hi) = (wg[0], wg[0]);
        for &x in wg {
            lo = lo.min(x);
            hi = hi.max(x);
        }
        rtn.push(asym_params(lo, hi, 15));
    }
    let mut s1 = Vec::with_capacity(n_cand);
    s1.push(channel_scale(amax / W_S8_MAX as f32));
    for &r in &grids.p2 {
        s1.push(channel_scale(r * amax / W_S8_MAX as f32));
    }
    // Same arithmetic as `DualGrainedWeight::set_row`, so the evaluated codes are the stored ones.
    let mut cg = vec![[0f32; 4]; n_cand * ng];
    let mut radius = vec![0i32; n_cand * ng];
    for (c, &s1c) in s1.iter().enumerate() {
        let params = if c == 0 { &rtn } else { &p1 };
        let s1f = s1c.to_f32();
        for (gi, &(sg, z)) in params.iter().enumerate() {
            let s2 = (sg / s1f).round_ties_even().clamp(1.0, W_S8_MAX as f32) as i32;
            let (lo, hi) = q_bounds(z, s2);
            cg[c * ng + gi] = [s1f * s2 as f32, z as f32, lo as f32, hi as f32];
            radius[c * ng + gi] = W_S8_MAX / s2;
        }
    }
    let mut u0 = vec![0f32; k];
    let mut ops = Vec::with_capacity(4 * k + n_cand * ng);
    let mut group_ops = Vec::with_capacity(ng + 1);
    for gi in 0..ng {
        group_ops.push(ops.len());
        let wg = &w[gi * g..(gi + 1) * g];
        for c in 0..n_cand {
            let [t, z, lo, hi] = cg[c * ng + gi];
            fill_codes(&mut codes[c * g..(c + 1) * g], wg, t, z, lo, hi);
        }
        // Replay order: consecutive candidates should differ in few codes. Codes move with the
        // clamp radius ⌊127/S2⌋ (monotone along the grid) and with the effective scale t (a
        // sawtooth along the grid), so visit clamp classes from loose to tight and, inside each,
        // sweep t up and down alternately (about 2 changes per weight on Gaussian rows, against 4
        // in grid order and 10 sorted by t alone, where tight and loose clamps interleave).
        order.clear();
        order.extend(0..n_cand);
        let key = |c: usize| (radius[c * ng + gi], cg[c * ng + gi][0]);
        order.sort_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            kb.0.cmp(&ka.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(&b))
        });
        let mut start = 0;
        let mut class = 0;
        while start < n_cand {
            let r = key(order[start]).0;
            let mut end = start;
            while end < n_cand && key(order[end]).0 == r {
                end += 1;
            }
            if class % 2 == 1 {
                order[start..end].reverse();
            }
            class += 1;
            start = end;
        }
        let first = order[0];
        for (u, &c) in u0[gi * g..(gi + 1) * g]
            .iter_mut()
            .zip(&codes[first * g..(first + 1) * g])
        {
            *u = c as f32;
        }
        ops.push(EMIT | first as u32);
        for p in 1..n_cand {
            let (prev, cur) = (order[p - 1], order[p]);
            let (cp, cc) = (
                &codes[prev * g..(prev + 1) * g],
                &codes[cur * g..(cur + 1) * g],
            );
            for_each_diff(cp, cc, |j, a, b| ops.push(change_op(gi * g + j, b - a)));
            ops.push(EMIT | cur as u32);
        }
    }
    group_ops.push(ops.len());
    let mut t = vec![0f32; ng * n_cand];
    for (gi, tg) in t.chunks_exact_mut(n_cand).enumerate() {
        for (c, tv) in tg.iter_mut().enumerate() {
            *tv = cg[c * ng + gi][0];
        }
    }
    RowPlan {
        p1,
        rtn,
        s1,
        cg,
        u0,
        ops,
        t,
        group_ops,
        loss: vec![0.0; n_cand],
    }
}

/// `dst[j] = code(w[j], t, z, lo, hi)`, vectorized.
#[inline(always)]
fn fill_codes(dst: &mut [i8], w: &[f32], t: f32, z: f32, lo: f32, hi: f32) {
    for (d, &x) in dst.iter_mut().zip(w) {
        // The code is an integer in [−15, 15]; adding 1.5·2^23 puts it in the low mantissa bits
        // (two's complement in the low byte), a conversion that vectorizes, unlike `as i32`.
        *d = (code(x, t, z, lo, hi) + 12_582_912.0).to_bits() as u8 as i8;
    }
}

/// Calls `f(j, a[j], b[j])` for every `j` where the codes differ, skipping equal 8-byte words
/// (changes are sparse).
#[inline(always)]
fn for_each_diff(a: &[i8], b: &[i8], mut f: impl FnMut(usize, i8, i8)) {
    #[inline(always)]
    fn word(c: &[i8]) -> u64 {
        let mut x = 0u64;
        for (i, &v) in c.iter().enumerate().take(8) {
            x |= (v as u8 as u64) << (8 * i);
        }
        x
    }
    let n = a.len().min(b.len());
    let full = n - n % 8;
    for (w, (ca, cb)) in a[..full]
        .chunks_exact(8)
        .zip(b[..full].chunks_exact(8))
        .enumerate()
    {
        if word(ca) != word(cb) {
            for (l, (&x, &y)) in ca.iter().zip(cb).enumerate() {
                if x != y {
                    f(8 * w + l, x, y);
                }
            }
        }
    }
    for j in full..n {
        if a[j] != b[j] {
            f(j, a[j], b[j]);
        }
    }
}

/// Code `q − z` of `x` with effective scale `t`, zero `z` and clamp `[lo, hi]`, as in
/// [`asym_code`](super::rtn::asym_code) but in float so that it vectorizes (identical results:
/// every value involved is an exactly representable integer).
#[inline(always)]
fn code(x: f32, t: f32, z: f32, lo: f32, hi: f32) -> f32 {
    ((x / t).round_ties_even() + z).clamp(lo, hi) - z
}

/// Replays one group's ops of one row on the columns `cols` of `C` (row-major, `m` columns):
/// code changes update `y`, emits add `t·y` to the candidate's row of `acc` `[candidates, len]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn replay_group<const F: bool>(
    ops: &[u32],
    t: &[f32],
    c: &[f32],
    m: usize,
    cols: Range<usize>,
    y: &mut [f32],
    acc: &mut [f32],
) {
    let len = cols.len();
    if len % RW != 0 {
        return replay_group_any::<F>(ops, t, c, m, cols, y, acc);
    }
    // Sub-chunks of RW columns whose `y` lives in registers across the ops.
    for s0 in (0..len).step_by(RW) {
        let mut yr = [0f32; RW];
        yr.copy_from_slice(&y[s0..s0 + RW]);
        for &op in ops {
            if op & EMIT != 0 {
                let cand = (op & !EMIT) as usize;
                let tv = t[cand];
                let d = &mut acc[cand * len + s0..cand * len + s0 + RW];
                for (d, &yv) in d.iter_mut().zip(yr.iter()) {
                    *d = fma::<F>(tv, yv, *d);
                }
            } else {
                let j = (op & 0x00ff_ffff) as usize;
                let delta = ((op >> 24) as i32 - 64) as f32;
                let base = j * m + cols.start + s0;
                let cj = &c[base..base + RW];
                for (yv, &cv) in yr.iter_mut().zip(cj) {
                    *yv = fma::<F>(delta, cv, *yv);
                }
            }
        }
    }
}

/// Register width of the replay's `y` (floats).
const RW: usize = 64;

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn replay_group_any<const F: bool>(
    ops: &[u32],
    t: &[f32],
    c: &[f32],
    m: usize,
    cols: Range<usize>,
    y: &mut [f32],
    acc: &mut [f32],
) {
    let len = cols.len();
    for &op in ops {
        if op & EMIT != 0 {
            let cand = (op & !EMIT) as usize;
            let tv = t[cand];
            for (d, &yv) in acc[cand * len..(cand + 1) * len].iter_mut().zip(y.iter()) {
                *d = fma::<F>(tv, yv, *d);
            }
        } else {
            let j = (op & 0x00ff_ffff) as usize;
            let delta = ((op >> 24) as i32 - 64) as f32;
            for (yv, &cv) in y.iter_mut().zip(&c[j * m + cols.start..j * m + cols.end]) {
                *yv = fma::<F>(delta, cv, *yv);
            }
        }
    }
}

/// Adds each candidate's share of the loss on the columns `cols`, from `a = C w` and
/// `acc[c] = C ŵ_c` (both `len` long).
#[inline(always)]
fn tile_losses(
    w: &[f32],
    plan: &mut RowPlan,
    direct: bool,
    g: usize,
    cols: Range<usize>,
    a: &[f32],
    acc: &[f32],
) {
    let (m0, m1) = (cols.start, cols.end);
    let len = m1 - m0;
    let ng = w.len() / g;
    for (c, loss) in plan.loss.iter_mut().enumerate() {
        let p = &acc[c * len..(c + 1) * len];
        let mut lanes = [0f64; 8];
        if direct {
            // ‖X e‖² over these tokens: X e = a − p.
            for (ch_a, ch_p) in a.chunks(8).zip(p.chunks(8)) {
                for ((l, &av), &pv) in lanes.iter_mut().zip(ch_a).zip(ch_p) {
                    let d = av - pv;
                    *l += (d * d) as f64;
                }
            }
        } else {
            // eᵀ (H e) over these columns of H (m indexes K): H e = a − p.
            let cg = &plan.cg[c * ng..(c + 1) * ng];
            let mut m = m0;
            while m < m1 {
                let gi = m / g;
                let end = ((gi + 1) * g).min(m1);
                let [t, z, lo, hi] = cg[gi];
                let seg = m - m0..end - m0;
                for ((ch_w, ch_a), ch_p) in w[m..end]
                    .chunks(8)
                    .zip(a[seg.clone()].chunks(8))
                    .zip(p[seg].chunks(8))
                {
                    for (((l, &wv), &av), &pv) in lanes.iter_mut().zip(ch_w).zip(ch_a).zip(ch_p) {
                        let e = wv - t * code(wv, t, z, lo, hi);
                        *l += (e * (av - pv)) as f64;
                    }
                }
                m = end;
            }
        }
        let mut total = 0f64;
        for l in lanes {
            total += l;
        }
        *loss += total;
    }
}
