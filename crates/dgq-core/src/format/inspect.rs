//! Header-only listing of a packed file, for `dgq inspect` and the C API.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::meta::{self, Parsed, Role};
use super::read::st_error;
use super::{Scheme, FORMAT_VERSION, MAX_HEADER_BYTES};
use crate::act::ActQuant;
use crate::error::{Error, Result};

/// One layer as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// Storage scheme.
    pub scheme: Scheme,
    /// Logical shape (`[N, K]` for quantized layers).
    pub shape: Vec<usize>,
    /// Group size along K (quantized layers only).
    pub group_size: Option<usize>,
    /// Bits per stored weight element: 4, 8, 16 or 32.
    pub bits: u32,
    /// Activation quantization.
    pub act: ActQuant,
    /// Whether a bias is stored.
    pub has_bias: bool,
    /// Whether an input smoothing divisor is stored.
    pub has_smooth: bool,
    /// Bytes of tensor data the layer occupies in the file (all its tensors).
    pub bytes: u64,
}

/// A packed file's header, validated except for tensor data (whose CRCs and values only
/// [`super::read()`] checks).
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    /// Format version (always [`FORMAT_VERSION`] for a file this build accepts).
    pub format_version: u32,
    /// Source model, as stored.
    pub source_model: String,
    /// Method, as stored.
    pub method: String,
    /// Free-form extras.
    pub metadata: BTreeMap<String, String>,
    /// Layers in name order.
    pub layers: Vec<LayerInfo>,
    /// Size of the JSON header (with padding), in bytes.
    pub header_bytes: u64,
    /// Total file size in bytes.
    pub file_bytes: u64,
}

impl FileInfo {
    /// Number of logical weight elements over all layers.
    pub fn weight_elements(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }
}

fn info(p: Parsed, header_bytes: usize, file_bytes: u64) -> FileInfo {
    let layers = p
        .layers
        .into_iter()
        .map(|l| LayerInfo {
            bits: l.meta.scheme.weight_bits(),
            has_bias: l.tensors.iter().any(|(s, _)| s.role == Role::Bias),
            has_smooth: l.tensors.iter().any(|(s, _)| s.role == Role::Smooth),
            bytes: l
                .tensors
                .iter()
                .map(|(_, (a, b))| b.saturating_sub(*a) as u64)
                .sum(),
            scheme: l.meta.scheme,
            shape: l.meta.shape,
            group_size: l.meta.group_size,
            act: l.act,
            name: l.name,
        })
        .collect();
    FileInfo {
        format_version: FORMAT_VERSION,
        source_model: p.source_model,
        method: p.method,
        metadata: p.extras,
        layers,
        header_bytes: header_bytes as u64,
        file_bytes,
    }
}

/// [`inspect`] for a file held in memory.
pub fn inspect_bytes(bytes: &[u8]) -> Result<FileInfo> {
    let (n, st) = safetensors::SafeTensors::read_metadata(bytes).map_err(st_error)?;
    Ok(info(meta::parse(&st)?, n, bytes.len() as u64))
}

/// Lists a packed file's layers reading only its header: every header-level check of
/// [`super::read()`] is made (format, version, metadata CRC, declared tensors' presence, dtypes
/// and shapes, no extra tensors, data size), but tensor data is neither read nor CRC-checked.
pub fn inspect(path: &Path) -> Result<FileInfo> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_bytes = f.seek(SeekFrom::End(0)).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    if file_bytes < 8 {
        return Err(Error::format(
            "<header>",
            format!("file is {file_bytes} bytes, shorter than the 8-byte header length"),
        ));
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES as u64 || n > file_bytes - 8 {
        return Err(Error::format(
            "<header>",
            format!("header length {n} exceeds the file ({file_bytes} bytes) or the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    let n = n as usize;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(io)?;
    let text = std::str::from_utf8(&header)
        .map_err(|e| Error::format("<header>", format!("header is not UTF-8: {e}")))?;
    let st: safetensors::tensor::Metadata = serde_json::from_str(text)
        .map_err(|e| Error::format("<header>", format!("not a valid safetensors header: {e}")))?;
    let expected = 8 + n as u64 + st.data_len() as u64;
    if expected != file_bytes {
        return Err(Error::format(
            "<header>",
            format!("the header describes {expected} bytes but the file has {file_bytes}"),
        ));
    }
    Ok(info(meta::parse(&st)?, n, file_bytes))
}
