//! The kernel layout of DGQ weights and its exact inverse, computed on the host.
//!
//! Canonical weight (`DualGrainedWeight`): `q [N, K]` u4, `zeros`/`s2` `[N, K/g]`, `s1 [N]` f16,
//! `W_s8 = S2·(q − z)`. Kernel layout ([`PreparedHost`]):
//!
//! - `wq`: `[N/16][K/64][32 lanes][16 B]`. Lane `l` (`g = l / 4`, `t = l % 4`) of 16-row tile
//!   `r` and 64-column chunk `c` holds rows `16r + g` (u32 words 0–1) and `16r + g + 8` (words
//!   2–3): nibble `i` of word `j` is column `64c + 32·(j % 2) + 16·(i % 2) + 4t + i / 2`. So
//!   `word & 0x0F0F0F0F` and `(word >> 4) & 0x0F0F0F0F` are, byte for byte, the int8 A-fragment
//!   registers of the m16n8k32 mma (and of the per-warp slice of wgmma m64nNk32) for k-step
//!   `j % 2` of the chunk, in the hardware's own K order: one coalesced 16-byte load per lane
//!   feeds two k-steps, and the activations are used as they are (the wgmma kernel copies them
//!   with TMA; the mma.sync kernels read the B fragments as 4-byte words).
//! - Codes are stored shifted, `q' = q − qmin(row, group)` (LiquidGEMM's trick): with
//!   `a = 128 + S2·(qmin − z)` the kernel forms `q'·S2 + a = W_s8 + 128 ∈ [1, 255]` four bytes at a
//!   time with one integer multiply-add and no carry between bytes, then XORs `0x80808080`.
//! - `meta`: `[N/16][K/g][8]` u32 = `S2(16r+g) | a(16r+g) << 8 | S2(16r+g+8) << 16 | a(16r+g+8) << 24`.
//! - `qmin`: `[N, K/g]`, kept (not read by the kernels) so the layout is a bijection:
//!   `q = q' + qmin`, `z = qmin − (a − 128)/S2`.
//! - `s1`: `[N]` f32 (exact copies of the f16 values).

use dgq_core::DualGrainedWeight;
use half::f16;
use ndarray::{Array1, Array2};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Columns per prepared chunk (two m16n8k32 k-steps).
pub const CHUNK_K: usize = 64;
/// Rows per prepared tile (the mma M dimension).
pub const TILE_N: usize = 16;
/// N must be a multiple of this for the GEMM kernels (the mma and wgmma CTA tile).
pub const GEMM_N_MULTIPLE: usize = 128;
/// K must be a multiple of this for the GEMM kernels (the mma and wgmma pipeline stage).
pub const GEMM_K_MULTIPLE: usize = 128;

/// DGQ weights in the kernel layout, on the host (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedHost {
    /// Output channels N.
    pub n: usize,
    /// Input channels K.
    pub k: usize,
    /// Group size along K.
    pub group_size: usize,
    /// Shifted u4 codes in fragment order, `N·K/2` bytes.
    pub wq: Vec<u8>,
    /// `(S2, a)` pairs for row pairs `(g, g + 8)`, `N/16 · K/g · 8` words.
    pub meta: Vec<u32>,
    /// Per-(row, group) minimum code, `N · K/g` bytes.
    pub qmin: Vec<u8>,
    /// Per-channel scale as f32, `N` values.
    pub s1: Vec<f32>,
}

/// Checks that the kernels support a weight of this shape.
pub fn check_supported(n: usize, k: usize, group_size: usize) -> Result<()> {
    if n == 0 || n % GEMM_N_MULTIPLE != 0 {
        return Err(Error::unsupported(
            "N",
            format!("N = {n} must be a positive multiple of {GEMM_N_MULTIPLE}"),
        ));
    }
    if k == 0 || k % GEMM_K_MULTIPLE != 0 {
        return Err(Error::unsupported(
            "K",
            format!("K = {k} must be a positive multiple of {GEMM_K_MULTIPLE}"),
        ));
    }
    if group_size == 0 || group_size % CHUNK_K != 0 {
        return Err(Error::unsupported(
            "group size",
            format!("group size {group_size} must be a positive multiple of {CHUNK_K}"),
        ));
    }
    if k % group_size != 0 {
        return Err(dgq_core::Error::GroupSize {
            k,
            group_size,
            reason: "must divide K",
        }
        .into());
    }
    if n > i32::MAX as usize || k > i32::MAX as usize {
        return Err(Error::unsupported("shape", "N and K must fit in i32"));
    }
    Ok(())
}

/// The column (within a 64-wide chunk) and row offset (0 or 8) of nibble `i` of word `j` of a
/// lane with `t = lane % 4`.
#[inline]
fn nibble_pos(t: usize, j: usize, i: usize) -> (usize, usize) {
    (32 * (j % 2) + 16 * (i % 2) + 4 * t + i / 2, 8 * (j / 2))
}

/// Reorders a validated DGQ weight into the kernel layout.
pub fn prepare_host(w: &DualGrainedWeight) -> Result<PreparedHost> {
    w.validate()?;
    let (n, k) = w.q.dim();
    let gs = w.group_size;
    check_supported(n, k, gs)?;
    let ng = k / gs;
    let kc = k / CHUNK_K;

    let mut qmin = vec![0u8; n * ng];
    let mut abias = vec![0u8; n * ng];
    for r in 0..n {
        for gi in 0..ng {
            let grp = w.q.slice(ndarray::s![r, gi * gs..(gi + 1) * gs]);
            let mn = grp.iter().copied().min().unwrap_or(0);
            let s2 = w.s2[[r, gi]] as i32;
            let a = 128 + s2 * (mn as i32 - w.zeros[[r, gi]] as i32);
            // validate() bounds |S2·(q − z)| ≤ 127, so a and q'·S2 + a stay in a byte.
            let mx = grp.iter().copied().max().unwrap_or(0) as i32;
            if !(1..=255).contains(&a) || s2 * (mx - mn as i32) + a > 255 {
                return Err(Error::Layout(format!(
                    "row {r} group {gi} does not fit the byte-wise dequant"
                )));
            }
            qmin[r * ng + gi] = mn;
            abias[r * ng + gi] = a as u8;
        }
    }

    let mut meta = vec![0u32; n / TILE_N * ng * 8];
    for rt in 0..n / TILE_N {
        for gi in 0..ng {
            for g in 0..8 {
                let lo = rt * TILE_N + g;
                let hi = lo + 8;
                meta[(rt * ng + gi) * 8 + g] = (w.s2[[lo, gi]] as u8 as u32)
                    | (abias[lo * ng + gi] as u32) << 8
                    | (w.s2[[hi, gi]] as u8 as u32) << 16
                    | (abias[hi * ng + gi] as u32) << 24;
            }
        }
    }

    let mut wq = vec![0u8; n * k / 2];
    let tile_bytes = kc * 32 * 16;
    wq.par_chunks_mut(tile_bytes)
        .enumerate()
        .for_each(|(rt, tile)| {
            for c in 0..kc {
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    let base = (c * 32 + lane) * 16;
                    for j in 0..4 {
                        for i in 0..8 {
                            let (col, roff) = nibble_pos(t, j, i);
                            let row = rt * TILE_N + g + roff;
                            let kk = c * CHUNK_K + col;
                            let v = w.q[[row, kk]] - qmin[row * ng + kk / gs];
                            tile[base + j * 4 + i / 2] |= v << (4 * (i % 2));
                        }
                    }
                }
            }
        });

    Ok(PreparedHost {
        n,
        k,
        group_size: gs,
        wq,
        meta,
        qmin,
        s1: w.s1.iter().map(|s| s.to_f32()).collect(),
    })
}

/// Inverts [`prepare_host`]: recovers the canonical weight exactly (and validates it).
pub fn unprepare_host(p: &PreparedHost) -> Result<DualGrainedWeight> {
    let (n, k, gs) = (p.n, p.k, p.group_size);
    check_supported(n, k, gs)?;
    let ng = k / gs;
    let kc = k / CHUNK_K;
    let want = |what: &str, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(Error::shape(what, expected, got))
        }
    };
    want("prepared wq bytes", n * k / 2, p.wq.len())?;
    want("prepared meta words", n / TILE_N * ng * 8, p.meta.len())?;
    want("prepared qmin bytes", n * ng, p.qmin.len())?;
    want("prepared s1", n, p.s1.len())?;

    let mut s2 = Array2::<i8>::zeros((n, ng));
    let mut zeros = Array2::<i8>::zeros((n, ng));
    for rt in 0..n / TILE_N {
        for gi in 0..ng {
            for g in 0..8 {
                let m = p.meta[(rt * ng + gi) * 8 + g];
                for (row, s, a) in [
                    (rt * TILE_N + g, m & 0xff, (m >> 8) & 0xff),
                    (rt * TILE_N + g + 8, (m >> 16) & 0xff, m >> 24),
                ] {
                    let (s, a) = (s as i32, a as i32);
                    if !(1..=127).contains(&s) || (a - 128) % s != 0 {
                        return Err(Error::Layout(format!(
                            "meta of row {row} group {gi}: S2 = {s}, a = {a}"
                        )));
                    }
                    let z = p.qmin[row * ng + gi] as i32 - (a - 128) / s;
                    s2[[row, gi]] = s as i8;
                    zeros[[row, gi]] = z.clamp(-128, 127) as i8;
                }
            }
        }
    }
    let mut q = Array2::<u8>::zeros((n, k));
    for rt in 0..n / TILE_N {
        for c in 0..kc {
            for lane in 0..32 {
                let (g, t) = (lane / 4, lane % 4);
                let base = ((rt * kc + c) * 32 + lane) * 16;
                for j in 0..4 {
                    for i in 0..8 {
                        let (col, roff) = nibble_pos(t, j, i);
                        let row = rt * TILE_N + g + roff;
                        let kk = c * CHUNK_K + col;
                        let v = (p.wq[base + j * 4 + i / 2] >> (4 * (i % 2))) & 0x0f;
                        q[[row, kk]] = v.saturating_add(p.qmin[row * ng + kk / gs]);
                    }
                }
            }
        }
    }
    let s1 = Array1::from_iter(p.s1.iter().map(|&v| f16::from_f32(v)));
    if let Some(i) = s1.iter().zip(&p.s1).position(|(h, &f)| h.to_f32() != f) {
        return Err(Error::Layout(format!(
            "s1[{i}] = {} is not an f16 value",
            p.s1[i]
        )));
    }
    Ok(DualGrainedWeight::new(gs, q, zeros, s2, s1)?)
}
