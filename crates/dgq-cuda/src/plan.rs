//! How a GEMM launches: which kernel, its token tile, how K is split, the grid and the shared
//! memory. Plain host code (no CUDA needed), so that every plan can be checked on the CPU; the
//! launchers in `cuda/` take the plan as given and only check that it is one their kernels were
//! compiled for.
//!
//! The rules were measured on the H100 (the figures are in the comments); the device facts they
//! read ([`DeviceLimits`]) come from the device, the knobs ([`GemmConfig`]) from the caller.

use crate::layout::CHUNK_K;
use crate::{GemmConfig, KernelChoice};
/// Largest M the decode kernel takes (`kDecodeMaxM`).
pub const DECODE_MAX_M: usize = 64;
/// Output channels per decode CTA (four warps of 16 rows, `kDecodeRows`); one tile counter each.
pub const DECODE_ROWS: usize = 64;
/// Output channels per CTA of the mma.sync kernel (`kMmaBN`).
pub const MMA_BN: usize = 128;
/// Output channels per CTA of the wgmma kernel (`kWgmmaBN`).
pub const WGMMA_BN: usize = 128;
/// K per pipeline stage of the wgmma kernel (`kChunkK · kWgmmaChunks`).
pub const WGMMA_BK: usize = 128;
/// The automatic choice runs the decode kernel up to this M (see [`choose_kernel`]).
pub const AUTO_DECODE_MAX_M: usize = 32;
/// Chunks per batch of a decode warp (`kDecodeUnroll`).
const DECODE_UNROLL: i64 = 4;

/// What the plans need to know about the device, read from it (see [`crate::device_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Streaming multiprocessors.
    pub num_sms: u32,
    /// Shared memory per SM in bytes (0: unknown, which turns the decode CTA cap off).
    pub smem_per_sm: u32,
    /// Resident decode CTAs per SM (occupancy API), indexed by [`token_tile_slot`] and
    /// [`parts_slot`]; 0 for pairs that are not compiled.
    pub decode_ctas_per_sm: [[u32; 4]; 4],
}

/// Row of [`DeviceLimits::decode_ctas_per_sm`] for a count of 8-token tiles (1, 2, 4, 8).
pub const fn token_tile_slot(nt: u32) -> usize {
    match nt {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

/// Column of [`DeviceLimits::decode_ctas_per_sm`] for K parts per CTA (1, 2, 4, 8).
pub const fn parts_slot(parts: u32) -> usize {
    match parts {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

impl DeviceLimits {
    fn ctas(&self, nt: i64, parts: i64) -> i64 {
        let c = self.decode_ctas_per_sm[token_tile_slot(nt as u32)][parts_slot(parts as u32)];
        // What the launcher answered when the occupancy query failed.
        if c < 1 {
            (4 / parts).max(1)
        } else {
            c as i64
        }
    }
    fn sms(&self) -> i64 {
        (self.num_sms as i64).max(1)
    }
}

/// The kernel a plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The decode kernel (M ≤ [`DECODE_MAX_M`]).
    Decode,
    /// The tiled `mma.sync` kernel.
    Mma,
    /// The persistent, warp-specialised Hopper `wgmma` kernel.
    Wgmma,
}

/// One GEMM's launch (mirrors `DgqGemmPlan` in `cuda/include/dgq_kernels.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Which kernel.
    pub kernel: Kernel,
    /// Token tile (mma: 32/64/128, wgmma: 64/128/256; 0 for decode).
    pub bm: u32,
    /// Decode: K parts inside a CTA (1 otherwise).
    pub parts: u32,
    /// Decode: CTAs along K per row block; wgmma: K splits; 1 for mma.
    pub split: u32,
    /// Decode: 64-deep chunks per part; wgmma: 128-deep stages per split; 0 for mma.
    pub per: u32,
    /// wgmma: persistent CTAs; decode: CTAs in all; mma: output tiles.
    pub grid: u32,
    /// Decode: dynamic shared memory per CTA in bytes (0 otherwise).
    pub smem: u32,
    /// Launch with programmatic dependent launch.
    pub pdl: bool,
    /// wgmma with f16/bf16 output: the TMA-store epilogue is allowed.
    pub tma_store: bool,
}

/// The split-K workspace a GEMM call has: int32 partials (elements, and whether 16-byte
/// aligned) and u32 tile counters (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkspaceCapacity {
    /// int32 partial sums.
    pub partials: usize,
    /// Whether the partials are 16-byte aligned (the fix-up reads them as vectors).
    pub partials_aligned: bool,
    /// Tile counters.
    pub counters: usize,
}

impl WorkspaceCapacity {
    /// Room for every split: what the workspace-size queries plan against.
    pub const UNLIMITED: Self = WorkspaceCapacity {
        partials: usize::MAX,
        partials_aligned: true,
        counters: usize::MAX,
    };
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// 8-token tiles of the decode kernel for M tokens (`decode_nt`).
pub fn decode_token_tiles(m: usize) -> u32 {
    match m {
        0..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        _ => 8,
    }
}

/// Chunks per batch of a decode warp for `nt` token tiles (`decode_unroll`): 8 for one token
/// tile was slower on H100 (71 instead of 48 registers, 7 instead of 10 resident CTAs: 8192²
/// M = 1 17.5 vs 16.3 µs); eight token tiles halve it to stay within registers.
fn decode_unroll(nt: i64) -> i64 {
    if nt >= 8 {
        DECODE_UNROLL / 2
    } else {
        DECODE_UNROLL
    }
}

/// Largest in-CTA K split compiled per token-tile count (`decode_max_parts`): the activation
/// double buffer stays within 64 KB and 128·S threads × their registers fit.
pub fn decode_max_parts(nt: u32) -> u32 {
    match nt {
        0..=2 => 8,
        4 => 4,
        _ => 2,
    }
}

/// Dynamic shared memory the decode kernel needs: its activation double buffer
/// (`decode_smem_bytes`).
pub fn decode_smem_bytes(nt: u32, parts: u32) -> u32 {
    (2 * parts as i64 * decode_unroll(nt as i64) * nt as i64 * 8 * CHUNK_K as i64) as u32
}

/// Whether the automatic choice takes the decode kernel: M ≤ 32 (H100: at M = 64 the wgmma
/// kernel is faster on every benchmark shape, 4096² 16.9 vs 20.4 µs, 11008×4096 25.0 vs 35.0,
/// 8192² 30.2 vs 40.8; at M = 32 the decode kernel is, 4096² 11.6 vs 15.7, 8192² 21.3 vs 29.6).
pub fn auto_decode(m: usize) -> bool {
    m <= AUTO_DECODE_MAX_M
}

/// The kernel a configuration runs for M tokens and N channels: decode when asked for (M ≤
/// [`DECODE_MAX_M`], checked by the caller) or, under [`KernelChoice::Auto`], for M ≤
/// [`AUTO_DECODE_MAX_M`]; otherwise wgmma (asked for or automatic) where N is a multiple of its
/// tile, else mma.
pub fn choose_kernel(m: usize, n: usize, kernel: KernelChoice) -> Kernel {
    match kernel {
        KernelChoice::Decode => Kernel::Decode,
        KernelChoice::Auto if auto_decode(m) => Kernel::Decode,
        KernelChoice::Auto | KernelChoice::Wgmma if n % WGMMA_BN == 0 => Kernel::Wgmma,
        _ => Kernel::Mma,
    }
}

/// K parts of the decode kernel with one part per CTA (grid.y): fill every resident CTA slot once
/// (a single wave: a partial second wave would stream its share at a fraction of the bandwidth)
/// while each warp keeps at least two batches of loads. 0 for shapes it does not take.
fn decode_split(m: i64, n: i64, k: i64, lim: &DeviceLimits) -> i64 {
    if m < 1 || m > DECODE_MAX_M as i64 || n % DECODE_ROWS as i64 != 0 || k % CHUNK_K as i64 != 0 {
        return 0;
    }
    let row_blocks = n / DECODE_ROWS as i64;
    let kc = k / CHUNK_K as i64;
    let nt = decode_token_tiles(m as usize) as i64;
    let u = decode_unroll(nt);
    let slots = lim.sms() * lim.ctas(nt, 1);
    let mut split = (slots / row_blocks).max(1);
    split = split.min((kc / (2 * u)).max(1));
    // Whole batches per split: a split's time is its number of batches (one HBM round trip
    // each), so a last batch of one chunk costs as much as a full one (H100, 8192² M = 1: split
    // 10 = 13 chunks each, 17.5 µs; split 8 = 16 chunks, 16.3 µs).
    let batches = ceil_div(kc, u);
    let per = ceil_div(batches, split) * u;
    ceil_div(kc, per)
}

/// Decode plan before the workspace is considered: (parts, split, per); per = 0 asks for it to
/// be derived from the split.
fn decode_plan(m: i64, n: i64, k: i64, cfg: &GemmConfig, lim: &DeviceLimits) -> (i64, i64, i64) {
    let want = decode_split(m, n, k, lim);
    let kc = k / CHUNK_K as i64;
    if want < 1 {
        return (1, 1, kc);
    }
    let row_blocks = n / DECODE_ROWS as i64;
    let nt = decode_token_tiles(m as usize) as i64;
    let u = decode_unroll(nt);
    let batches = ceil_div(kc, u);
    if let Some((fp, fs)) = cfg.decode_plan {
        let (fp, fs) = (fp as i64, fs as i64);
        if fp >= 1 && fp <= decode_max_parts(nt as u32) as i64 && fp & (fp - 1) == 0 && fs >= 1 {
            let per = ceil_div(batches, fp * fs) * u;
            return (fp, ceil_div(kc, per * fp), per);
        }
    }
    let sms = lim.sms();
    let cap = (cfg.decode_max_cta_parts as i64).max(1);
    // The K parts decode_split wants, moved into the CTA as far as the grid still fills the SMs
    // in one wave with at least 3/4 of those parts, or half of them where no global split is
    // left: the global split-K fix-up (fence, ticket atomic, partial reads: ≈3 µs per call on
    // H100) then goes away where N alone gives enough CTAs (8192², 28672×8192, 8192×28672) and
    // shrinks elsewhere. (H100, parts × split: 8192² M = 32 4 × 1 16.0 µs, 2 × 3 17.9;
    // 11008×4096 M = 1–8 4 × 1 10.7, 2 × 3 12.0–12.2; 8192×28672 M = 32 4 × 1 47.0, 2 × 3 46.6.)
    let mut parts = decode_max_parts(nt as u32) as i64;
    while parts > 1 {
        let p = parts;
        parts /= 2;
        if p > want || p > cap {
            continue;
        }
        let slots = sms * lim.ctas(nt, p);
        let mut split = ceil_div(want, p);
        if row_blocks * split > slots {
            split = slots / row_blocks;
        }
        if split < 1 || 20 * row_blocks * split < 17 * sms {
            continue;
        }
        if 4 * p * split < 3 * want && (split > 1 || 2 * p < want) {
            continue;
        }
        // One token tile where a global split remains anyway: more, smaller CTAs (H100, 4096²
        // M = 1, parts × split: 2 × 4 7.5 µs, 4 × 2 8.7, 1 × 8 7.4; 11008×4096 2 × 3 12.0,
        // 4 × 2 14.5).
        if nt == 1 && split > 1 && p > 2 {
            continue;
        }
        let per = ceil_div(batches, p * split) * u;
        return (p, ceil_div(kc, per * p), per);
    }
    let per = ceil_div(kc, want);
    (1, ceil_div(kc, per), per)
}

/// Dynamic shared memory for a decode launch. The plans assume a grid's CTAs spread evenly over
/// the SMs (ceil(grid / SMs) each); where more would fit on one SM the block scheduler may pack
/// them (with PDL it places CTAs on whichever SMs free up first), leaving SMs idle. Requesting
/// just over 1/(L+1) of an SM's shared memory caps it at L CTAs. (H100, 4096² M = 32, 4 parts ×
/// 2 splits = 128 CTAs, 64 registers so 2 fit per SM: 10.5 µs, vs 8.6 with 84 registers, and
/// 7.9 or 9.2 µs at M = 16 from one run to the next.)
fn decode_launch_smem(nt: i64, parts: i64, grid: i64, lim: &DeviceLimits) -> i64 {
    let need = decode_smem_bytes(nt as u32, parts as u32) as i64;
    let sm = lim.smem_per_sm as i64;
    let per_sm = ceil_div(grid, lim.sms());
    if sm <= 0 || lim.ctas(nt, parts) <= per_sm {
        return need;
    }
    // per_sm + 1 CTAs no longer fit (each also has 1 KB reserved).
    let cap = sm / (per_sm + 1) + 16;
    if cap * per_sm + 1024 * per_sm <= sm {
        need.max(cap)
    } else {
        need
    }
}

/// Token tile of the wgmma kernel: the least rounds × relative stage cost, where a round is one
/// pass of output tiles over the SMs (one persistent CTA per SM) and a stage costs 0.9 / 1 / 1.5
/// at BM = 64 / 128 / 256 (fitted to H100 runs at M = 96–384, where the kernel is latency-bound
/// and rounds dominate: 11008×4096 M = 128 takes 24 µs at BM = 128, one round, vs 38 at 64, two;
/// 28672×8192 M = 192 112 µs at 256 vs 152 at 128 vs 203 at 64; 4096² M = 128 17.4 at 64 vs
/// 21.6 at 128, both one round). BM = 128 only for M > 64, 256 only for M > 128 (padding tokens
/// cost full price: 28672×8192 M = 96 113 µs at 256 vs 80 at 128).
fn wgmma_bm(m: i64, n: i64, lim: &DeviceLimits) -> i64 {
    let tn = n / WGMMA_BN as i64;
    let sms = lim.sms();
    let mut best = 64;
    let mut best_cost = -1i64;
    for bm in [64i64, 128, 256] {
        if bm > 64 && m <= bm / 2 {
            break;
        }
        let rounds = ceil_div(tn * ceil_div(m, bm), sms);
        let cost = rounds
            * match bm {
                64 => 9,
                128 => 10,
                _ => 15,
            };
        // Ties over several rounds go to the larger tile (fewer dequantizations per token).
        if best_cost < 0 || cost < best_cost || (cost == best_cost && rounds > 1) {
            best = bm;
            best_cost = cost;
        }
    }
    best
}

fn wgmma_tiles(m: i64, n: i64, bm: i64) -> i64 {
    (n / WGMMA_BN as i64) * ceil_div(m, bm)
}

/// Split-K of the wgmma kernel: one resident CTA per SM, so fill the SMs once when the output
/// tiles alone do not, keeping at least 4 pipeline stages (K = 512) per split.
fn wgmma_split(m: i64, n: i64, k: i64, lim: &DeviceLimits) -> i64 {
    if m < 1 || n % WGMMA_BN as i64 != 0 || k % WGMMA_BK as i64 != 0 {
        return 0;
    }
    let tiles = wgmma_tiles(m, n, wgmma_bm(m, n, lim));
    let stages = k / WGMMA_BK as i64;
    let mut split = (lim.sms() / tiles).max(1);
    split = split.min((stages / 4).max(1));
    let per = ceil_div(stages, split);
    ceil_div(stages, per)
}

/// The largest split a workspace holds (1 when it holds none), as the launchers shrank it.
fn fit_split(split: i64, m: i64, n: i64, counters_needed: i64, ws: &WorkspaceCapacity) -> i64 {
    if split <= 1 {
        return split;
    }
    let per_split = (m * n) as u128;
    let fit = if ws.partials_aligned {
        (ws.partials as u128 / per_split).min(i64::MAX as u128) as i64
    } else {
        0
    };
    let split = if (ws.counters as u128) < counters_needed as u128 {
        1
    } else {
        split
    };
    split.min(fit.max(1))
}

/// The plan of one GEMM of M tokens × an `[N, K]` weight on a device with `lim`, for `cfg` and
/// the workspace `ws` (a split the workspace cannot hold is shrunk rather than refused).
///
/// The shape must be one [`crate::check_gemm_shape`] accepts, `cfg.split_k` at most K / 64
/// and the decode kernel asked for only with M ≤ [`DECODE_MAX_M`] (the callers check these
/// first, with typed errors).
pub fn plan(
    m: usize,
    n: usize,
    k: usize,
    cfg: &GemmConfig,
    lim: &DeviceLimits,
    ws: &WorkspaceCapacity,
) -> Plan {
    let (mi, ni, ki) = (m as i64, n as i64, k as i64);
    let sms = lim.sms();
    let base = Plan {
        kernel: Kernel::Mma,
        bm: 0,
        parts: 1,
        split: 1,
        per: 0,
        grid: 0,
        smem: 0,
        pdl: cfg.pdl,
        tma_store: false,
    };
    match choose_kernel(m, n, cfg.kernel) {
        Kernel::Decode => {
            let kc = ki / CHUNK_K as i64;
            // A caller's split is one K part per CTA, as asked.
            let (parts, mut split, mut per) = match cfg.split_k {
                Some(s) => (1, (s as i64).min(kc), 0),
                None => decode_plan(mi, ni, ki, cfg, lim),
            };
            // Shrink the split to what the workspace holds rather than failing.
            let fitted = fit_split(split, mi, ni, ni / DECODE_ROWS as i64, ws);
            if fitted != split || per == 0 {
                let all = parts * fitted.max(1);
                per = ceil_div(kc, all);
                split = ceil_div(kc, per * parts);
            }
            let nt = decode_token_tiles(m) as i64;
            let grid = (ni / DECODE_ROWS as i64) * split;
            Plan {
                kernel: Kernel::Decode,
                parts: parts as u32,
                split: split as u32,
                per: per as u32,
                grid: grid as u32,
                smem: decode_launch_smem(nt, parts, grid, lim) as u32,
                ..base
            }
        }
        Kernel::Wgmma => {
            let bm = wgmma_bm(mi, ni, lim);
            let tiles = wgmma_tiles(mi, ni, bm);
            let stages = ki / WGMMA_BK as i64;
            let split = match cfg.split_k {
                Some(s) => s as i64,
                None => wgmma_split(mi, ni, ki, lim),
            };
            let split = split.min(stages).max(1);
            // Shrink the split to what the workspace holds rather than failing.
            let split = fit_split(split, mi, ni, tiles, ws).max(1);
            let per = ceil_div(stages, split);
            let split = ceil_div(stages, per);
            Plan {
                kernel: Kernel::Wgmma,
                bm: bm as u32,
                split: split as u32,
                per: per as u32,
                // Persistent: one CTA per SM at most, looping over the (tile, split) items.
                grid: (tiles * split).min(sms) as u32,
                tma_store: cfg.wgmma_tma_store,
                ..base
            }
        }
        Kernel::Mma => {
            // Largest token tile that still gives every SM a tile; small problems take BM = 32.
            let tiles = |bm: i64| (ni / MMA_BN as i64) * ceil_div(mi, bm);
            let bm = if tiles(128) >= sms {
                128
            } else if tiles(64) >= sms {
                64
            } else {
                32
            };
            Plan {
                kernel: Kernel::Mma,
                bm: bm as u32,
                grid: tiles(bm) as u32,
                ..base
            }
        }
    }
}

/// Workspace (int32 partials, u32 counters, in elements) that the plans of the automatic kernel
/// choice with `cfg`'s decode knobs want for one shape; (0, 0) where they split nothing.
pub fn workspace_len(
    m: usize,
    n: usize,
    k: usize,
    cfg: &GemmConfig,
    lim: &DeviceLimits,
) -> (usize, usize) {
    let (mi, ni, ki) = (m as i64, n as i64, k as i64);
    if m >= 1 && auto_decode(m) {
        let (_, split, _) = decode_plan(mi, ni, ki, cfg, lim);
        let parts = if split > 1 { split as usize * m * n } else { 0 };
        (parts, n / DECODE_ROWS)
    } else if n % WGMMA_BN == 0 {
        let split = wgmma_split(mi, ni, ki, lim);
        if split > 1 {
            let tiles = wgmma_tiles(mi, ni, wgmma_bm(mi, ni, lim));
            (split as usize * m * n, tiles as usize)
        } else {
            (0, 0)
        }
    } else {
        (0, 0)
    }
}

/// Why a plan is not one the launchers take (the rules of `cuda/*.cu`'s plan checks, plus the
/// coverage and sizes the kernels rely on); `None` for a valid plan.
pub fn plan_error(
    m: usize,
    n: usize,
    k: usize,
    p: &Plan,
    ws: &WorkspaceCapacity,
) -> Option<String> {
    let kc = (k / CHUNK_K) as u64;
    let fits = |split: u32, counters: u64| {
        split <= 1
            || (ws.partials_aligned
                && ws.partials as u128 >= split as u128 * (m * n) as u128
                && ws.counters as u64 >= counters)
    };
    match p.kernel {
        Kernel::Decode => {
            let nt = decode_token_tiles(m);
            if m > DECODE_MAX_M || n % DECODE_ROWS != 0 {
                return Some(format!("decode takes M ≤ 64 and N % 64 == 0, got {m}×{n}"));
            }
            if !p.parts.is_power_of_two() || p.parts > decode_max_parts(nt) {
                return Some(format!(
                    "{} K parts are not compiled for {nt} token tiles",
                    p.parts
                ));
            }
            if p.split < 1 || p.per < 1 || (p.split as u64) * (p.parts as u64) * (p.per as u64) < kc
            {
                return Some(format!(
                    "parts × split × per = {}·{}·{} does not cover {kc} chunks",
                    p.parts, p.split, p.per
                ));
            }
            // No CTA along K may be empty: the last one starts inside K.
            if ((p.split as u64 - 1) * p.parts as u64) * p.per as u64 >= kc {
                return Some(format!("split {} leaves an empty CTA", p.split));
            }
            if p.smem < decode_smem_bytes(nt, p.parts) || p.smem > 227 * 1024 {
                return Some(format!("shared memory {} out of range", p.smem));
            }
            if p.grid as usize != (n / DECODE_ROWS) * p.split as usize {
                return Some("grid is not row blocks × split".into());
            }
            if !fits(p.split, (n / DECODE_ROWS) as u64) {
                return Some(format!("split {} does not fit the workspace", p.split));
            }
        }
        Kernel::Mma => {
            if n % MMA_BN != 0 || k % WGMMA_BK != 0 || ![32, 64, 128].contains(&p.bm) {
                return Some(format!("mma: N {n}, K {k}, BM {}", p.bm));
            }
        }
        Kernel::Wgmma => {
            if n % WGMMA_BN != 0 || k % WGMMA_BK != 0 || ![64, 128, 256].contains(&p.bm) {
                return Some(format!("wgmma: N {n}, K {k}, BM {}", p.bm));
            }
            let stages = (k / WGMMA_BK) as u64;
            let (split, per) = (p.split as u64, p.per as u64);
            if split < 1 || per < 1 || split * per < stages || (split - 1) * per >= stages {
                return Some(format!(
                    "split {} × per {} does not cover {stages} stages exactly",
                    p.split, p.per
                ));
            }
            let tiles = (n / WGMMA_BN) as u64 * m.div_ceil(p.bm as usize) as u64;
            if p.grid < 1 || p.grid as u64 > tiles * p.split as u64 {
                return Some(format!(
                    "grid {} out of 1..={}",
                    p.grid,
                    tiles * p.split as u64
                ));
            }
            if !fits(p.split, tiles) {
                return Some(format!("split {} does not fit the workspace", p.split));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Occupancy of the decode kernels measured on an H200 (the bench's "launch limits").
    const H200_CTAS: [[u32; 4]; 4] = [[9, 4, 2, 1], [9, 4, 2, 1], [6, 3, 1, 0], [6, 3, 0, 0]];

    /// Device tables the sweeps run on: the H200's occupancy, an invented one, the fallback of a
    /// failed occupancy query (all 0), and one CTA per SM everywhere.
    fn devices() -> Vec<DeviceLimits> {
        let tables = [
            H200_CTAS,
            [[10, 8, 4, 2], [8, 6, 3, 2], [6, 3, 1, 0], [3, 1, 0, 0]],
            [[0; 4]; 4],
            [[1; 4]; 4],
        ];
        let mut v = Vec::new();
        for sms in [1, 7, 78, 114, 132, 144] {
            for smem in [0, 101_376, 233_472] {
                for t in tables {
                    v.push(DeviceLimits {
                        num_sms: sms,
                        smem_per_sm: smem,
                        decode_ctas_per_sm: t,
                    });
                }
            }
        }
        v
    }

    fn ms() -> Vec<usize> {
        let mut v: Vec<usize> = (1..=66).collect();
        v.extend([96, 127, 128, 129, 192, 256, 257, 384, 1000, 2048, 4096]);
        v
    }

    const NS: [usize; 8] = [128, 256, 384, 1024, 4096, 8192, 11008, 28672];
    const KS: [usize; 7] = [128, 256, 640, 4096, 8192, 11008, 28672];

    fn configs(k: usize) -> Vec<GemmConfig> {
        let d = GemmConfig::default();
        let kc = (k / CHUNK_K) as u32;
        let mut v = vec![d];
        for kernel in [KernelChoice::Decode, KernelChoice::Wgmma, KernelChoice::Mma] {
            v.push(GemmConfig { kernel, ..d });
        }
        for s in [1, 3, kc] {
            v.push(GemmConfig {
                split_k: Some(s),
                ..d
            });
            v.push(GemmConfig {
                kernel: KernelChoice::Wgmma,
                split_k: Some(s),
                ..d
            });
        }
        for cap in [1, 2, 4] {
            v.push(GemmConfig {
                decode_max_cta_parts: cap,
                ..d
            });
        }
        for fp in [(1, 5), (2, 3), (4, 2), (8, 1)] {
            if fp.1 <= kc {
                v.push(GemmConfig {
                    decode_plan: Some(fp),
                    ..d
                });
            }
        }
        v.push(GemmConfig {
            pdl: false,
            wgmma_tma_store: false,
            ..d
        });
        v
    }

    fn workspaces(m: usize, n: usize) -> [WorkspaceCapacity; 4] {
        [
            WorkspaceCapacity::UNLIMITED,
            WorkspaceCapacity::default(),
            WorkspaceCapacity {
                partials: 2 * m * n + 5,
                partials_aligned: true,
                counters: 4096,
            },
            // Room for any split, but misaligned: no split-K.
            WorkspaceCapacity {
                partials_aligned: false,
                ..WorkspaceCapacity::UNLIMITED
            },
        ]
    }

    /// Every plan of the sweep is one the launchers take, splits only what its workspace holds,
    /// runs the kernel the configuration names, and the workspace the size query reports is
    /// enough for the automatic plan to split as it would with unlimited room.
    #[test]
    fn every_plan_is_valid() {
        let mut count = 0usize;
        for lim in devices() {
            for &n in &NS {
                for &k in &KS {
                    if k % WGMMA_BK != 0 {
                        continue;
                    }
                    for g in [64, 128, 256] {
                        if k % g != 0 {
                            continue;
                        }
                        for &m in &ms() {
                            crate::check_gemm_shape(m, n, k, g).unwrap();
                            for cfg in configs(k) {
                                if cfg.kernel == KernelChoice::Decode && m > DECODE_MAX_M {
                                    continue;
                                }
                                for ws in workspaces(m, n) {
                                    let p = plan(m, n, k, &cfg, &lim, &ws);
                                    if let Some(e) = plan_error(m, n, k, &p, &ws) {
                                        panic!(
                                            "{m}×{n}×{k} g{g} {cfg:?} {lim:?} {ws:?}: {p:?}: {e}"
                                        );
                                    }
                                    assert_eq!(p.kernel, choose_kernel(m, n, cfg.kernel));
                                    assert_eq!(p.pdl, cfg.pdl);
                                    if p.kernel == Kernel::Wgmma {
                                        assert_eq!(p.tma_store, cfg.wgmma_tma_store);
                                        assert!(p.grid <= lim.num_sms);
                                    }
                                    count += 1;
                                }
                                if cfg.kernel == KernelChoice::Auto && cfg.split_k.is_none() {
                                    let (parts, counters) = workspace_len(m, n, k, &cfg, &lim);
                                    let sized = WorkspaceCapacity {
                                        partials: parts,
                                        partials_aligned: true,
                                        counters,
                                    };
                                    assert_eq!(
                                        plan(m, n, k, &cfg, &lim, &sized),
                                        plan(m, n, k, &cfg, &lim, &WorkspaceCapacity::UNLIMITED),
                                        "{m}×{n}×{k} {cfg:?} {lim:?}: the reported workspace \
                                         ({parts}, {counters}) shrinks the plan"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(count > 1_000_000, "{count} plans");
    }

    /// The automatic choice is what KernelChoice::Auto's documentation says: decode for M ≤ 32,
    /// wgmma above.
    #[test]
    fn auto_takes_decode_up_to_32_tokens() {
        for m in 1..=4096 {
            let want = if m <= 32 {
                Kernel::Decode
            } else {
                Kernel::Wgmma
            };
            assert_eq!(choose_kernel(m, 4096, KernelChoice::Auto), want, "M = {m}");
        }
    }

    /// A few plans written out, measured on the H100 and H200 (the rule's comments cite them).
    #[test]
    fn known_plans() {
        let lim = DeviceLimits {
            num_sms: 132,
            smem_per_sm: 233_472,
            decode_ctas_per_sm: H200_CTAS,
        };
        let d = GemmConfig::default();
        let un = WorkspaceCapacity::UNLIMITED;
        // 8192² M = 1: N alone gives 128 row blocks, so the K split stays inside the CTA.
        let p = plan(1, 8192, 8192, &d, &lim, &un);
        assert_eq!((p.kernel, p.split), (Kernel::Decode, 1));
        assert!(p.parts > 1);
        // Without a workspace nothing splits across CTAs.
        let p = plan(1, 4096, 4096, &d, &lim, &WorkspaceCapacity::default());
        assert_eq!(p.split, 1);
        // M = 4096 on the wgmma kernel: BM 256 and no split.
        let p = plan(4096, 8192, 8192, &d, &lim, &un);
        assert_eq!((p.kernel, p.bm, p.split), (Kernel::Wgmma, 256, 1));
        // The mma kernel's token tile: 128 once its tiles fill the SMs.
        let mma = GemmConfig {
            kernel: KernelChoice::Mma,
            ..d
        };
        assert_eq!(plan(4096, 4096, 4096, &mma, &lim, &un).bm, 128);
        assert_eq!(plan(7, 4096, 4096, &mma, &lim, &un).bm, 32);
    }

    /// Writes the plans of a sweep, in the format of the old C++ rule's harness, to the file
    /// named by DGQ_PLAN_DUMP (with its inputs next to it): for checking the Rust rule against
    /// a copy of the rule it replaced. Run with `--ignored`.
    #[test]
    #[ignore]
    fn dump_plans() {
        use std::fmt::Write as _;
        let Some(path) = std::env::var_os("DGQ_PLAN_DUMP") else {
            return;
        };
        let path = std::path::PathBuf::from(path);
        for (di, lim) in devices().iter().enumerate() {
            let mut input = format!("{} {}", lim.num_sms, lim.smem_per_sm);
            for row in lim.decode_ctas_per_sm {
                for c in row {
                    write!(input, " {c}").unwrap();
                }
            }
            input.push('\n');
            let mut out = String::new();
            for &n in &NS {
                for &k in &KS {
                    for &m in &ms() {
                        for cfg in configs(k) {
                            if cfg.kernel == KernelChoice::Decode && m > DECODE_MAX_M {
                                continue;
                            }
                            let kernel = match cfg.kernel {
                                KernelChoice::Auto => 0,
                                KernelChoice::Decode => 1,
                                KernelChoice::Wgmma => 2,
                                KernelChoice::Mma => 3,
                            };
                            let (fp, fs) = cfg.decode_plan.unwrap_or((0, 0));
                            for (wi, ws) in workspaces(m, n).iter().take(3).enumerate() {
                                let wsmode = [1, 0, 2][wi];
                                writeln!(
                                    input,
                                    "{m} {n} {k} {kernel} {} {} {fp} {fs} {wsmode}",
                                    cfg.split_k.unwrap_or(0),
                                    cfg.decode_max_cta_parts
                                )
                                .unwrap();
                                let (wp, wc) = workspace_len(m, n, k, &cfg, lim);
                                let p = plan(m, n, k, &cfg, lim, ws);
                                match p.kernel {
                                    Kernel::Decode => writeln!(
                                        out,
                                        "{wp} {wc} D {} {} {} {} {}",
                                        p.parts, p.split, p.per, p.grid, p.smem
                                    ),
                                    Kernel::Wgmma => writeln!(
                                        out,
                                        "{wp} {wc} W {} {} {} {}",
                                        p.bm, p.split, p.per, p.grid
                                    ),
                                    Kernel::Mma => writeln!(out, "{wp} {wc} M {} {}", p.bm, p.grid),
                                }
                                .unwrap();
                            }
                        }
                    }
                }
            }
            std::fs::write(path.with_extension(format!("{di}.in")), input).unwrap();
            std::fs::write(path.with_extension(format!("{di}.rust")), out).unwrap();
        }
    }
}
