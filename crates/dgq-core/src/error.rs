//! One error type for the crate. Every failure a caller can cause (shapes, configs, non-finite
//! data, files) is a value of [`Error`], never a panic.

use std::path::PathBuf;

/// Result alias for dgq-core.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in dgq-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array's shape does not fit the operation.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// The group size is zero, odd where packing needs it even, or does not divide K.
    #[error("group size {group_size} is invalid for K = {k}: {reason}")]
    GroupSize {
        k: usize,
        group_size: usize,
        reason: &'static str,
    },
    /// A configuration field is out of its valid range.
    #[error("invalid config: {field} = {value}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A NaN or infinity where finite data is required.
    #[error("{what} contains a non-finite value at index {index:?}")]
    NonFinite { what: String, index: Vec<usize> },
    /// A weight the format cannot represent within its stated error: the largest magnitude of a
    /// row (or of a group, for group-scaled formats) is above what its f16 scale reaches, or is
    /// not zero but so small that the f16 scale loses its precision. An all-zero row or group is
    /// always representable.
    #[error(
        "{what}: row {row}{} has max |w| = {amax:e}, outside the range the format represents \
         ({min:e} to {max:e}, or exactly zero)",
        .group.map(|g| format!(" group {g}")).unwrap_or_default()
    )]
    OutOfRange {
        what: String,
        row: usize,
        group: Option<usize>,
        amax: f32,
        min: f32,
        max: f32,
    },
    /// A quantized tensor breaks one of its invariants (range, overflow bound, sign).
    #[error("invalid quantized tensor {tensor}: {problem}")]
    Invariant { tensor: String, problem: String },
    /// A packed file is malformed: the tensor (or metadata key) it concerns, and what is wrong.
    #[error("malformed packed file: {tensor}: {problem}")]
    Format { tensor: String, problem: String },
    /// The packed file declares a format version this build cannot read.
    #[error("unsupported packed format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: String, supported: u32 },
    /// File-system error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[allow(dead_code)] // constructors used by modules that land in parallel
impl Error {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    pub(crate) fn config(field: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Error::Config {
            field,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn invariant(tensor: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Invariant {
            tensor: tensor.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn format(tensor: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Format {
            tensor: tensor.into(),
            problem: problem.into(),
        }
    }
}

/// Checks that every element is finite; the error names the first offending index.
pub fn check_finite<'a, D: ndarray::Dimension>(
    what: &str,
    a: impl Into<ndarray::ArrayView<'a, f32, D>>,
) -> Result<()> {
    let a = a.into();
    for (idx, v) in a.indexed_iter() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: what.to_string(),
                index: ndarray::IntoDimension::into_dimension(idx)
                    .as_array_view()
                    .to_vec(),
            });
        }
    }
    Ok(())
}

/// Checks a group size against K (non-zero, divides K).
pub fn check_group_size(k: usize, group_size: usize) -> Result<()> {
    if group_size == 0 {
        return Err(Error::GroupSize {
            k,
            group_size,
            reason: "must be positive",
        });
    }
    if k % group_size != 0 {
        return Err(Error::GroupSize {
            k,
            group_size,
            reason: "must divide K",
        });
    }
    Ok(())
}

/// Checks that every group of `group_size` columns of every row of `w` is all zero or has its
/// largest magnitude in `[min, max]` (`group_size == K`: whole rows, reported without a group).
/// `w` must be finite (checked before) and `group_size` must divide K.
pub(crate) fn check_range(
    what: &str,
    w: ndarray::ArrayView2<f32>,
    group_size: usize,
    min: f32,
    max: f32,
) -> Result<()> {
    let k = w.ncols();
    let g = group_size.clamp(1, k.max(1));
    for (r, row) in w.outer_iter().enumerate() {
        for (gi, chunk) in row.exact_chunks(g).into_iter().enumerate() {
            let amax = chunk.iter().fold(0f32, |a, &x| a.max(x.abs()));
            if amax != 0.0 && !(min..=max).contains(&amax) {
                return Err(Error::OutOfRange {
                    what: what.to_string(),
                    row: r,
                    group: (g < k).then_some(gi),
                    amax,
                    min,
                    max,
                });
            }
        }
    }
    Ok(())
}
