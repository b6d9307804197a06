//! Seam to the DGQ two-phase search of `dgq_core::quant::search` (the calibration Hessian and the
//! search with its report). Until that module lands on this branch, the Hessian is accumulated
//! here and the "search" is the direct RTN decomposition, so the pipeline builds and runs.
// TODO(merge h/quant): replace the body with `pub(crate) use dgq_core::quant::search::*` calls.

use dgq_core::quant::dual_grained::DualGrainedWeight;
use dgq_core::DgqConfig;
use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// `H = Σ XᵀX` `[K, K]` over calibration batches, f64 storage.
#[derive(Debug, Clone)]
pub(crate) struct Hessian {
    h: Array2<f64>,
    tokens: usize,
}

impl Hessian {
    pub(crate) fn new(k: usize) -> Self {
        Hessian {
            h: Array2::zeros((k, k)),
            tokens: 0,
        }
    }
    pub(crate) fn add_batch(&mut self, x: ArrayView2<f32>) -> Result<()> {
        if x.ncols() != self.h.nrows() {
            return Err(Error::shape(
                "hessian batch columns",
                self.h.nrows(),
                x.ncols(),
            ));
        }
        let g = dgq_core::reference::matmul_f32_nt(x.t(), x.t())?;
        self.h.zip_mut_with(&g, |h, &v| *h += v as f64);
        self.tokens += x.nrows();
        Ok(())
    }
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }
    pub(crate) fn matrix(&self) -> ArrayView2<'_, f64> {
        self.h.view()
    }
}

/// Output-MSE numbers of one search (per token and output channel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchStats {
    pub mse_rtn: f64,
    pub mse_final: f64,
}

/// The DGQ weight search on a calibration Hessian.
pub(crate) fn dgq_search(
    w: ArrayView2<f32>,
    _h: &Hessian,
    cfg: &DgqConfig,
) -> Result<(DualGrainedWeight, Option<SearchStats>)> {
    Ok((DualGrainedWeight::rtn(w, cfg.group_size)?, None))
}
