//! Rotary position embeddings in the Hugging Face ("half-split", GPT-NeoX) convention: within each
//! head of size `d`, element `i < d/2` is rotated together with element `i + d/2` by the angle
//! `pos · inv_freq[i]`, `inv_freq[i] = base^(−2i/d)` (optionally rescaled, see [`RopeScaling`]).
//!
//! GGUF files written by llama.cpp's converter store the Q and K projections of the `llama`
//! architecture with rows permuted for the *interleaved* convention (pairs `(2i, 2i+1)`); the GGUF
//! loader undoes that permutation ([`unpermute_rows`]) so one rotary implementation serves both
//! sources.

use ndarray::{Array1, Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Frequency rescaling of the rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f32 },
    /// LLaMA 3.1's piecewise rescaling (long wavelengths divided by `factor`, short ones kept,
    /// a smooth blend in between).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Explicit per-frequency divisors `[head_dim / 2]` (GGUF's `rope_freqs.weight`).
    Factors(Vec<f32>),
}

/// Precomputed rotary parameters for one head size.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    head_dim: usize,
    inv_freq: Array1<f64>,
}

impl Rope {
    /// Builds the inverse frequencies for heads of `head_dim` (even) with the given base.
    pub fn new(head_dim: usize, base: f32, scaling: Option<&RopeScaling>) -> Result<Self> {
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::config(
                "head_dim",
                head_dim,
                "rotary embeddings need an even head size",
            ));
        }
        if !(base.is_finite() && base > 1.0) {
            return Err(Error::config("rope_theta", base, "must be finite and > 1"));
        }
        let half = head_dim / 2;
        let base = base as f64;
        let mut inv_freq: Array1<f64> = (0..half)
            .map(|i| base.powf(-(2.0 * i as f64) / head_dim as f64))
            .collect();
        match scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => {
                check_factor("rope_scaling.factor", *factor)?;
                inv_freq.mapv_inplace(|f| f / *factor as f64);
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                check_factor("rope_scaling.factor", *factor)?;
                check_factor("rope_scaling.low_freq_factor", *low_freq_factor)?;
                check_factor("rope_scaling.high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor || *original_max_position_embeddings == 0 {
                    return Err(Error::config(
                        "rope_scaling",
                        format!("{scaling:?}"),
                        "needs high_freq_factor > low_freq_factor and a positive original context",
                    ));
                }
                let (factor, lo, hi) = (
                    *factor as f64,
                    *low_freq_factor as f64,
                    *high_freq_factor as f64,
                );
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / lo;
                let high_wavelen = old / hi;
                inv_freq.mapv_inplace(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                });
            }
            Some(RopeScaling::Factors(factors)) => {
                if factors.len() != half {
                    return Err(Error::shape("rope frequency factors", half, factors.len()));
                }
                for (f, &d) in inv_freq.iter_mut().zip(factors) {
                    check_factor("rope_freqs", d)?;
                    *f /= d as f64;
                }
            }
        }
        Ok(Rope { head_dim, inv_freq })
    }

    /// Head size this rotary was built for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The (possibly rescaled) inverse frequencies `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &Array1<f64> {
        &self.inv_freq
    }

    /// cos/sin tables `[T, head_dim/2]` for positions `start..start+T`.
    pub(crate) fn tables(&self, start: usize, t: usize) -> (Array2<f32>, Array2<f32>) {
        let half = self.head_dim / 2;
        let mut cos = Array2::<f32>::zeros((t, half));
        let mut sin = Array2::<f32>::zeros((t, half));
        for p in 0..t {
            let pos = (start + p) as f64;
            for i in 0..half {
                let a = pos * self.inv_freq[i];
                cos[[p, i]] = a.cos() as f32;
                sin[[p, i]] = a.sin() as f32;
            }
        }
        (cos, sin)
    }

    /// Rotates `x[T, n_heads·head_dim]` in place for positions `start..start+T`.
    pub fn apply(&self, x: ArrayViewMut2<f32>, start: usize) -> Result<()> {
        if x.ncols() % self.head_dim != 0 {
            return Err(Error::shape(
                "rotary input columns (a multiple of head_dim)",
                self.head_dim,
                x.ncols(),
            ));
        }
        let (cos, sin) = self.tables(start, x.nrows());
        self.apply_with(x, &cos, &sin);
        Ok(())
    }

    pub(crate) fn apply_with(
        &self,
        mut x: ArrayViewMut2<f32>,
        cos: &Array2<f32>,
        sin: &Array2<f32>,
    ) {
        let hd = self.head_dim;
        let half = hd / 2;
        x.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(p, mut row)| {
                let (c, s) = (cos.row(p), sin.row(p));
                for mut head in row.exact_chunks_mut(hd) {
                    for i in 0..half {
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * c[i] - b * s[i];
                        head[i + half] = b * c[i] + a * s[i];
                    }
                }
            });
    }
}

fn check_factor(field: &'static str, v: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, v, "must be finite and > 0"))
    }
}

/// Index map of llama.cpp's Q/K permutation for one head of size `hd`: Hugging Face row
/// `half·(hd/2) + i` (`half ∈ {0, 1}`) is stored at GGUF row `2i + half`.
#[inline]
fn gguf_row_of_hf(r: usize, hd: usize) -> usize {
    let half = hd / 2;
    let (h, i) = (r / half, r % half);
    2 * i + h
}

/// Undoes llama.cpp's interleaved-RoPE permutation of a Q or K projection: `w` has
/// `n_heads · head_dim` rows in GGUF order; the result has them in Hugging Face order.
/// Works on weights `[N, K]` (rows) and, via a single-column view, on biases `[N]`.
pub fn unpermute_rows(w: &Array2<f32>, n_heads: usize, head_dim: usize) -> Result<Array2<f32>> {
    if head_dim == 0 || head_dim % 2 != 0 || w.nrows() != n_heads * head_dim {
        return Err(Error::shape(
            "GGUF Q/K projection rows (n_heads × even head_dim)",
            format!("{n_heads} × {head_dim}"),
            w.nrows(),
        ));
    }
    let mut out = Array2::<f32>::zeros(w.raw_dim());
    for h in 0..n_heads {
        for r in 0..head_dim {
            let src = h * head_dim + gguf_row_of_hf(r, head_dim);
            out.row_mut(h * head_dim + r).assign(&w.row(src));
        }
    }
    Ok(out)
}

/// The inverse of [`unpermute_rows`]: Hugging Face order to GGUF (interleaved) order, as
/// llama.cpp's converter does. Used to write test GGUFs.
pub fn permute_rows(w: &Array2<f32>, n_heads: usize, head_dim: usize) -> Result<Array2<f32>> {
    if head_dim == 0 || head_dim % 2 != 0 || w.nrows() != n_heads * head_dim {
        return Err(Error::shape(
            "Q/K projection rows (n_heads × even head_dim)",
            format!("{n_heads} × {head_dim}"),
            w.nrows(),
        ));
    }
    let mut out = Array2::<f32>::zeros(w.raw_dim());
    for h in 0..n_heads {
        for r in 0..head_dim {
            let dst = h * head_dim + gguf_row_of_hf(r, head_dim);
            out.row_mut(dst).assign(&w.row(h * head_dim + r));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_follows_the_reference_formula() {
        // LLaMA 3.1 8B's parameters: base 500000, factor 8, low 1, high 4, original 8192.
        let plain = Rope::new(128, 500000.0, None).unwrap();
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let scaled = Rope::new(128, 500000.0, Some(&s)).unwrap();
        let (mut kept, mut divided, mut blended) = (0, 0, 0);
        for (&f, &g) in plain.inv_freq().iter().zip(scaled.inv_freq()) {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < 8192.0 / 4.0 {
                assert_eq!(g, f);
                kept += 1;
            } else if wavelen > 8192.0 {
                assert!((g - f / 8.0).abs() <= 1e-15 * f);
                divided += 1;
            } else {
                // Between the two: strictly between f/8 and f.
                assert!(g > f / 8.0 && g < f);
                blended += 1;
            }
        }
        assert!(
            kept > 0 && divided > 0 && blended > 0,
            "{kept} {divided} {blended}"
        );
        let lin = Rope::new(8, 10000.0, Some(&RopeScaling::Linear { factor: 4.0 })).unwrap();
        assert!((lin.inv_freq()[1] - 10000f64.powf(-0.25) / 4.0).abs() < 1e-15);
        assert!(Rope::new(7, 10000.0, None).is_err());
        assert!(Rope::new(8, 10000.0, Some(&RopeScaling::Factors(vec![1.0; 3]))).is_err());
    }

    #[test]
    fn rotation_preserves_norms_and_position_zero_is_identity() {
        let rope = Rope::new(8, 10000.0, None).unwrap();
        let x = Array2::from_shape_fn((3, 16), |(i, j)| (i as f32 - 1.0) * 0.3 + j as f32 * 0.1);
        let mut y = x.clone();
        rope.apply(y.view_mut(), 0).unwrap();
        assert_eq!(y.row(0), x.row(0));
        for (a, b) in x.rows().into_iter().zip(y.rows()) {
            for (ha, hb) in a.exact_chunks(8).into_iter().zip(b.exact_chunks(8)) {
                let (na, nb) = (ha.dot(&ha), hb.dot(&hb));
                assert!((na - nb).abs() < 1e-5 * na.max(1.0));
            }
        }
        assert!(rope.apply(Array2::zeros((1, 12)).view_mut(), 0).is_err());
    }
}
