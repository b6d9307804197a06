//! Smoothing: percentile clipping (DGQ eq. 7) and SmoothQuant, and the folds into the preceding
//! norm / linear and the following weights.
