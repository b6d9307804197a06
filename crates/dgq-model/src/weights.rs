//! Tensor sources: a Hugging Face safetensors directory (single file or sharded) and a GGUF file.
//! Both hand out f32 tensors by name, row-major with the slowest axis first (`[N, K]` for a
//! linear weight), and remember which names were used so the loader can report leftovers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;
use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// Where tensors come from.
pub(crate) trait TensorSource {
    /// Every tensor name in the source.
    fn names(&self) -> Vec<String>;
    /// Shape (slowest axis first), if the tensor exists.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Storage type label, for the load report.
    fn dtype(&self, name: &str) -> Option<String>;
    /// The tensor converted (or dequantized) to f32, row-major.
    fn read_f32(&mut self, name: &str) -> Result<Vec<f32>>;
}

/// Wraps a source with shape checks and bookkeeping of used names.
pub(crate) struct Weights<S> {
    pub(crate) src: S,
    used: BTreeSet<String>,
}

impl<S: TensorSource> Weights<S> {
    pub(crate) fn new(src: S) -> Self {
        Weights {
            src,
            used: BTreeSet::new(),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.src.shape(name).is_some()
    }

    /// Marks a tensor as consumed without reading it (e.g. a tied `lm_head.weight` duplicate).
    pub(crate) fn skip(&mut self, name: &str) {
        if self.has(name) {
            self.used.insert(name.to_string());
        }
    }

    /// Checks that tensor `name` exists with shape `expected`, without reading it.
    pub(crate) fn check(&self, name: &str, expected: &[usize]) -> Result<()> {
        let shape = self.src.shape(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        if shape != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: shape,
            });
        }
        Ok(())
    }

    fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.check(name, expected)?;
        let data = self.src.read_f32(name)?;
        if data.len() != expected.iter().product::<usize>() {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: vec![data.len()],
            });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("tensor {name}"),
            });
        }
        self.used.insert(name.to_string());
        Ok(data)
    }

    /// A 2-D tensor of exactly `[rows, cols]`.
    pub(crate) fn take2(&mut self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        let data = self.take(name, &[rows, cols])?;
        Array2::from_shape_vec((rows, cols), data)
            .map_err(|e| Error::shape(name, format!("[{rows}, {cols}]"), e))
    }

    /// A 1-D tensor of exactly `[n]`.
    pub(crate) fn take1(&mut self, name: &str, n: usize) -> Result<Array1<f32>> {
        Ok(Array1::from(self.take(name, &[n])?))
    }

    /// Names present in the source but never taken or skipped.
    pub(crate) fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .src
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(n))
            .collect();
        v.sort();
        v
    }

    /// Number of tensors per storage type among the used ones.
    pub(crate) fn dtype_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in &self.used {
            if let Some(t) = self.src.dtype(n) {
                *m.entry(t).or_insert(0) += 1;
            }
        }
        m
    }
}

// ------------------------------------------------------------------------------------------------
// safetensors

struct StFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    meta: Metadata,
}

/// The tensors of one or more `.safetensors` files (a sharded checkpoint is several).
pub(crate) struct SafetensorsSource {
    files: Vec<StFile>,
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens `model.safetensors` or, if present, every shard listed in
    /// `model.safetensors.index.json` inside `dir`.
    pub(crate) fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: index_path.clone(),
                    source,
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Safetensors {
                    path: index_path.clone(),
                    problem: "no weight_map object".into(),
                })?;
            let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Safetensors {
                    path: index_path.clone(),
                    problem: format!("weight_map entry for {name} is not a file name"),
                })?;
                // Shard names are plain file names; refuse anything that walks out of `dir`.
                if Path::new(file).components().count() != 1 || file == ".." {
                    return Err(Error::Safetensors {
                        path: index_path.clone(),
                        problem: format!("shard name {file:?} is not a plain file name"),
                    });
                }
                shards
                    .entry(file.to_string())
                    .or_default()
                    .push(name.clone());
            }
            let paths: Vec<PathBuf> = shards.keys().map(|f| dir.join(f)).collect();
            let src = Self::open_files(&paths)?;
            for (file, names) in &shards {
                for name in names {
                    if !src.index.contains_key(name) {
                        return Err(Error::Safetensors {
                            path: dir.join(file),
                            problem: format!(
                                "index lists tensor {name} but the shard does not contain it"
                            ),
                        });
                    }
                }
            }
            Ok(src)
        } else {
            Self::open_files(&[single])
        }
    }

    /// Opens the given files; a tensor name present in two files is an error.
    pub(crate) fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            for name in meta.tensors().keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        problem: format!("tensor {name} appears in more than one file"),
                    });
                }
            }
            files.push(StFile {
                path: path.clone(),
                bytes,
                data_start: 8 + n,
                meta,
            });
        }
        Ok(SafetensorsSource { files, index })
    }

    fn info(&self, name: &str) -> Option<(&StFile, &safetensors::tensor::TensorInfo)> {
        let f = self.files.get(*self.index.get(name)?)?;
        Some((f, f.meta.info(name)?))
    }
}

impl TensorSource for SafetensorsSource {
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.info(name).map(|(_, i)| i.shape.clone())
    }

    fn dtype(&self, name: &str) -> Option<String> {
        self.info(name).map(|(_, i)| format!("{:?}", i.dtype))
    }

    fn read_f32(&mut self, name: &str) -> Result<Vec<f32>> {
        let (f, info) = self.info(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        let (a, b) = info.data_offsets;
        let bytes = f
            .bytes
            .get(f.data_start + a..f.data_start + b)
            .ok_or_else(|| Error::Safetensors {
                path: f.path.clone(),
                problem: format!("data of {name} lies outside the file"),
            })?;
        let out: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(out)
    }
}

// ------------------------------------------------------------------------------------------------
// GGUF

/// A GGUF file: header and metadata parsed and validated at [`open`](GgufFile::open) (every
/// tensor's data lies inside the file, no tensor is empty), tensor data read on demand and
/// dequantized by candle's kernels.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    pub(crate) content: gguf_file::Content,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .field("metadata", &self.content.metadata.len())
            .finish()
    }
}

/// The ggml types this build dequantizes. candle also knows Q8_1 and Q8_K, which are
/// intermediate (activation) types that never appear in model files.
fn dequantizable(t: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(
        t,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
    )
}

impl GgufFile {
    /// Opens and parses the header and metadata of a GGUF file (tensor data is read lazily).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let content = crate::gguf::read_content(path, &mut reader, len)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            reader,
            content,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors, sorted.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut v = TensorSource::names(self);
        v.sort();
        v
    }

    /// Shape of a tensor, slowest axis first (`[N, K]` for a linear weight; GGUF itself lists
    /// dims fastest first).
    pub fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        TensorSource::shape(self, name)
    }

    /// ggml storage type of a tensor (`F32`, `Q4_1`, `Q6K`...).
    pub fn tensor_type(&self, name: &str) -> Option<String> {
        TensorSource::dtype(self, name)
    }

    /// A tensor dequantized to f32, with its row-major shape. Q/K projections are returned as
    /// stored (permuted for interleaved RoPE in `llama` files).
    pub fn read_tensor(&mut self, name: &str) -> Result<ndarray::ArrayD<f32>> {
        let shape = self
            .tensor_shape(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })?;
        let data = self.read_f32(name)?;
        ndarray::ArrayD::from_shape_vec(shape.clone(), data)
            .map_err(|e| Error::shape(format!("tensor {name}"), format!("{shape:?}"), e))
    }

    /// Number of metadata entries.
    pub fn metadata_len(&self) -> usize {
        self.content.metadata.len()
    }

    /// A string metadata value (e.g. `general.architecture`); an error if the key holds another type.
    pub fn metadata_str(&self, key: &str) -> Result<Option<&str>> {
        self.meta_str(key)
    }

    /// An integer metadata value; an error if the key holds another type.
    pub fn metadata_u64(&self, key: &str) -> Result<Option<u64>> {
        self.meta_u64(key)
    }

    /// A metadata value.
    pub(crate) fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    pub(crate) fn meta_u64(&self, key: &str) -> Result<Option<u64>> {
        use gguf_file::Value::*;
        Ok(match self.meta(key) {
            None => None,
            Some(U8(v)) => Some(*v as u64),
            Some(U16(v)) => Some(*v as u64),
            Some(U32(v)) => Some(*v as u64),
            Some(U64(v)) => Some(*v),
            Some(I8(v)) if *v >= 0 => Some(*v as u64),
            Some(I16(v)) if *v >= 0 => Some(*v as u64),
            Some(I32(v)) if *v >= 0 => Some(*v as u64),
            Some(I64(v)) if *v >= 0 => Some(*v as u64),
            Some(v) => {
                return Err(Error::gguf(
                    &self.path,
                    format!("metadata {key} = {v:?} is not a non-negative integer"),
                ))
            }
        })
    }

    pub(crate) fn meta_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.meta_u64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| Error::gguf(&self.path, format!("metadata {key} = {v} is too large"))),
        }
    }

    pub(crate) fn req_usize(&self, key: &str) -> Result<usize> {
        self.meta_usize(key)?
            .ok_or_else(|| Error::gguf(&self.path, format!("missing metadata key {key}")))
    }

    pub(crate) fn meta_f32(&self, key: &str) -> Result<Option<f32>> {
        use gguf_file::Value::*;
        Ok(match self.meta(key) {
            None => None,
            Some(F32(v)) => Some(*v),
            Some(F64(v)) => Some(*v as f32),
            Some(v) => {
                return Err(Error::gguf(
                    &self.path,
                    format!("metadata {key} = {v:?} is not a float"),
                ))
            }
        })
    }

    pub(crate) fn meta_str(&self, key: &str) -> Result<Option<&str>> {
        match self.meta(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(Error::gguf(
                &self.path,
                format!("metadata {key} = {v:?} is not a string"),
            )),
        }
    }

    pub(crate) fn meta_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.meta(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::gguf(
                &self.path,
                format!("metadata {key} = {v:?} is not a bool"),
            )),
        }
    }

    pub(crate) fn meta_str_array(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.meta(key) {
            None => Ok(None),
            Some(gguf_file::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    gguf_file::Value::String(s) => Ok(s.clone()),
                    other => Err(Error::gguf(
                        &self.path,
                        format!("{key} holds a non-string {other:?}"),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(Error::gguf(
                &self.path,
                format!("metadata {key} = {v:?} is not an array"),
            )),
        }
    }

    pub(crate) fn meta_int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        use gguf_file::Value::*;
        match self.meta(key) {
            None => Ok(None),
            Some(Array(items)) => items
                .iter()
                .map(|v| match v {
                    U8(x) => Ok(*x as i64),
                    I8(x) => Ok(*x as i64),
                    U16(x) => Ok(*x as i64),
                    I16(x) => Ok(*x as i64),
                    U32(x) => Ok(*x as i64),
                    I32(x) => Ok(*x as i64),
                    I64(x) => Ok(*x),
                    other => Err(Error::gguf(
                        &self.path,
                        format!("{key} holds a non-integer {other:?}"),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(Error::gguf(
                &self.path,
                format!("metadata {key} = {v:?} is not an array"),
            )),
        }
    }
}

/// candle's message without the backtrace it appends when `RUST_BACKTRACE` is set (a user-facing
/// error is one line; the frames are candle's, not the caller's).
fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", candle_message(inner))
        }
        candle_core::Error::WithPath { inner, path } => {
            format!("{}: {}", path.display(), candle_message(inner))
        }
        e => e.to_string(),
    }
}

impl TensorSource for GgufFile {
    fn names(&self) -> Vec<String> {
        self.content.tensor_infos.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        // candle already reverses GGUF's fastest-first dims to row-major order.
        self.content
            .tensor_infos
            .get(name)
            .map(|i| i.shape.dims().to_vec())
    }

    fn dtype(&self, name: &str) -> Option<String> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| format!("{:?}", i.ggml_dtype))
    }

    fn read_f32(&mut self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })?;
        if !dequantizable(info.ggml_dtype) {
            return Err(Error::UnsupportedGgufType {
                tensor: name.to_string(),
                ggml_type: format!("{:?}", info.ggml_dtype),
            });
        }
        let path = self.path.clone();
        let wrap = |e: candle_core::Error| {
            Error::gguf(&path, format!("tensor {name}: {}", candle_message(&e)))
        };
        let qt = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(wrap)?;
        let t = qt.dequantize(&Device::Cpu).map_err(wrap)?;
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(wrap)
    }
}
