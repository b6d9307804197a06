//! Little-endian element codecs. Tensor data in a safetensors file may sit at any byte offset,
//! so decoding copies element by element from byte chunks instead of casting slices (no
//! alignment assumption, correct on big-endian hosts too).

use std::borrow::Cow;

use half::{bf16, f16};

/// The element types format v1 uses, with their safetensors names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dt {
    U8,
    I8,
    F16,
    Bf16,
    F32,
}

impl Dt {
    /// The `dtype` string in the safetensors header.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dt::U8 => "U8",
            Dt::I8 => "I8",
            Dt::F16 => "F16",
            Dt::Bf16 => "BF16",
            Dt::F32 => "F32",
        }
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Dt::U8 | Dt::I8 => 1,
            Dt::F16 | Dt::Bf16 => 2,
            Dt::F32 => 4,
        }
    }

    /// The safetensors crate's dtype.
    pub(crate) fn st(self) -> safetensors::Dtype {
        match self {
            Dt::U8 => safetensors::Dtype::U8,
            Dt::I8 => safetensors::Dtype::I8,
            Dt::F16 => safetensors::Dtype::F16,
            Dt::Bf16 => safetensors::Dtype::BF16,
            Dt::F32 => safetensors::Dtype::F32,
        }
    }
}

/// Elements in row-major order, borrowed when the array is already contiguous in that order
/// (the common case; iterating an ndarray element by element is several times slower).
pub(crate) fn row_major<T: Clone, S: ndarray::Data<Elem = T>, D: ndarray::Dimension>(
    a: &ndarray::ArrayBase<S, D>,
) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

pub(crate) fn enc_i8(v: &[i8]) -> Vec<u8> {
    bytemuck::cast_slice::<i8, u8>(v).to_vec()
}

fn enc_le<T: Copy, const B: usize>(v: &[T], f: impl Fn(T) -> [u8; B]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * B);
    for &x in v {
        out.extend_from_slice(&f(x));
    }
    out
}

pub(crate) fn enc_f16(v: &[f16]) -> Vec<u8> {
    enc_le(v, f16::to_le_bytes)
}

pub(crate) fn enc_bf16(v: &[bf16]) -> Vec<u8> {
    enc_le(v, bf16::to_le_bytes)
}

pub(crate) fn enc_f32(v: &[f32]) -> Vec<u8> {
    enc_le(v, f32::to_le_bytes)
}

pub(crate) fn dec_i8(b: &[u8]) -> Vec<i8> {
    bytemuck::cast_slice::<u8, i8>(b).to_vec()
}

pub(crate) fn dec_f16(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

pub(crate) fn dec_bf16(b: &[u8]) -> Vec<bf16> {
    b.chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]))
        .collect()
}

pub(crate) fn dec_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// CRC-32 (IEEE 802.3 / zlib polynomial) as 8 lowercase hex digits.
pub(crate) fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Parses exactly 8 lowercase hex digits.
pub(crate) fn parse_crc_hex(s: &str) -> Option<u32> {
    let ok = s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_the_standard_crc32() {
        // The CRC-32 check value from the catalogue of parametrised CRCs.
        assert_eq!(crc_hex(b"123456789"), "cbf43926");
        assert_eq!(parse_crc_hex("cbf43926"), Some(0xcbf4_3926));
        for bad in ["CBF43926", "cbf4392", "cbf439260", "+bf43926", "cbf4392g"] {
            assert_eq!(parse_crc_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn codecs_are_little_endian_and_unaligned_safe() {
        let v = [1.5f32, -2.25, f32::MIN_POSITIVE];
        let mut b = vec![0xAAu8];
        b.extend(enc_f32(&v));
        assert_eq!(&b[1..5], &[0x00, 0x00, 0xC0, 0x3F]);
        assert_eq!(dec_f32(&b[1..]), v);
        let h = [f16::from_f32(1.0), f16::from_f32(-0.5)];
        assert_eq!(enc_f16(&h), vec![0x00, 0x3C, 0x00, 0xB8]);
        b.truncate(1);
        b.extend(enc_f16(&h));
        assert_eq!(dec_f16(&b[1..]), h);
        let z = [bf16::from_f32(1.0)];
        assert_eq!(enc_bf16(&z), vec![0x80, 0x3F]);
        assert_eq!(dec_bf16(&enc_bf16(&z)), z);
        assert_eq!(enc_i8(&[-1i8, 127]), vec![0xFF, 0x7F]);
        assert_eq!(dec_i8(&[0xFF, 0x80]), vec![-1, -128]);
    }
}
