// Hopper prefill kernel, warp-specialised: one producer warpgroup feeds a ring of shared-memory
// stages guarded by mbarriers; two consumer warpgroups dequantize the u4 weights from shared
// memory into registers and run wgmma (register A = weights, shared-memory B = activations).
//
// Why this shape (ncu on the previous single-role kernel: 12.5 % occupancy, issue slots 26 %
// busy, a CTA barrier per stage): the consumers no longer compute copy addresses nor meet at a
// CTA barrier, so each warpgroup's dequant of stage k+1 overlaps its wgmma of stage k and the two
// warpgroups drift freely.
//
// Producer, per stage: thread 0 arms the stage's `full` barrier with the weight bytes and 16
// lanes issue one 1 KB bulk copy each (cp.async.bulk: the prepared weights of a 16-channel row
// tile are contiguous over the stage's 128 K). The activations need the prepared K permutation
// (a 4×4 transpose of 4-byte words in every 64-byte chunk) that no bulk copy can do, so every
// producer thread cp.async's its two (token, 64-byte) pieces in 16-byte units straight into their
// 128-byte-swizzled slots, waits for them two stages later, transposes them in place through
// registers and arrives on `full` after a proxy fence. Consumers arrive on `empty` once their
// wgmma of the stage has retired.
//
// Tile: 256 channels × 128 tokens × 128 K per stage (same as wgmma_kernel), split-K as there.
#pragma once

#include "gemm_wgmma.cuh"

namespace dgq {

constexpr int kWsStages = 6;
constexpr int kWsLag = 2;            // stages of activation copies in flight per producer thread
constexpr int kWsThreads = 384;      // warpgroup 0, 1: consumers; warpgroup 2: producer
constexpr int kWsConsumerRegs = 208;  // setmaxnreg: 2·128·208 + 128·88 = 384·168, the launch pool
constexpr int kWsProducerRegs = 88;
// A stage: activations (16 KB, 1024-aligned for the swizzle), then weights (16 KB). The consumers
// read the (S2, a) meta words with __ldg issued before they wait for the stage: bulk-copying them
// into the stage as well (16 copies of 32 B) made the kernel 1.36× slower (ncu, 28672×8192×4096).
constexpr int kWsStageU4 = kWgStageU4;
constexpr size_t kWsSmemBytes = static_cast<size_t>(kWsStages) * kWsStageU4 * 16 + 2 * kWsStages * 8;

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

template <int OUT>
__global__ void __launch_bounds__(kWsThreads, 1) ws_kernel(const GemmParams p, const int split,
                                                           const int stages_per_split) {
  extern __shared__ __align__(1024) uint4 smem[];
  uint64_t *full = reinterpret_cast<uint64_t *>(smem + kWsStages * kWsStageU4);
  uint64_t *empty = full + kWsStages;
  const int tid = threadIdx.x, lane = tid & 31;
  const int wg = tid >> 7;

  const int tiles_n = p.n / kWgBN;
  const int tiles_m = (p.m + kWgBM - 1) / kWgBM;
  const int pid = blockIdx.x;
  const int in_group = kPfGroupM * tiles_n;
  const int first_m = (pid / in_group) * kPfGroupM;
  const int group_m = min(tiles_m - first_m, kPfGroupM);
  const int tile_m = first_m + (pid % in_group) % group_m;
  const int tile_n = (pid % in_group) / group_m;

  const int kc = p.k / kChunkK;
  const int ng = p.k / p.group_size;
  const int kt_begin = blockIdx.y * stages_per_split;
  const int kt_end = min(kc / kWgChunks, kt_begin + stages_per_split);
  const int kt_total = kt_end - kt_begin;
  const int rt0 = tile_n * (kWgBN / 16);
  const int m_base = tile_m * kWgBM;

  if (tid == 0) {
    for (int s = 0; s < kWsStages; ++s) {
      mbar_init(full + s, kWgBM + 1);  // 128 producer threads + the expect_tx arrival
      mbar_init(empty + s, 8);         // one per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 2) {
    // ---------------------------------- producer ----------------------------------
    setmaxnreg_dec<kWsProducerRegs>();
    const int pt = tid - 256;
    // Pieces pt and pt + 128 of the stage's 256 (token row r = piece / 2, 64-byte half h).
    const int8_t *xsrc[2];
    int xbytes[2], row[2], half[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int piece = pt + 128 * i;
      row[i] = piece >> 1;
      half[i] = piece & 1;
      const int m = m_base + row[i];
      xbytes[i] = m < p.m ? 16 : 0;  // tokens past M are zero-filled
      xsrc[i] = p.x + static_cast<size_t>(m < p.m ? m : 0) * p.k + static_cast<size_t>(kt_begin) * 128 + 64 * half[i];
    }
    // Thread 0 issues the stage's 16 bulk copies in straight-line code: spread over the lanes of
    // a warp, the compiler serialises them through an elect loop that is several times slower.
    const uint4 *wsrc = p.wq + static_cast<size_t>(rt0) * kc * 32 + static_cast<size_t>(kt_begin) * (kWgChunks * 32);
    const size_t wrow = static_cast<size_t>(kc) * 32;  // uint4 per row tile

    for (int kt = 0; kt < kt_total + kWsLag; ++kt) {
      // First finish stage kt - LAG (its copies were issued LAG iterations ago), so that its
      // `full` arrival never waits behind the `empty` wait of a later stage.
      const int j = kt - kWsLag;
      if (j >= 0) {
        cp_async_wait<kWsLag - 1>();
        const int slot = j % kWsStages;
        uint4 *sx = smem + slot * kWsStageU4;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          // Natural 16-byte chunk a sits at slot (4h + a) ^ (r % 8); the prepared order wants
          // chunk j' = word j' of each natural chunk there: a 4×4 word transpose in place.
          uint4 v[4];
          int pos[4];
#pragma unroll
          for (int a = 0; a < 4; ++a) {
            pos[a] = row[i] * 8 + ((4 * half[i] + a) ^ (row[i] & 7));
            v[a] = sx[pos[a]];
          }
          sx[pos[0]] = make_uint4(v[0].x, v[1].x, v[2].x, v[3].x);
          sx[pos[1]] = make_uint4(v[0].y, v[1].y, v[2].y, v[3].y);
          sx[pos[2]] = make_uint4(v[0].z, v[1].z, v[2].z, v[3].z);
          sx[pos[3]] = make_uint4(v[0].w, v[1].w, v[2].w, v[3].w);
        }
        fence_proxy_async();  // generic-proxy writes above -> wgmma's async-proxy reads
        mbar_arrive(full + slot);
      }
      if (kt < kt_total) {
        const int slot = kt % kWsStages;
        if (kt >= kWsStages) mbar_wait(empty + slot, ((kt / kWsStages) - 1) & 1);
        uint4 *sx = smem + slot * kWsStageU4;
        if (pt == 0) {
          mbar_arrive_expect_tx(full + slot, kWgW_U4 * 16);
          const uint4 *ws = wsrc + static_cast<size_t>(kt) * (kWgChunks * 32);
#pragma unroll
          for (int r = 0; r < kWgBN / 16; ++r) {
            bulk_copy_g2s(sx + kWgX_U4 + r * (kWgChunks * 32), ws + r * wrow, kWgChunks * 32 * 16, full + slot);
          }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
          for (int a = 0; a < 4; ++a) {
            const int pos = (4 * half[i] + a) ^ (row[i] & 7);
            cp_async16(sx + row[i] * 8 + pos, xsrc[i] + static_cast<size_t>(kt) * 128 + 16 * a, xbytes[i]);
          }
        }
      }
      cp_async_commit();
    }
    return;
  }

  // ---------------------------------- consumers ----------------------------------
  setmaxnreg_inc<kWsConsumerRegs>();
  const int warp_in_wg = (tid >> 5) & 3;
  const int g = lane >> 2;

  int32_t acc[2][64];
#pragma unroll
  for (int s = 0; s < 2; ++s)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[s][i] = 0;

  const int rtl0 = wg * 8 + warp_in_wg;  // + sub * 4
  const uint32_t *meta0 = p.wmeta + static_cast<size_t>(rt0 + rtl0) * ng * 8 + g;
  const size_t meta_sub_stride = static_cast<size_t>(4) * ng * 8;

  // Per 64-deep chunk: dequantize both sub-tiles into that chunk's registers, issue its four
  // wgmma, then retire the previous chunk's group. Two chunk-sized register buffers (32 regs)
  // instead of two stage-sized ones keep the consumer within its register budget, so ptxas
  // never has to serialize the wgmma.
  uint32_t a[kWgChunks][2][2][4];
  for (int kt = 0; kt < kt_total; ++kt) {
    const int slot = kt % kWsStages;
    // Issued before the wait so that their latency hides behind it.
    uint32_t meta[kWgChunks][2];
#pragma unroll
    for (int c = 0; c < kWgChunks; ++c) {
      const int grp = ((kt_begin + kt) * kWgChunks + c) / p.chunks_per_group;
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) meta[c][sub] = __ldg(meta0 + sub * meta_sub_stride + static_cast<size_t>(grp) * 8);
    }
    mbar_wait(full + slot, (kt / kWsStages) & 1);
    const uint4 *sx = smem + slot * kWsStageU4;
    const uint4 *sw = sx + kWgX_U4;
#pragma unroll
    for (int c = 0; c < kWgChunks; ++c) {
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const uint4 pw = sw[((rtl0 + sub * 4) * kWgChunks + c) * 32 + lane];
        dequant(pw, meta[c][sub], a[c][sub]);
      }
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const uint64_t db = smem_desc_sw128(reinterpret_cast<const char *>(sx) + 32 * (2 * c + s));
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) wgmma_m64n128k32_rs(acc[sub], a[c][sub][s], db);
      }
      wgmma_commit();
      wgmma_wait<1>();
      // The previous stage's last chunk has retired: its slot may be refilled.
      if (c == 0 && kt > 0) {
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + (kt - 1) % kWsStages);
      }
    }
  }
  wgmma_wait<0>();

  const int t = lane & 3;
  if (split == 1) {
#pragma unroll
    for (int sub = 0; sub < 2; ++sub) {
      const int n0 = (rt0 + rtl0 + sub * 4) * 16 + g;
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int m0 = m_base + i * 8 + t * 2;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int m = m0 + (r & 1), n = n0 + (r >> 1) * 8;
          if (m < p.m) store_out<OUT>(p, m, n, acc[sub][i * 4 + r]);
        }
      }
    }
    return;
  }

  int32_t *part = p.ws_partials + static_cast<size_t>(blockIdx.y) * p.m * p.n;
#pragma unroll
  for (int sub = 0; sub < 2; ++sub) {
    const int n0 = (rt0 + rtl0 + sub * 4) * 16 + g;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int m0 = m_base + i * 8 + t * 2;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int m = m0 + (r & 1), n = n0 + (r >> 1) * 8;
        if (m < p.m) part[static_cast<size_t>(m) * p.n + n] = acc[sub][i * 4 + r];
      }
    }
  }
  __threadfence();
  consumer_sync();
  __shared__ bool is_last;
  if (tid == 0) is_last = atomicAdd(p.ws_counters + blockIdx.x, 1u) == static_cast<unsigned>(split - 1);
  consumer_sync();
  if (!is_last) return;
  __threadfence();
  splitk_reduce<OUT>(p, split, m_base, min(kWgBM, p.m - m_base), tile_n * kWgBN, kWgBN, tid, 256);
  if (tid == 0) p.ws_counters[blockIdx.x] = 0u;
}

}  // namespace dgq
