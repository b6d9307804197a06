// mma.sync kernel (any M): tiled W4A8 GEMM with a cp.async pipeline, and its launcher. The token
// tile comes from the host plan (crates/dgq-cuda/src/plan.rs).

#include <cuda_runtime.h>

#include "launch.cuh"

namespace dgq {

// ------------------------------------------------------------------------------------------
// Prefill kernel: CTA tile 128 channels × BM tokens × 128 K, 8 warps as 2 (channels) × 4
// (tokens), 4-stage cp.async pipeline of packed u4 weights and int8 activations in shared
// memory; weights are dequantized from shared memory into registers for every k-chunk.
// ------------------------------------------------------------------------------------------
constexpr int kMmaBN = 128;
constexpr int kMmaChunks = 2;  // chunks of 64 per stage (BK = 128)
constexpr int kMmaStages = 4;
constexpr int kMmaThreads = 256;
constexpr int kMmaGroupM = 8;  // raster: 8 token tiles share each weight tile while it sits in L2

template <int BM>
constexpr int mma_stage_u4() {
  return (kMmaBN / 16) * kMmaChunks * 32 + kMmaChunks * BM * 4;
}
template <int BM>
constexpr size_t mma_smem_bytes() {
  return static_cast<size_t>(kMmaStages) * mma_stage_u4<BM>() * 16;
}

template <int BM, int OUT>
__global__ void __launch_bounds__(kMmaThreads, 2) mma_kernel(const GemmParams p) {
  constexpr int W_U4 = (kMmaBN / 16) * kMmaChunks * 32;
  constexpr int X_U4 = kMmaChunks * BM * 4;
  constexpr int STAGE_U4 = W_U4 + X_U4;
  constexpr int WM = BM / 4;  // tokens per warp
  constexpr int NT = WM / 8;
  constexpr int MT = 4;  // 16-row tiles per warp (64 channels)
  extern __shared__ uint4 smem[];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int warp_n = warp & 1, warp_m = warp >> 1;

  // Grouped rasterisation.
  const int tiles_n = p.n / kMmaBN;
  const int tiles_m = (p.m + BM - 1) / BM;
  const int pid = blockIdx.x;
  const int in_group = kMmaGroupM * tiles_n;
  const int first_m = (pid / in_group) * kMmaGroupM;
  const int group_m = min(tiles_m - first_m, kMmaGroupM);
  const int tile_m = first_m + (pid % in_group) % group_m;
  const int tile_n = (pid % in_group) / group_m;

  const int kc = p.k / kChunkK;
  const int ng = p.k / p.group_size;
  const int kt_total = kc / kMmaChunks;
  const int rt0 = tile_n * (kMmaBN / 16);
  const int m_base = tile_m * BM;

  auto load_stage = [&](int stage, int kt) {
    uint4 *sw = smem + stage * STAGE_U4;
    uint4 *sx = sw + W_U4;
#pragma unroll
    for (int i = tid; i < W_U4; i += kMmaThreads) {
      const int rtl = i / (kMmaChunks * 32), rem = i % (kMmaChunks * 32);
      const uint4 *src = p.wq + (static_cast<size_t>(rt0 + rtl) * kc + kt * kMmaChunks) * 32 + rem;
      cp_async16(sw + i, src, 16);
    }
#pragma unroll
    for (int i = tid; i < X_U4; i += kMmaThreads) {
      const int c = i / (BM * 4), r = (i / 4) % BM, u = i % 4;
      const int m = m_base + r;
      const bool ok = m < p.m;
      const int8_t *src = p.x + static_cast<size_t>(ok ? m : 0) * p.k + (kt * kMmaChunks + c) * kChunkK + u * 16;
      cp_async16(sx + i, src, ok ? 16 : 0);  // rows past M are zero-filled
    }
  };

  int32_t acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0;

#pragma unroll
  for (int st = 0; st < kMmaStages - 1; ++st) {
    if (st < kt_total) load_stage(st, st);
    cp_async_commit();
  }

  const uint32_t *meta_base = p.wmeta + static_cast<size_t>(rt0 + warp_n * MT) * ng * 8 + g;

  for (int kt = 0; kt < kt_total; ++kt) {
    cp_async_wait<kMmaStages - 2>();
    __syncthreads();
    {
      const int nk = kt + kMmaStages - 1;
      if (nk < kt_total) load_stage(nk % kMmaStages, nk);
      cp_async_commit();
    }
    const uint4 *sw = smem + (kt % kMmaStages) * STAGE_U4;
    const uint4 *sx = sw + W_U4;
#pragma unroll
    for (int c = 0; c < kMmaChunks; ++c) {
      const int grp = (kt * kMmaChunks + c) / p.chunks_per_group;
      uint32_t a[MT][2][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t meta = __ldg(meta_base + (static_cast<size_t>(mt) * ng + grp) * 8);
        const uint4 pw = sw[((warp_n * MT + mt) * kMmaChunks + c) * 32 + lane];
        dequant(pw, meta, a[mt]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        // B fragments: words t, 4 + t, 8 + t, 12 + t of the token's 64-byte chunk.
        const uint32_t *xw = reinterpret_cast<const uint32_t *>(sx + (c * BM + warp_m * WM + nt * 8 + g) * 4) + t;
        const uint4 xv = make_uint4(xw[0], xw[4], xw[8], xw[12]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_s8(acc[mt][nt], a[mt][0], xv.x, xv.y);
          mma_s8(acc[mt][nt], a[mt][1], xv.z, xv.w);
        }
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int n0 = (rt0 + warp_n * MT + mt) * 16 + g;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int m0 = m_base + warp_m * WM + nt * 8 + t * 2;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + (i & 1), n = n0 + (i >> 1) * 8;
        if (m < p.m) store_out<OUT>(p, m, n, acc[mt][nt][i]);
      }
    }
  }
}

namespace {

template <int BM, int OUT>
int launch_mma_bm(const GemmParams &p, cudaStream_t stream) {
  constexpr size_t smem = mma_smem_bytes<BM>();
  // Set on every call (cheap, host side): the attribute is per device and the caller may switch.
  const cudaError_t e = cudaFuncSetAttribute(mma_kernel<BM, OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
  if (e != cudaSuccess) return static_cast<int>(e);
  const int tiles = (p.n / kMmaBN) * ((p.m + BM - 1) / BM);
  mma_kernel<BM, OUT><<<tiles, kMmaThreads, smem, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <int OUT>
int launch_mma_out(const GemmParams &p, int bm, cudaStream_t stream) {
  if (bm == 128) return launch_mma_bm<128, OUT>(p, stream);
  if (bm == 64) return launch_mma_bm<64, OUT>(p, stream);
  return launch_mma_bm<32, OUT>(p, stream);
}

}  // namespace

int launch_mma(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream) {
  if (p.n % kMmaBN != 0 || p.k % (kChunkK * kMmaChunks) != 0) return DGQ_EINVAL;
  if (plan.bm != 32 && plan.bm != 64 && plan.bm != 128) return DGQ_EINVAL;
  switch (out_kind) {
    case DGQ_OUT_F16:
      return launch_mma_out<DGQ_OUT_F16>(p, plan.bm, stream);
    case DGQ_OUT_BF16:
      return launch_mma_out<DGQ_OUT_BF16>(p, plan.bm, stream);
    case DGQ_OUT_I32:
      return launch_mma_out<DGQ_OUT_I32>(p, plan.bm, stream);
    default:
      return DGQ_EINVAL;
  }
}

}  // namespace dgq
