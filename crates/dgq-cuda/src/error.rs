//! One error type for dgq-cuda. Every failure a caller can cause is a value, checked before
//! anything is launched.

/// Result alias for dgq-cuda.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in dgq-cuda.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The crate was compiled without nvcc (or libclang), so it holds no kernels.
    #[error(
        "dgq-cuda was built without CUDA kernels (nvcc or libclang not found at build time); run \
         scripts/setup-toolchain.sh, source its env.sh and rebuild"
    )]
    NotBuiltWithCuda,
    /// No usable CUDA driver or device.
    #[error("no usable CUDA device: {0}")]
    NoDevice(String),
    /// The device is not one the kernels are built for.
    #[error("unsupported device {name} (compute capability {major}.{minor}): kernels are built for sm_90a (H100/H200)")]
    UnsupportedDevice {
        name: String,
        major: i32,
        minor: i32,
    },
    /// A shape or parameter the kernels do not support (documented limits).
    #[error("unsupported {what}: {reason}")]
    Unsupported { what: String, reason: String },
    /// A buffer's length does not match the operation.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// A device pointer lacks the alignment the kernel's vector loads need.
    #[error("{what} must be {align}-byte aligned, but its address is {addr:#x}")]
    Misaligned {
        what: &'static str,
        align: usize,
        addr: u64,
    },
    /// A scalar argument is out of range (e.g. a non-positive static scale).
    #[error("invalid argument {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    /// The buffers live on another device than the stream.
    #[error("{what} lives on device {found}, but the stream is on device {expected}")]
    WrongDevice {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// A prepared weight that does not decode back to a valid canonical weight.
    #[error("corrupt prepared weight: {0}")]
    Layout(String),
    /// The kernel launcher rejected the arguments or the launch failed.
    #[error("kernel launch failed with status {code}: {message}")]
    Launch { code: i32, message: String },
    /// An error from the CUDA driver (allocation, copy, event).
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// An error from dgq-core (invalid weight, group size).
    #[error(transparent)]
    Core(#[from] dgq_core::Error),
}

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

    pub(crate) fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
