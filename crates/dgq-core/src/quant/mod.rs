//! Weight quantizers. One module per scheme:
//!
//! - [`rtn`]: round-to-nearest primitives (symmetric/asymmetric, int4/int8, per-tensor,
//!   per-channel, per-group).
//! - [`dual_grained`]: the DGQ weight type (u4 `q`, zero points, INT8 group scales `S2`, FP16
//!   channel scales `s1`) and its direct RTN decomposition (paper Table 1, "RTN").
//! - [`search`]: the two-phase grid search (paper eq. 3 and 6).
//! - [`sym`]: symmetric integer weights with FP16 group scales (W8A8, FineQuant).
//! - [`fine_grained`]: FineQuant's adaptive-granularity weight-only quantization.

pub mod dual_grained;
pub mod fine_grained;
pub mod rtn;
pub mod search;
pub mod sym;

/// Integer width of a quantized weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Bits {
    #[serde(rename = "int4")]
    Int4,
    #[serde(rename = "int8")]
    Int8,
}

impl Bits {
    /// Number of bits.
    pub fn bits(self) -> u32 {
        match self {
            Bits::Int4 => 4,
            Bits::Int8 => 8,
        }
    }
    /// Largest magnitude of a symmetric code: 7 or 127 (the code −2^(b−1) is unused).
    pub fn sym_max(self) -> i32 {
        match self {
            Bits::Int4 => 7,
            Bits::Int8 => 127,
        }
    }
    /// Largest unsigned code for asymmetric quantization: 15 or 255.
    pub fn asym_max(self) -> i32 {
        match self {
            Bits::Int4 => 15,
            Bits::Int8 => 255,
        }
    }
}

/// Which elements share one scale (and zero point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole matrix.
    PerTensor,
    /// One scale per output channel (row of `[N, K]`).
    PerChannel,
    /// One scale per `g` consecutive input channels of each row; `g` must divide K.
    PerGroup(usize),
}

impl Granularity {
    /// Group size this granularity means for a `[N, K]` matrix (per-tensor is handled by callers).
    pub fn group_size(self, k: usize) -> usize {
        match self {
            Granularity::PerTensor | Granularity::PerChannel => k,
            Granularity::PerGroup(g) => g,
        }
    }
}
