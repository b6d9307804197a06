//! One error type for the crate. Malformed or missing files, missing tensors, wrong shapes,
//! unsupported formats and bad configs are values of [`Error`], never panics.

use std::path::PathBuf;

/// Result alias for dgq-model.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in dgq-model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from dgq-core (shapes, non-finite data, quantizer invariants).
    #[error(transparent)]
    Core(#[from] dgq_core::Error),
    /// File-system error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, the sharded index) does not parse or lacks a field.
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A model configuration value is missing, out of range or inconsistent.
    #[error("invalid model config: {field} = {value}: {reason}")]
    Config {
        field: String,
        value: String,
        reason: String,
    },
    /// The architecture or a feature of it is not supported by these decoders.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("tensor {name} is missing from the checkpoint")]
    MissingTensor { name: String },
    /// A tensor has a shape other than the config implies.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor is stored in a dtype the loader does not read (safetensors: not f32/f16/bf16).
    #[error("tensor {name} has unsupported dtype {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    /// A GGUF tensor type this build cannot dequantize (e.g. the IQ* types).
    #[error("GGUF tensor {tensor} has unsupported ggml type {ggml_type}")]
    UnsupportedGgufType { tensor: String, ggml_type: String },
    /// A safetensors file is malformed (bad header, truncated data, overlapping offsets...).
    #[error("malformed safetensors file {path}: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    /// A GGUF file is malformed or lacks a metadata key.
    #[error("malformed GGUF file {path}: {problem}")]
    Gguf { path: PathBuf, problem: String },
    /// The tokenizer cannot be built or fails on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A token id is outside the vocabulary.
    #[error(
        "token id {token} at position {position} is out of the vocabulary (size {vocab_size})"
    )]
    TokenOutOfRange {
        token: u32,
        position: usize,
        vocab_size: usize,
    },
    /// A sequence is longer than the model (or the request) allows.
    #[error("sequence of {len} tokens exceeds the limit of {max}: {reason}")]
    TooLong {
        len: usize,
        max: usize,
        reason: &'static str,
    },
    /// An array's shape does not fit the operation.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// An argument is out of its valid range (window sizes, counts...).
    #[error("invalid argument {name} = {value}: {reason}")]
    Argument {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A sequence would grow past the decoder's context (prompt too long, or generation ran
    /// out of room).
    #[error("the sequence would hold {held} + {adding} tokens, more than the context of {max}")]
    ContextOverflow {
        /// Tokens already held.
        held: usize,
        /// Tokens being appended.
        adding: usize,
        /// The decoder's context.
        max: usize,
    },
    /// A packed file does not fit the model it is applied to: a layer the model lacks, one
    /// of another shape, or a linear of the model the file lacks.
    #[error("the packed file does not fit this model: {layer}: {reason}")]
    PackedMismatch { layer: String, reason: String },
    /// A packed file was made from another model than the one it is applied to: the model
    /// fingerprint it records differs from the loaded model's.
    #[error(
        "the packed file was made from another model (source {source_model:?}, fingerprint \
         {expected}); the loaded model's fingerprint is {found}"
    )]
    OtherModel {
        source_model: String,
        expected: String,
        found: String,
    },
    /// A NaN or infinity appeared where finite data is required.
    #[error("{what} contains a non-finite value")]
    NonFinite { what: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::Config {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

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

    pub(crate) fn gguf(path: impl Into<PathBuf>, problem: impl ToString) -> Self {
        Error::Gguf {
            path: path.into(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn argument(name: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Error::Argument {
            name,
            value: value.to_string(),
            reason,
        }
    }
}
