// Hopper prefill kernel, warp-specialised: one producer warpgroup feeds a ring of shared-memory
// stages guarded by mbarriers; two consumer warpgroups dequantize the u4 weights from shared
// memory into registers and run wgmma (register A = weights, shared-memory B = activations).
//
// CTA tile: 128 output channels × BM tokens (BM = 64, 128 or 256) × 128 K per stage. Each
// consumer warpgroup owns 64 channels × BM tokens: one m64nBMk32 wgmma per k32 step, so every
// dequantized weight serves BM tokens. Consumers never compute copy addresses nor meet at a CTA
// barrier; each keeps three chunk groups of wgmma in flight while it dequantizes the next chunk.
// (A stand-alone loop of exactly this consumer work — LDS, meta __ldg, dequant, RS wgmma — runs
// at 1920 TOPS on the H100, so the consumer side is not what limits the kernel.)
//
// Producer, per stage: one thread arms the stage's `full` barrier with the byte count, loads the
// BM × 128-byte activation tile with one TMA copy (2-D tensor map over the caller's int8 [M, K],
// 128-byte swizzle, rows past M zero-filled) and issues one 1 KB bulk copy per 16-channel row
// tile (cp.async.bulk; the prepared weights of a row tile are contiguous over the stage's
// 128 K). The prepared weights hold each lane's A fragments in the hardware's own K order, so
// the activations need no permutation (until h100-v8 they were permuted by a separate kernel
// into a workspace copy: 2·M·K bytes of extra traffic and one more launch per GEMM).
// Consumers arrive on `empty` once the wgmma of a stage has retired. The (S2, a) meta words are
// read with __ldg issued stages ahead of their use: bulk-copying them into the stage (16 copies
// of 32 B) made the kernel 1.36× slower.
#pragma once

#include <cuda.h>  // CUtensorMap

#include "wgmma_ops.cuh"

namespace dgq {

constexpr int kWgmmaBN = 128;           // output channels per CTA
constexpr int kWgmmaChunks = 2;         // 64-deep chunks per stage (BK = 128)
constexpr int kWgmmaThreads = 384;      // warpgroups 0, 1: consumers; warpgroup 2: producer
constexpr int kWgmmaConsumerRegs = 208;  // setmaxnreg: 2·128·208 + 128·88 = 384·168, the launch pool
constexpr int kWgmmaProducerRegs = 88;
constexpr int kWgmmaGroupM = 8;  // raster: 8 token tiles share each weight tile while it sits in L2

// TSTORE: f16/bf16 tiles leave through shared memory and a TMA store (see wgmma_kernel), which
// needs a 128-channel × BM output tile of shared memory next to the ring (BM = 256: one stage
// fewer to fit).
template <int BM, bool TSTORE = false>
struct WgmmaCfg {
  static constexpr int kXU4 = BM * 8;                              // BM rows × 128 B
  static constexpr int kWU4 = (kWgmmaBN / 16) * kWgmmaChunks * 32;       // 8 row tiles × 1 KB
  static constexpr int kStageU4 = kXU4 + kWU4;                     // a multiple of 1 KB
  static constexpr int kStages = BM == 256 ? (TSTORE ? 4 : 5) : 8;  // ≤ 200 KB of ring (more measured the same)
  static constexpr int kOutU4 = TSTORE ? BM * kWgmmaBN * 2 / 16 : 0;  // two [BM][64] 16-bit boxes
  static constexpr size_t kSmem = static_cast<size_t>(kStages * kStageU4 + kOutU4) * 16 + 2 * kStages * 8;
  // Stages of meta words loaded ahead into the consumers' register ring (BM = 256 has no
  // registers for four, and its stages are long enough for two).
  static constexpr int kMetaAhead = BM == 256 ? 2 : 4;
  static_assert(kSmem <= 227 * 1024, "shared memory per CTA");
};

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_copy_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
// TMA: box {128 bytes of K at k0, BM rows at row0} of a 2-D tensor map -> shared memory.
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int k0, int row0, uint64_t *bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k0), "r"(row0), "r"(smem_u32(bar))
      : "memory");
}
// TMA: shared memory -> box {64 16-bit channels at n0, BM rows at row0} of a 2-D tensor map.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap *map, const void *src, int n0, int row0) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_u32(src)), "r"(n0), "r"(row0)
               : "memory");
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
// Barrier among the 256 consumer threads only (the producer warpgroup has left).
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

template <int BM>
__device__ __forceinline__ void wgmma_rs(int32_t (&d)[BM / 2], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (BM == 256) {
    wgmma_m64n256k32_rs(d, a, desc_b);
  } else if constexpr (BM == 128) {
    wgmma_m64n128k32_rs(d, a, desc_b);
  } else {
    wgmma_m64n64k32_rs(d, a, desc_b);
  }
}

// grid.x: output tiles (grouped raster); grid.y: K splits. With split > 1 every CTA writes its
// INT32 partial tile to the workspace and the last CTA of a tile (atomic ticket) reduces the
// splits and runs the epilogue, then rearms the tile's counter.
// Persistent: gridDim.x CTAs (at most one per SM) loop over the work items w = tile + tiles·s
// (output tile in grouped raster order, K split s). The ring's slots and phases carry over from
// one item to the next, so the producer loads the next item while the consumers run the
// epilogue of the previous one. With split > 1 every item writes its INT32 partial tile to the
// workspace and the last item of a tile (atomic ticket) reduces the splits and runs the
// epilogue, then rearms the tile's counter.
struct WgmmaItem {
  int tile, tile_n, m_base, rt0, kt_begin, kt_total, s;
};

template <int BM>
__device__ __forceinline__ WgmmaItem wgmma_item(const GemmParams &p, int w, int tiles, int stages_per_split) {
  WgmmaItem it;
  const int tiles_n = p.n / kWgmmaBN;
  const int tiles_m = (p.m + BM - 1) / BM;
  it.tile = w % tiles;
  it.s = w / tiles;
  const int in_group = kWgmmaGroupM * tiles_n;
  const int first_m = (it.tile / in_group) * kWgmmaGroupM;
  const int group_m = min(tiles_m - first_m, kWgmmaGroupM);
  const int tile_m = first_m + (it.tile % in_group) % group_m;
  it.tile_n = (it.tile % in_group) / group_m;
  it.m_base = tile_m * BM;
  it.rt0 = it.tile_n * (kWgmmaBN / 16);
  const int kc = p.k / kChunkK;
  it.kt_begin = it.s * stages_per_split;
  it.kt_total = min(kc / kWgmmaChunks, it.kt_begin + stages_per_split) - it.kt_begin;
  return it;
}

// TSTORE (f16/bf16 output, 16-byte aligned): a tile without split-K is converted into a
// 128-byte-swizzled tile in shared memory and written by two TMA stores (rows past M clipped by
// the tensor map), so the consumers go on to the next tile's MMAs while it drains; otherwise
// every thread stores its channel pairs to global memory itself.
template <int BM, int OUT, bool TSTORE>
__global__ void __launch_bounds__(kWgmmaThreads, 1) wgmma_kernel(const GemmParams p, const __grid_constant__ CUtensorMap tmap_x,
                                                           const __grid_constant__ CUtensorMap tmap_out,
                                                           const int split, const int stages_per_split) {
  using C = WgmmaCfg<BM, TSTORE>;
  static_assert(!TSTORE || OUT != DGQ_OUT_I32, "the TMA-store epilogue writes 16-bit outputs");
  extern __shared__ __align__(1024) uint4 smem[];
  uint64_t *full = reinterpret_cast<uint64_t *>(smem + C::kStages * C::kStageU4 + C::kOutU4);
  uint64_t *empty = full + C::kStages;
  const int tid = threadIdx.x, lane = tid & 31;
  const int wg = tid >> 7;

  const int tiles = (p.n / kWgmmaBN) * ((p.m + BM - 1) / BM);
  const int items = tiles * split;
  const int kc = p.k / kChunkK;
  const int ng = p.k / p.group_size;
  // Persistent: work items blockIdx.x, blockIdx.x + gridDim.x, ...
  const int w0 = static_cast<int>(blockIdx.x);
  const int stride = static_cast<int>(gridDim.x);

  if (tid == 0) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full + s, 1);  // the producer's expect_tx arrival
      mbar_init(empty + s, 8);  // one per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  // Launched with PDL: the launch and the prologue above overlap the previous kernel's tail;
  // nothing (activations, weights, scales, workspace) is read before it has completed.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");

  if (wg == 2) {
    // ---------------------------------- producer ----------------------------------
    setmaxnreg_dec<kWgmmaProducerRegs>();
    if (tid != 256) return;
    // One thread issues every copy in straight-line code (spread over a warp's lanes, the
    // compiler serialises bulk copies through an elect loop anyway).
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&tmap_x)) : "memory");
    const size_t wrow = static_cast<size_t>(kc) * 32;  // uint4 per row tile
    int slot = 0, round = 0;  // of the next stage to load
    for (int w = w0; w < items; w += stride) {
      const WgmmaItem it = wgmma_item<BM>(p, w, tiles, stages_per_split);
      const uint4 *wsrc =
          p.wq + static_cast<size_t>(it.rt0) * kc * 32 + static_cast<size_t>(it.kt_begin) * (kWgmmaChunks * 32);
      for (int kt = 0; kt < it.kt_total; ++kt) {
        if (round > 0) mbar_wait(empty + slot, (round - 1) & 1);
        uint4 *sx = smem + slot * C::kStageU4;
        // The TMA box counts in full even where its rows lie past M (zero-filled).
        mbar_arrive_expect_tx(full + slot, (C::kWU4 + C::kXU4) * 16);
        tma_load_2d(sx, &tmap_x, (it.kt_begin + kt) * 128, it.m_base, full + slot);
        const uint4 *ws = wsrc + static_cast<size_t>(kt) * (kWgmmaChunks * 32);
#pragma unroll
        for (int r = 0; r < kWgmmaBN / 16; ++r) {
          bulk_copy_g2s(sx + C::kXU4 + r * (kWgmmaChunks * 32), ws + r * wrow, kWgmmaChunks * 32 * 16, full + slot);
        }
        if (++slot == C::kStages) {
          slot = 0;
          ++round;
        }
      }
    }
    // No early griddepcontrol.launch_dependents: measured slower (4096² M = 64: 19.3 vs 16.7 µs).
    return;
  }

  // ---------------------------------- consumers ----------------------------------
  setmaxnreg_inc<kWgmmaConsumerRegs>();
  const int warp_in_wg = (tid >> 5) & 3;
  const int g = lane >> 2, t = lane & 3;
  const int rtl = wg * 4 + warp_in_wg;  // this warp's 16-channel row tile within the CTA
  __shared__ bool is_last;

  // Per 64-deep chunk: dequantize into that chunk's registers and issue its two wgmma. Four
  // chunk buffers (8 registers each) let three chunk groups stay in flight (wait<3>) while the
  // next chunk is dequantized; a stage's slot is released once its second chunk has retired.
  uint32_t a[4][2][4];
  int slot = 0, round = 0;
  auto release = [&](int back) {  // the slot `back` stages before the next one
    __syncwarp();
    if (lane == 0) mbar_arrive(empty + (slot >= back ? slot - back : slot + C::kStages - back));
  };
  for (int w = w0; w < items; w += stride) {
    const WgmmaItem it = wgmma_item<BM>(p, w, tiles, stages_per_split);
    int32_t acc[BM / 2];
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) acc[i] = 0;

    const uint32_t *meta_row = p.wmeta + static_cast<size_t>(it.rt0 + rtl) * ng * 8 + g;
    // The (S2, a) meta words are loaded C::kMetaAhead stages before their use, into a register
    // ring: loaded only just before the stage, their global-load latency was exposed once per
    // stage (the stage's wgmma work at BM = 64 is far shorter than an L2 or HBM round trip).
    // Group of the next chunk to load, tracked incrementally (no division in the loop).
    int grp = (it.kt_begin * kWgmmaChunks) / p.chunks_per_group;
    int in_grp = (it.kt_begin * kWgmmaChunks) % p.chunks_per_group;
    uint32_t mring[C::kMetaAhead][kWgmmaChunks];
    auto load_meta = [&](uint32_t(&m)[kWgmmaChunks]) {
#pragma unroll
      for (int c = 0; c < kWgmmaChunks; ++c) {
        m[c] = __ldg(meta_row + static_cast<size_t>(grp) * 8);
        if (++in_grp == p.chunks_per_group) {
          in_grp = 0;
          ++grp;
        }
      }
    };
#pragma unroll
    for (int j = 0; j < C::kMetaAhead; ++j) {
      if (j < it.kt_total) load_meta(mring[j]);
    }

    auto stage = [&](int kt, uint32_t(&a0)[2][4], uint32_t(&a1)[2][4], uint32_t(&meta)[kWgmmaChunks]) {
      mbar_wait(full + slot, round & 1);
      const uint4 *sx = smem + slot * C::kStageU4;
      const uint4 *sw = sx + C::kXU4;
#pragma unroll
      for (int c = 0; c < kWgmmaChunks; ++c) {
        uint32_t(&ac)[2][4] = c == 0 ? a0 : a1;
        dequant(sw[(rtl * kWgmmaChunks + c) * 32 + lane], meta[c], ac);
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          // k32 step j = 2c + s starts 32·j bytes into every (swizzled) 128-byte row.
          wgmma_rs<BM>(acc, ac[s], smem_desc_sw128(reinterpret_cast<const char *>(sx) + 32 * (2 * c + s)));
        }
        wgmma_commit();
        wgmma_wait<3>();
        // Chunks up to 2·kt + c − 3 have retired: at c = 0 that completes stage kt − 2.
        if (c == 0 && kt >= 2) release(2);
      }
      if (kt + C::kMetaAhead < it.kt_total) load_meta(meta);
      if (++slot == C::kStages) {
        slot = 0;
        ++round;
      }
    };
    int kt = 0;
    if constexpr (C::kMetaAhead == 4) {
      for (; kt + 3 < it.kt_total; kt += 4) {
        stage(kt, a[0], a[1], mring[0]);
        stage(kt + 1, a[2], a[3], mring[1]);
        stage(kt + 2, a[0], a[1], mring[2]);
        stage(kt + 3, a[2], a[3], mring[3]);
      }
      if (kt < it.kt_total) stage(kt, a[0], a[1], mring[0]);
      if (kt + 1 < it.kt_total) stage(kt + 1, a[2], a[3], mring[1]);
      if (kt + 2 < it.kt_total) stage(kt + 2, a[0], a[1], mring[2]);
    } else {
      static_assert(C::kMetaAhead == 2, "the loops unroll the meta ring by hand");
      for (; kt + 1 < it.kt_total; kt += 2) {
        stage(kt, a[0], a[1], mring[0]);
        stage(kt + 1, a[2], a[3], mring[1]);
      }
      if (kt < it.kt_total) stage(kt, a[0], a[1], mring[0]);
    }
    wgmma_wait<0>();
    // The item's last two stages (or its only one) retire here.
    if (it.kt_total >= 2) release(2);
    release(1);

    const int n0 = (it.rt0 + rtl) * 16 + g;
    if (split == 1) {
      // TSTORE: the staging tile of the previous tile's TMA stores must have been read before
      // it is rewritten. Box wg (channels 64·wg..64·wg+63 of the tile) holds row r at byte
      // 128·r, its 16-byte chunk c at chunk c ^ (r % 8): a warp's 4-byte writes (8 rows × 4
      // channel pairs) hit 32 different banks.
      char *staging = reinterpret_cast<char *>(smem + C::kStages * C::kStageU4);
      if constexpr (TSTORE) {
        if (tid == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
        consumer_sync();
      }
      // This thread's two channels n0, n0 + 8; its rows in batches of row pairs, each batch's
      // row factors loaded together ahead of its stores (see store_scaled).
      const float s1v[2] = {col_scale<OUT>(p, n0), col_scale<OUT>(p, n0 + 8)};
      const float bv[2] = {col_bias<OUT>(p, n0), col_bias<OUT>(p, n0 + 8)};
      constexpr int kBatch = BM == 256 ? 4 : 8;
      constexpr int kBatches = BM / 8 / kBatch;
      // f16 / bf16 pairs: lanes g and g ^ 1 swap one value so that each writes two adjacent
      // channels of one row with a 4-byte store (even g: row m0, odd g: row m0 + 1).
      const bool pairs = OUT != DGQ_OUT_I32 && (reinterpret_cast<uintptr_t>(p.out) & 3) == 0;
      const bool odd = g & 1;
#pragma unroll
      for (int b = 0; b < kBatches; ++b) {
        float sx[kBatch][2];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            sx[j][e] = row_scale<OUT>(p, min(it.m_base + (b * kBatch + j) * 8 + t * 2 + e, p.m - 1));
          }
        }
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int i = b * kBatch + j;
          const int m0 = it.m_base + i * 8 + t * 2;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int n = n0 + h * 8;
            if constexpr (OUT != DGQ_OUT_I32) {
              if (TSTORE || pairs) {
                const uint32_t y0 = scaled_bits<OUT>(p, acc[i * 4 + 2 * h], sx[j][0], s1v[h], bv[h]);
                const uint32_t y1 = scaled_bits<OUT>(p, acc[i * 4 + 2 * h + 1], sx[j][1], s1v[h], bv[h]);
                const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? y0 : y1, 4);
                const uint32_t v = odd ? (got | (y1 << 16)) : (y0 | (got << 16));
                const int m = odd ? m0 + 1 : m0;
                if constexpr (TSTORE) {
                  // Row and even channel of the pair within box wg; rows past M are clipped by
                  // the TMA store.
                  const int r = m - it.m_base, c = (rtl % 4) * 16 + 8 * h + (g & ~1);
                  *reinterpret_cast<uint32_t *>(staging + wg * (BM * 128) + r * 128 + (((c >> 3) ^ (r & 7)) << 4) +
                                                (c & 7) * 2) = v;
                } else if (m < p.m) {
                  *reinterpret_cast<uint32_t *>(static_cast<uint16_t *>(p.out) + static_cast<size_t>(m) * p.n +
                                                (odd ? n - 1 : n)) = v;
                }
                continue;
              }
            }
            if constexpr (!TSTORE) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                if (m0 + e < p.m) store_scaled<OUT>(p, m0 + e, n, acc[i * 4 + 2 * h + e], sx[j][e], s1v[h], bv[h]);
              }
            }
          }
        }
      }
      if constexpr (TSTORE) {
        // Generic-proxy writes -> the TMA (async proxy) reads them; the consumers go on to the
        // next tile while the two stores drain.
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        consumer_sync();
        if (tid == 0) {
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            tma_store_2d(&tmap_out, staging + q * (BM * 128), it.tile_n * kWgmmaBN + 64 * q, it.m_base);
          }
          asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
        }
      }
      continue;
    }

    int32_t *part = p.ws_partials + static_cast<size_t>(it.s) * p.m * p.n;
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) {
      const int m0 = it.m_base + i * 8 + t * 2;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int m = m0 + (r & 1), n = n0 + (r >> 1) * 8;
        if (m < p.m) part[static_cast<size_t>(m) * p.n + n] = acc[i * 4 + r];
      }
    }
    __threadfence();
    consumer_sync();
    if (tid == 0) is_last = atomicAdd(p.ws_counters + it.tile, 1u) == static_cast<unsigned>(split - 1);
    consumer_sync();
    if (is_last) {
      __threadfence();
      splitk_reduce<OUT, 4>(p, split, it.m_base, min(BM, p.m - it.m_base), it.tile_n * kWgmmaBN, kWgmmaBN, tid, 256);
      if (tid == 0) p.ws_counters[it.tile] = 0u;
    }
    consumer_sync();  // is_last is read by every consumer before the next item may rewrite it
  }
  // The last tile's TMA stores complete before the CTA (and its shared memory) goes away.
  if (TSTORE && tid == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

}  // namespace dgq
