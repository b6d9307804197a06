//! The pipeline's seam to the DGQ two-phase search (`dgq_core::quant::search`): the calibration
//! Hessian, and the search with the numbers the per-layer report keeps.

use dgq_core::quant::dual_grained::DualGrainedWeight;
use dgq_core::DgqConfig;
use ndarray::ArrayView2;

use crate::error::Result;

pub(crate) use dgq_core::quant::search::Hessian;

/// Output-MSE numbers of one search (per token and output channel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchStats {
    pub mse_rtn: f64,
    pub mse_final: f64,
}

/// The DGQ two-phase weight search on a calibration Hessian.
pub(crate) fn dgq_search(
    w: ArrayView2<f32>,
    h: &Hessian,
    cfg: &DgqConfig,
) -> Result<(DualGrainedWeight, Option<SearchStats>)> {
    let (q, r) = dgq_core::quant::search::search_with_hessian_report(w, h, cfg)?;
    Ok((
        q,
        Some(SearchStats {
            mse_rtn: r.mse_rtn(),
            mse_final: r.mse_final(),
        }),
    ))
}
