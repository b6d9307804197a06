// Hopper prefill kernel: u4 weights dequantized in registers feed wgmma as the register A
// operand; activations stream through a multi-stage cp.async ring in shared memory in the
// canonical no-swizzle K-major layout and are the B operand (through a matrix descriptor).
//
// CTA tile: 256 output channels × 128 tokens × 128 K per stage, two warpgroups, each owning
// 128 channels (two m64 sub-tiles) × 128 tokens: per k32 step two wgmma.m64n128k32.s32.s8.s8.
#pragma once

#include "common.cuh"

namespace dgq {

constexpr int kWgBN = 256;
constexpr int kWgBM = 128;
constexpr int kWgChunks = 2;  // 64-wide chunks per stage (BK = 128)
constexpr int kWgStages = 5;
constexpr int kWgPrefetch = kWgStages - 2;  // a slot is refilled two stages after its last read
constexpr int kWgThreads = 256;
constexpr int kWgW_U4 = (kWgBN / 16) * kWgChunks * 32;  // 16 KB of packed u4
constexpr int kWgX_U4 = kWgBM * kWgChunks * 4;          // 16 KB of int8
constexpr int kWgStageU4 = kWgW_U4 + kWgX_U4;
constexpr size_t kWgSmemBytes = static_cast<size_t>(kWgStages) * kWgStageU4 * 16;

// Descriptor for a K-major operand in the 128-byte swizzle layout: 8-row atoms of 1024 bytes
// (SBO = 1024), LBO unused; the start address may point 32·j bytes into an atom for k-step j.
__device__ __forceinline__ uint64_t smem_desc_sw128(const void *p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return static_cast<uint64_t>((a & 0x3ffff) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// d[64] += A (registers, m64 × k32 s8) · B (descriptor, n128 × k32 s8, K-major).
__device__ __forceinline__ void wgmma_m64n128k32_rs(int32_t (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, 1;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// grid.x: output tiles (grouped raster); grid.y: K splits. With split > 1 every CTA writes its
// INT32 partial tile to the workspace and the last CTA of a tile (atomic ticket) reduces the
// splits and runs the epilogue, then rearms the tile's counter.
template <int OUT>
__global__ void __launch_bounds__(kWgThreads, 1) wgmma_kernel(const GemmParams p, const int split,
                                                              const int stages_per_split) {
  // 1024-byte alignment: the 128-byte swizzle XORs address bits 4–6 with bits 7–9.
  extern __shared__ __align__(1024) uint4 smem[];
  const int tid = threadIdx.x, lane = tid & 31;
  const int wg = tid >> 7, warp_in_wg = (tid >> 5) & 3;
  const int g = lane >> 2;
  static_assert(kWgThreads == 256 && kWgBM == 128 && kWgW_U4 % kWgThreads == 0, "load mapping assumes these");

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
  const int kt_total = kt_end - kt_begin;  // stages of this CTA; loads add kt_begin
  const int rt0 = tile_n * (kWgBN / 16);
  const int m_base = tile_m * kWgBM;

  // Per-thread load addressing, computed once: every stage only adds its K offset.
  // W: thread copies 16-byte pieces tid + 256·r (r < 4) of the stage's 16 row tiles × 1 KB.
  const int warp = tid >> 5, g4 = lane >> 2, w4 = lane & 3;
  const uint4 *wsrc = p.wq + static_cast<size_t>(rt0 + (tid >> 6)) * kc * 32 + (tid & 63);
  const size_t wstride = static_cast<size_t>(4) * kc * 32;
  // X: each warp copies, for r < 16, one 16-byte chunk u = r / 2 of 8 token rows
  // (warp + 8·(r % 2))·8 + lane / 4, 4 bytes per lane.
  const int8_t *xsrc[2];
  int xdst[2], xbytes[2];
#pragma unroll
  for (int x = 0; x < 2; ++x) {
    const int tok = (warp + 8 * x) * 8 + g4;
    const int m = m_base + tok;
    xbytes[x] = m < p.m ? 4 : 0;  // rows past M are zero-filled
    xsrc[x] = p.x + static_cast<size_t>(m < p.m ? m : 0) * p.k + 16 * w4;  // activation word 4·w4
    xdst[x] = tok * 32 + w4;
  }

  auto load_stage = [&](int slot, int kt) {
    uint4 *sx = smem + slot * kWgStageU4;
    uint4 *sw = sx + kWgX_U4;
#pragma unroll
    for (int r = 0; r < kWgW_U4 / kWgThreads; ++r) {
      cp_async16(sw + tid + r * kWgThreads, wsrc + r * wstride + (kt_begin + kt) * (kWgChunks * 32), 16);
    }
    // X as the K-major B operand with the 128-byte swizzle: token row t (128 bytes = the whole
    // stage's K) at 128·t, its 16-byte chunk c stored at chunk c ^ (t % 8). K is permuted 4 bytes
    // at a time to match the prepared weights: wgmma k-position word 4u + w of the stage holds
    // activation word 16(u/4) + 4w + 2((u/2)&1) + (u&1). A warp writes 8 rows × one chunk
    // (conflict-free thanks to the swizzle); cp.async.ca keeps the row segments in L1.
    uint32_t *sxw = reinterpret_cast<uint32_t *>(sx);
    const size_t koff = static_cast<size_t>(kt_begin + kt) * (kWgChunks * kChunkK);
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int x = r & 1, u = r >> 1;
      const int src_word = 16 * (u >> 2) + 2 * ((u >> 1) & 1) + (u & 1);
      cp_async4(sxw + xdst[x] + ((u ^ g4) * 4), xsrc[x] + koff + 4 * src_word, xbytes[x]);
    }
  };

  int32_t acc[2][64];
#pragma unroll
  for (int s = 0; s < 2; ++s)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[s][i] = 0;

#pragma unroll
  for (int st = 0; st < kWgPrefetch; ++st) {
    if (st < kt_total) load_stage(st, st);
    cp_async_commit();
  }

  // Row tiles of this warp: sub-tile `sub` (m64) of warpgroup `wg`, rows 16·warp_in_wg.
  const int rtl0 = wg * 8 + warp_in_wg;  // + sub * 4
  const uint32_t *meta0 = p.wmeta + static_cast<size_t>(rt0 + rtl0) * ng * 8 + g;
  const size_t meta_sub_stride = static_cast<size_t>(4) * ng * 8;

  auto stage = [&](int kt, uint32_t (&a)[2][kWgChunks][2][4]) {
    cp_async_wait<kWgPrefetch - 1>();
    fence_proxy_async();
    __syncthreads();
    {
      const int nk = kt + kWgPrefetch;
      if (nk < kt_total) load_stage(nk % kWgStages, nk);
      cp_async_commit();
    }
    const uint4 *sx = smem + (kt % kWgStages) * kWgStageU4;
    const uint4 *sw = sx + kWgX_U4;
#pragma unroll
    for (int c = 0; c < kWgChunks; ++c) {
      const int grp = ((kt_begin + kt) * kWgChunks + c) / p.chunks_per_group;
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const uint32_t meta = __ldg(meta0 + sub * meta_sub_stride + static_cast<size_t>(grp) * 8);
        const uint4 pw = sw[((rtl0 + sub * 4) * kWgChunks + c) * 32 + lane];
        dequant(pw, meta, a[sub][c]);
      }
    }
    wgmma_fence();
#pragma unroll
    for (int c = 0; c < kWgChunks; ++c) {
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        // k32 step j = 2c + s starts 32·j bytes into every (swizzled) 128-byte row.
        const uint64_t db = smem_desc_sw128(reinterpret_cast<const char *>(sx) + 32 * (2 * c + s));
#pragma unroll
        for (int sub = 0; sub < 2; ++sub) wgmma_m64n128k32_rs(acc[sub], a[sub][c][s], db);
      }
    }
    wgmma_commit();
    wgmma_wait<1>();
  };

  // Two register buffers for A, alternated with compile-time indices.
  uint32_t a0[2][kWgChunks][2][4], a1[2][kWgChunks][2][4];
  int kt = 0;
  for (; kt + 1 < kt_total; kt += 2) {
    stage(kt, a0);
    stage(kt + 1, a1);
  }
  if (kt < kt_total) stage(kt, a0);
  wgmma_wait<0>();
  cp_async_wait<0>();

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
  __syncthreads();
  __shared__ bool is_last;
  if (tid == 0) is_last = atomicAdd(p.ws_counters + blockIdx.x, 1u) == static_cast<unsigned>(split - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const int rows = min(kWgBM, p.m - m_base);
  for (int idx = tid; idx < rows * kWgBN; idx += kWgThreads) {
    const int m = m_base + idx / kWgBN, n = tile_n * kWgBN + idx % kWgBN;
    const int32_t *src = p.ws_partials + static_cast<size_t>(m) * p.n + n;
    int32_t sum = 0;
    for (int ss = 0; ss < split; ++ss) sum += __ldcg(src + static_cast<size_t>(ss) * p.m * p.n);
    store_out<OUT>(p, m, n, sum);
  }
  if (tid == 0) p.ws_counters[blockIdx.x] = 0u;
}

}  // namespace dgq
