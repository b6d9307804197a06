//! The GGUF header (magic, metadata, tensor table), parsed and validated here rather than by
//! candle's `Content::read`, so that a hostile file fails with a typed error before anything is
//! allocated from what it declares: candle divides by `general.alignment` (0 panics), and hands
//! zero-element tensors to `slice::from_raw_parts` with a dangling pointer. What this returns is
//! candle's own `Content`, whose tensor reads and dequantizers the loader keeps using.
//!
//! Checked here, per the GGUF spec (ggml's docs/gguf.md): every length fits in the bytes left in
//! the file; keys and tensor names are unique; `general.alignment` is a power of two; every
//! tensor has 1–4 non-zero dims, a known ggml type whose block divides its last dim, an offset
//! that is a multiple of the alignment, and data that lies inside the file.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u64 = 4;
/// Nesting limit of metadata arrays (arrays of arrays...), so recursion stays shallow.
const MAX_VALUE_DEPTH: usize = 8;
/// Alignment when `general.alignment` is absent (the spec's default).
const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest alignment accepted (llama.cpp writes 32; anything near this is already absurd).
const MAX_ALIGNMENT: u64 = 1 << 20;

/// A reader that knows how many bytes of the file are left, so every declared length is checked
/// against them before a buffer of that length exists.
struct Cursor<'a, R> {
    inner: &'a mut R,
    path: &'a Path,
    pos: u64,
    len: u64,
    /// GGUF v1 stores lengths and dims as u32, v2 and v3 as u64.
    wide: bool,
}

impl<R: Read> Cursor<'_, R> {
    fn err(&self, problem: impl ToString) -> Error {
        Error::gguf(self.path, problem)
    }

    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        if self.left() < N as u64 {
            return Err(self.err(format!("truncated at byte {} reading {what}", self.pos)));
        }
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.bytes::<1>(what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    /// A count or length: u32 in v1, u64 later.
    fn length(&mut self, what: &str) -> Result<u64> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn length_size(&self) -> u64 {
        if self.wide {
            8
        } else {
            4
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.length(what)?;
        if n > self.left() {
            return Err(self.err(format!(
                "{what} declares {n} bytes at byte {}, only {} left in the file",
                self.pos,
                self.left()
            )));
        }
        let mut v = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        // Strings are meant to be unterminated UTF-8; some writers add a NUL or stray bytes.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// Smallest encoding of one value of type `t` (to bound array lengths by the bytes left).
    fn min_size(&self, t: u32) -> u64 {
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => self.length_size(),
            _ => 4 + self.length_size(),
        }
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_le_bytes(self.bytes(key)?)),
            7 => match self.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("metadata {key}: bool byte {b} is not 0 or 1"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_VALUE_DEPTH {
                    return Err(self.err(format!(
                        "metadata {key}: arrays nested deeper than {MAX_VALUE_DEPTH}"
                    )));
                }
                let et = self.u32(key)?;
                check_value_type(self, key, et)?;
                let n = self.length(key)?;
                let need = n.saturating_mul(self.min_size(et));
                if need > self.left() {
                    return Err(self.err(format!(
                        "metadata {key}: array of {n} needs at least {need} bytes, only {} left",
                        self.left()
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.bytes(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes(key)?)),
            _ => return Err(self.err(format!("metadata {key}: unknown value type {t}"))),
        })
    }
}

fn check_value_type<R>(c: &Cursor<'_, R>, key: &str, t: u32) -> Result<()> {
    if t > 12 {
        return Err(Error::gguf(
            c.path,
            format!("metadata {key}: unknown value type {t}"),
        ));
    }
    Ok(())
}

/// The ggml type of a tensor-table id (ggml.h's `ggml_type`), among those candle reads.
fn ggml_type(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

/// `general.alignment`: any unsigned integer type (the spec says u32), a power of two.
fn alignment(path: &Path, metadata: &HashMap<String, Value>) -> Result<u64> {
    let v = match metadata.get("general.alignment") {
        None => return Ok(DEFAULT_ALIGNMENT),
        Some(Value::U8(v)) => *v as u64,
        Some(Value::U16(v)) => *v as u64,
        Some(Value::U32(v)) => *v as u64,
        Some(Value::U64(v)) => *v,
        Some(Value::I8(v)) if *v >= 0 => *v as u64,
        Some(Value::I16(v)) if *v >= 0 => *v as u64,
        Some(Value::I32(v)) if *v >= 0 => *v as u64,
        Some(Value::I64(v)) if *v >= 0 => *v as u64,
        Some(other) => {
            return Err(Error::gguf(
                path,
                format!("general.alignment = {other:?} is not an unsigned integer"),
            ))
        }
    };
    if !v.is_power_of_two() || v > MAX_ALIGNMENT {
        return Err(Error::gguf(
            path,
            format!("general.alignment = {v} is not a power of two up to {MAX_ALIGNMENT}"),
        ));
    }
    Ok(v)
}

/// Largest element count accepted for one tensor (guards the products candle computes).
pub(crate) const MAX_TENSOR_ELEMS: u64 = 1 << 40;

/// Parses and validates the header of the GGUF file `reader` (positioned at its start, `len`
/// bytes long). Tensor data is not read, but every tensor's extent is checked to lie in the file.
pub(crate) fn read_content<R: Read + Seek>(
    path: &Path,
    reader: &mut R,
    len: u64,
) -> Result<Content> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let mut c = Cursor {
        inner: reader,
        path,
        pos: 0,
        len,
        wide: true,
    };
    let magic = c.bytes::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(c.err(format!("not a GGUF file (magic {magic:02x?})")));
    }
    let version = c.u32("the version")?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(c.err(format!("unsupported GGUF version {v} (supported: 1-3)"))),
    };
    c.wide = version >= 2;
    let n_tensors = c.length("the tensor count")?;
    let n_kv = c.length("the metadata count")?;
    // Each metadata entry takes at least a key length, a type and one byte; each tensor entry a
    // name length, a dim count, one dim, a type and an offset.
    let min_kv = c.length_size() + 4 + 1;
    let min_tensor = 2 * c.length_size() + 4 + 4 + 8;
    let need = n_kv
        .saturating_mul(min_kv)
        .saturating_add(n_tensors.saturating_mul(min_tensor));
    if need > c.left() {
        return Err(c.err(format!(
            "header declares {n_tensors} tensors and {n_kv} metadata entries: at least {need} \
             bytes, only {} left in the file",
            c.left()
        )));
    }

    let mut metadata = HashMap::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let t = c.u32(&key)?;
        check_value_type(&c, &key, t)?;
        let v = c.value(t, &key, 0)?;
        if metadata.insert(key.clone(), v).is_some() {
            return Err(c.err(format!("metadata key {key} appears twice")));
        }
    }
    let align = alignment(path, &metadata)?;

    struct Entry {
        name: String,
        dims: Vec<u64>,
        type_id: u32,
        offset: u64,
    }
    let mut entries = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let nd = c.u32(&name)? as u64;
        if nd == 0 || nd > MAX_DIMS {
            return Err(c.err(format!(
                "tensor {name} has {nd} dims (1 to {MAX_DIMS} supported)"
            )));
        }
        let mut dims = Vec::with_capacity(nd as usize);
        for _ in 0..nd {
            dims.push(c.length(&name)?);
        }
        let type_id = c.u32(&name)?;
        let offset = c.u64(&name)?;
        entries.push(Entry {
            name,
            dims,
            type_id,
            offset,
        });
    }
    let data_start = c
        .pos
        .checked_next_multiple_of(align)
        .ok_or_else(|| c.err("tensor data offset overflows"))?;

    let mut tensor_infos = HashMap::with_capacity(entries.len());
    for e in entries {
        let name = &e.name;
        let ty = ggml_type(e.type_id).ok_or_else(|| Error::UnsupportedGgufType {
            tensor: name.clone(),
            ggml_type: format!("id {}", e.type_id),
        })?;
        // GGUF lists dims fastest first; the row-major shape is the reverse.
        let elems = e
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMS);
        let elems = match elems {
            Some(0) => {
                return Err(c.err(format!("tensor {name} has dims {:?}: no elements", e.dims)))
            }
            Some(n) => n,
            None => {
                return Err(c.err(format!(
                    "tensor {name} has implausible dims {:?} (more than 2^40 elements)",
                    e.dims
                )))
            }
        };
        let block = ty.block_size() as u64;
        if e.dims[0] % block != 0 {
            return Err(c.err(format!(
                "tensor {name}: row length {} is not a multiple of the {ty:?} block of {block}",
                e.dims[0]
            )));
        }
        let bytes = elems / block * ty.type_size() as u64;
        if e.offset % align != 0 {
            return Err(c.err(format!(
                "tensor {name}: offset {} is not a multiple of the alignment {align}",
                e.offset
            )));
        }
        let end = data_start
            .checked_add(e.offset)
            .and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|end| end > len) {
            return Err(c.err(format!(
                "tensor {name}: {bytes} bytes at data offset {} run past the end of the \
                 {len}-byte file",
                e.offset
            )));
        }
        let shape = e
            .dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<Vec<usize>, _>>()
            .map_err(|_| c.err(format!("tensor {name}: dims {:?} exceed usize", e.dims)))?;
        let info = TensorInfo {
            ggml_dtype: ty,
            shape: shape.into(),
            offset: e.offset,
        };
        if tensor_infos.insert(e.name.clone(), info).is_some() {
            return Err(c.err(format!("tensor {name} appears twice")));
        }
    }
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data_start,
    })
}
