//! DGQ two-phase grid search (paper eq. 3 and 6).

/// How the output-MSE loss is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossMode {
    /// Pick the cheaper of the two below from the shapes.
    #[default]
    Auto,
    /// `eᵀ H e` with `H = XᵀX` (per group the `g×g` diagonal block in phase 1).
    Hessian,
    /// `‖X e‖²`, multiplying the calibration activations for every candidate.
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
