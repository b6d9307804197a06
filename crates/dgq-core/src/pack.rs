//! Nibble packing, shared by the packed format and kernel preparation.
//!
//! Canonical order: byte `i` of a row holds element `2i` in its low nibble (bits 0–3) and element
//! `2i + 1` in its high nibble (bits 4–7). Signed int4 uses two's complement nibbles.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// Packs u4 codes `[N, K]` (values 0..=15, K even) into `[N, K/2]` bytes.
pub fn pack_u4(q: ArrayView2<u8>) -> Result<Array2<u8>> {
    let (n, k) = q.dim();
    if k % 2 != 0 {
        return Err(Error::shape("u4 codes", "an even number of columns", k));
    }
    let mut out = Array2::<u8>::zeros((n, k / 2));
    for r in 0..n {
        for i in 0..k / 2 {
            let lo = q[[r, 2 * i]];
            let hi = q[[r, 2 * i + 1]];
            if lo > 15 || hi > 15 {
                return Err(Error::invariant(
                    "q",
                    format!("code at row {r} near column {} exceeds 15", 2 * i),
                ));
            }
            out[[r, i]] = lo | (hi << 4);
        }
    }
    Ok(out)
}

/// Unpacks `[N, K/2]` bytes into u4 codes `[N, K]`.
pub fn unpack_u4(p: ArrayView2<u8>) -> Array2<u8> {
    let (n, kh) = p.dim();
    Array2::from_shape_fn((n, kh * 2), |(r, c)| {
        (p[[r, c / 2]] >> ((c % 2) * 4)) & 0x0f
    })
}

/// Packs signed int4 codes `[N, K]` (values −8..=7, K even) into `[N, K/2]` two's-complement nibbles.
pub fn pack_i4(q: ArrayView2<i8>) -> Result<Array2<u8>> {
    let k = q.ncols();
    if k % 2 != 0 {
        return Err(Error::shape("i4 codes", "an even number of columns", k));
    }
    if let Some(((r, c), v)) = q.indexed_iter().find(|(_, &v)| !(-8..=7).contains(&v)) {
        return Err(Error::invariant(
            "q",
            format!("int4 code q[{r}, {c}] = {v} outside [-8, 7]"),
        ));
    }
    let u = q.mapv(|v| (v as u8) & 0x0f);
    pack_u4(u.view())
}

/// Unpacks `[N, K/2]` two's-complement nibbles into signed int4 codes `[N, K]`.
pub fn unpack_i4(p: ArrayView2<u8>) -> Array2<i8> {
    unpack_u4(p).mapv(|v| ((v << 4) as i8) >> 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u4_round_trip(n in 1usize..6, kh in 1usize..20, seed in any::<u64>()) {
            let q = Array2::from_shape_fn((n, 2 * kh), |(r, c)| ((seed >> ((r * 7 + c) % 60)) as u8 ^ (r * 31 + c * 17) as u8) & 15);
            let p = pack_u4(q.view()).unwrap();
            prop_assert_eq!(p.dim(), (n, kh));
            prop_assert_eq!(unpack_u4(p.view()), q);
        }

        #[test]
        fn i4_round_trip(n in 1usize..6, kh in 1usize..20, seed in any::<u64>()) {
            let q = Array2::from_shape_fn((n, 2 * kh), |(r, c)| ((((seed >> ((r * 5 + c) % 60)) as u8 ^ (r * 13 + c * 7) as u8) & 15) as i8) - 8);
            let p = pack_i4(q.view()).unwrap();
            prop_assert_eq!(unpack_i4(p.view()), q);
        }
    }

    #[test]
    fn nibble_order_is_low_first() {
        let q = ndarray::arr2(&[[1u8, 2, 15, 0]]);
        assert_eq!(pack_u4(q.view()).unwrap(), ndarray::arr2(&[[0x21u8, 0x0f]]));
    }

    #[test]
    fn odd_k_and_out_of_range_are_errors() {
        assert!(pack_u4(Array2::<u8>::zeros((1, 3)).view()).is_err());
        assert!(pack_u4(ndarray::arr2(&[[16u8, 0]]).view()).is_err());
        assert!(pack_i4(ndarray::arr2(&[[8i8, 0]]).view()).is_err());
    }
}
