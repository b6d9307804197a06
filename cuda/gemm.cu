// W4A8 GEMM: int8 activations [M, K] × prepared DGQ u4 weights [N, K] -> [M, N].
//
// Both kernels keep the weights as u4 in HBM and expand them to int8 in registers inside the
// main loop (dq4: one IMAD + one XOR per four weights), then run INT8 tensor-core MMAs with the
// weights as the A operand (output channels) and the tokens as B. The prepared weights give
// every lane its A fragments of a 64-deep chunk in one 16-byte load, in the hardware's own K
// order: the wgmma kernel takes the activations from shared memory exactly as TMA copies them,
// and the mma.sync kernels stage them in shared memory and read B fragments with ldmatrix.

#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "common.cuh"

namespace dgq {

// ------------------------------------------------------------------------------------------
// Decode kernel (M <= 64): memory-bound. CTA = 64 output channels (4 row tiles of 16, one warp
// each) × S K parts (4 warps each, reduced in shared memory); where S alone cannot fill the SMs
// grid.y splits K further. Partial sums of such a split go to the workspace; the last CTA of a
// row block (atomic ticket) reduces and runs the epilogue, then rearms the counter, so the
// workspace needs no memset between calls.
// ------------------------------------------------------------------------------------------
constexpr int kDecodeWarps = 4;
constexpr int kDecodeRows = 16 * kDecodeWarps;
constexpr int kDecodeUnroll = 4;
// Chunks per batch (in flight per warp). 8 for one token tile was measured on H100 (71 instead of
// 48 registers, 7 instead of 10 resident CTAs): 8192² M = 1 17.5 vs 16.3 µs, 8192×28672 45.5 vs
// 46.8, so 4 stays. Eight token tiles (M <= 64) halve it to stay within registers.
__host__ __device__ constexpr int decode_unroll(int nt) { return nt >= 8 ? kDecodeUnroll / 2 : kDecodeUnroll; }
constexpr int kDecodeMaxM = 64;
// Weight batches per warp prefetched into L2 before the PDL wait (see decode_kernel).
constexpr int kDecodePrefetchBatches = 1;
// K parts per CTA from which all of them share the final in-CTA reduction (see decode_kernel).
// H100: at 8 parts 8192² M = 16 14.2 vs 14.7 µs, 8192×28672 M = 16 41.7 vs 42.3; at fewer parts
// it was slower (4096×11008 M = 1, 2 parts × 8: 13.1 vs 12.6; 8192² M = 32, 2 × 3: 19.0 vs 18.0).
constexpr int kDecodeSharedReduceMinParts = 8;
__host__ __device__ constexpr int decode_nt(int m) { return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8; }

// Largest in-CTA K split per token-tile count: the activation double buffer (S × U × 8·NT rows ×
// 64 bytes × 2) stays within 64 KB of shared memory and 128·S threads × the registers fit.
__host__ __device__ constexpr int decode_max_parts(int nt) { return nt <= 2 ? 8 : nt == 4 ? 4 : 2; }
// Dynamic shared memory of the decode kernel: the activation double buffer.
__host__ __device__ constexpr int decode_smem_bytes(int nt, int parts) {
  return 2 * parts * decode_unroll(nt) * nt * 8 * kChunkK;
}

// S: K parts inside the CTA. Warp w works on row tile w % 4 over K part w / 4 of this CTA's K
// range; the S partial tiles are added in shared memory at the end, so a split of K across S
// parts needs no workspace round trip (the global split-K fix-up costs ≈3 µs per call on H100:
// fence, ticket atomic, partial reads). grid.y still splits K across CTAs where S alone cannot
// fill the GPU; K part (blockIdx.y · S + w / 4) covers chunks [part · per, part · per + per).
// 32-token tiles ask for one CTA per SM (minBlocks 1): left to its default, ptxas fits the
// 512-thread kernel into 64 registers with a spill in the loop, and the plans then take 2 CTAs
// per SM (H100, 4096×11008 M = 32: 16.6 µs vs 15.7 at 86 registers). 0: ptxas's default.
template <int NT, int OUT, int S>
__global__ void __launch_bounds__(kDecodeWarps * 32 * S, NT == 4 ? 1 : 0) decode_kernel(const GemmParams p, const int split,
                                                                       const int per) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int rtl = warp % kDecodeWarps, ks = warp / kDecodeWarps;
  const int rb = blockIdx.x;
  const int s = blockIdx.y;
  const int rt = rb * kDecodeWarps + rtl;
  const int kc = p.k / kChunkK;
  const int ng = p.k / p.group_size;
  const int c_begin = (s * S + ks) * per;
  const int c_end = min(kc, c_begin + per);

  const uint4 *wp = p.wq + static_cast<size_t>(rt) * kc * 32 + lane;
  const uint32_t *mp = p.wmeta + static_cast<size_t>(rt) * ng * 8 + g;

  // The activations of a batch of U chunks go through shared memory, once per CTA for the four
  // warps of a K part, double-buffered: the copies of batch b + 1 (cp.async) are issued before
  // batch b is computed, so only the weights' HBM latency is exposed, and the warps read B
  // fragments with ldmatrix. (Each lane gathering its fragments from global memory as four
  // 4-byte words cost four L1 wavefronts per load and made the kernel L1-bound at M >= 16,
  // 8192² M = 32: 43.7 µs; per-warp copies of every batch read the activations four times over:
  // 28.2 µs.) Layout of a buffer: [part][u][token][64 bytes], the 16-byte columns of a row
  // XOR-swizzled by (row / 2) % 4 so that the eight rows of an ldmatrix phase (64-byte stride)
  // hit distinct banks.
  constexpr int U = decode_unroll(NT);
  constexpr int kTok = NT * 8;
  constexpr int kPartBytes = U * kTok * kChunkK;
  constexpr int kBufBytes = S * kPartBytes;
  constexpr int kPartThreads = kDecodeWarps * 32;
  constexpr int kPieces = U * kTok * 4 / kPartThreads;  // 16-byte copies per thread and batch
  static_assert(kPieces * kPartThreads == U * kTok * 4, "a part's copies split evenly over its threads");
  static_assert(2 * kBufBytes == decode_smem_bytes(NT, S) && 2 * kBufBytes <= 64 * 1024, "activation buffers");
  extern __shared__ __align__(128) int8_t xs_buf[];
  const uint32_t xs = static_cast<uint32_t>(__cvta_generic_to_shared(xs_buf));
  // Each K part's four warps zero, copy and read only their own part of the buffers, so a part
  // syncs on its own named barrier and the S parts run out of step like separate CTAs (one
  // CTA-wide barrier per batch made all 32 warps of an SM wait for the slowest load).
  const int pt = threadIdx.x % kPartThreads;
  // Rows of padding tokens are zeroed once and never copied (zero-filling them every batch cost
  // up to 0.5 µs: 8192² M = 8 14.8 vs 14.3).
  for (int i = pt; i < 2 * kPartBytes / 16; i += kPartThreads) {
    const int buf = i / (kPartBytes / 16), j = i % (kPartBytes / 16);
    if ((j / 4) % kTok >= p.m) reinterpret_cast<uint4 *>(xs_buf + buf * kBufBytes + ks * kPartBytes)[j] = make_uint4(0, 0, 0, 0);
  }
  // This thread's copies: piece i = pt + 128·j of its K part is chunk u0 + du(j), token row
  // m0 + dm(j), 16-byte column q, with du, dm known at compile time, so one smem address, one
  // global pointer and one chunk count describe all pieces (per-piece arrays did not fit in the
  // registers and were recomputed from the thread index every batch). Batch b copies chunk
  // b·U + u of the part while that is inside the part; chunks past it are not copied (their meta
  // word, scale 0 and offset 128, makes their A fragments zero whatever the buffer holds).
  // Predicated, not branched, as lanes differ (a branch around each copy: 8192² M = 32 20.2 vs
  // 19.3 µs).
  constexpr int kT4 = kTok * 4;  // 16-byte pieces per chunk
  auto du = [](int j) { return j * kPartThreads / kT4; };
  auto dm = [](int j) { return (j * kPartThreads) % kT4 / 4; };  // 0 or 32 (64-token tiles)
  const int u0 = pt / kT4, m0 = (pt / 4) % kTok, q = pt % 4;
  const uint32_t cp_dst = static_cast<uint32_t>(((ks * U + u0) * kTok + m0) * kChunkK + ((q ^ ((m0 >> 1) & 3)) << 4));
  const int8_t *cp_src = p.x + static_cast<size_t>(m0) * p.k + (c_begin + u0) * kChunkK + q * 16;
  int cp_left = m0 < p.m ? c_end - c_begin - u0 : INT_MIN / 2;  // chunks of piece 0 still to copy
  auto copy_next = [&](int buf) {
#pragma unroll
    for (int j = 0; j < kPieces; ++j) {
      const bool on = cp_left > du(j) && (dm(j) == 0 || m0 + dm(j) < p.m);
      cp_async16_ca_if(on, xs + buf * kBufBytes + cp_dst + (du(j) * kTok + dm(j)) * kChunkK,
                       cp_src + du(j) * kChunkK + static_cast<size_t>(dm(j)) * p.k);
    }
    cp_async_commit();
    cp_src += U * kChunkK;
    cp_left -= U;
  };
  // ldmatrix: lane 8j + r reads column j of row r of a token tile.
  const int lr = lane & 7, lj = lane >> 3;
  const uint32_t ld_off =
      static_cast<uint32_t>(ks * kPartBytes + lr * kChunkK + ((lj ^ ((lr >> 1) & 3)) << 4));

  int32_t acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;

  // Meta word of the next chunk, its group advanced per chunk: a division per chunk (the group
  // size is any multiple of 64) cost ~30 instructions and a branch each, a third of the loop.
  const int cpg = p.chunks_per_group;
  const uint32_t *mq = mp + static_cast<size_t>(c_begin / cpg) * 8;
  int in_grp = c_begin % cpg;
  // Programmatic dependent launch: this grid may start while the previous kernel of the stream
  // finishes; wait for it (its writes, e.g. the activations or this workspace) before reading.
  // Before waiting, pull the first weight batches of this warp (and their meta words) into L2,
  // so the DRAM works during the previous kernel's tail instead of idling through this grid's
  // first round trip. Only a hint: L2 is the point of coherence, so a line the previous kernel
  // writes later is still read fresh after the wait.
  {
    const int n = min(kDecodePrefetchBatches * U, c_end - c_begin);
    if (lane == 0 && n > 0) {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(wp - lane + static_cast<size_t>(c_begin) * 32),
                   "r"(n * 512)
                   : "memory");
    }
    if (n > 0) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(mq));
  }
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  // Every part runs the same number of batches; chunks past a part's (or K's) end get zero A
  // fragments (u4 0 with a zero-cancelling offset byte).
  const int batches = (per + U - 1) / U;
  copy_next(0);
  for (int b = 0; b < batches; ++b) {
    const int buf = b & 1;
    const int c = c_begin + b * U;
    uint4 w[U];
    uint32_t meta[U];
    // Issue every weight load of the batch before the first use so that several are in flight.
    // (Loading chunk c + U right after chunk c is dequantized, so that a warp keeps U chunks in
    // flight through the MMAs, was slower on H100: 8192² M = 1 / 16 14.0 / 15.9 vs 13.5 / 14.7
    // µs; at 32-token tiles it needs 96–100 registers.)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int cc = c + u;
      const bool ok = cc < c_end;
      w[u] = ok ? ld_stream(wp + static_cast<size_t>(cc) * 32) : make_uint4(0, 0, 0, 0);
      meta[u] = ok ? __ldg(mq) : 0x80008000u;  // past the part: A = 0
      if (++in_grp == cpg) {
        in_grp = 0;
        mq += 8;
      }
    }
    cp_async_wait<0>();
    // The part's copies of this batch have landed, and its warps are done with the other buffer.
    if constexpr (S == 1) {
      __syncthreads();
    } else {
      asm volatile("bar.sync %0, %1;\n" ::"r"(1 + ks), "r"(kPartThreads) : "memory");
    }
    if (b + 1 < batches) copy_next(buf ^ 1);
    const uint32_t xb = xs + buf * kBufBytes + ld_off;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      uint32_t a[2][4];
      dequant(w[u], meta[u], a);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4 bf = ldmatrix_x4(xb + static_cast<uint32_t>((u * kTok + nt * 8) * kChunkK));
        mma_s8(acc[nt], a[0], bf.x, bf.y);
        mma_s8(acc[nt], a[1], bf.z, bf.w);
      }
    }
  }

  // The main loop is done: let the next kernel's CTAs launch into the slots this grid frees.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  constexpr bool kSharedReduce = S > 1 && S >= kDecodeSharedReduceMinParts;
  if constexpr (kSharedReduce) {
    // Every part stores its tile in the (now idle) activation buffers, [part][row tile][register]
    // [lane], and all S·128 threads then each sum and store a share of the tile's values: the
    // tail after the last batch, when HBM idles, is S times shorter than with part 0 summing
    // the S - 1 other tiles alone (7·NT·4 shared loads per thread at S = 8).
    constexpr int kVals = kDecodeWarps * NT * 4 * 32;
    static_assert(S * kVals * 4 <= 2 * kBufBytes, "partial tiles fit");
    int32_t *red = reinterpret_cast<int32_t *>(xs_buf);
    __syncthreads();  // every warp is done reading activations
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) red[((ks * kDecodeWarps + rtl) * NT * 4 + nt * 4 + i) * 32 + lane] = acc[nt][i];
    }
    __syncthreads();
    int32_t *part = p.ws_partials + static_cast<size_t>(s) * p.m * p.n;
    for (int v = threadIdx.x; v < kVals; v += S * kPartThreads) {
      int32_t sum = 0;
#pragma unroll
      for (int q = 0; q < S; ++q) sum += red[q * kVals + v];
      // v = ((row tile · NT + nt) · 4 + i) · 32 + lane, the MMA accumulator layout.
      const int ln = v % 32, i = (v / 32) % 4, nt = (v / 128) % NT, r = v / (128 * NT);
      const int m = nt * 8 + (ln & 3) * 2 + (i & 1);
      const int n = (rb * kDecodeWarps + r) * 16 + (ln >> 2) + (i >> 1) * 8;
      if (m < p.m) {
        if (split == 1) {
          store_out<OUT>(p, m, n, sum);
        } else {
          part[static_cast<size_t>(m) * p.n + n] = sum;
        }
      }
    }
    if (split == 1) return;
  } else if constexpr (S > 1) {
    // Parts 1..S-1 hand their tiles to part 0 through the (now idle) activation buffers:
    // [part - 1][row tile][register][lane], lanes contiguous.
    static_assert((S - 1) * kDecodeWarps * NT * 4 * 32 * 4 <= 2 * kBufBytes, "partial tiles fit");
    int32_t *red = reinterpret_cast<int32_t *>(xs_buf);
    __syncthreads();  // every warp is done reading activations
    if (ks > 0) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) red[(((ks - 1) * kDecodeWarps + rtl) * NT * 4 + nt * 4 + i) * 32 + lane] = acc[nt][i];
      }
    }
    __syncthreads();
    if (ks == 0) {
#pragma unroll
      for (int q = 0; q < S - 1; ++q) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[nt][i] += red[((q * kDecodeWarps + rtl) * NT * 4 + nt * 4 + i) * 32 + lane];
        }
      }
    }
  }
  const int n0 = rt * 16 + g;
  if (split == 1) {
    if (ks != 0) return;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int m0 = nt * 8 + t * 2;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + (i & 1), n = n0 + (i >> 1) * 8;
        if (m < p.m) store_out<OUT>(p, m, n, acc[nt][i]);
      }
    }
    return;
  }

  if (ks == 0 && !kSharedReduce) {
    int32_t *part = p.ws_partials + static_cast<size_t>(s) * p.m * p.n;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int m0 = nt * 8 + t * 2;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + (i & 1), n = n0 + (i >> 1) * 8;
        if (m < p.m) part[static_cast<size_t>(m) * p.n + n] = acc[nt][i];
      }
    }
  }
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(p.ws_counters + rb, 1u) == static_cast<unsigned>(split - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  splitk_reduce<OUT, 1>(p, split, 0, p.m, rb * kDecodeRows, kDecodeRows, threadIdx.x, blockDim.x);
  if (threadIdx.x == 0) p.ws_counters[rb] = 0u;
}

// ------------------------------------------------------------------------------------------
// Prefill kernel: CTA tile 128 channels × BM tokens × 128 K, 8 warps as 2 (channels) × 4
// (tokens), 4-stage cp.async pipeline of packed u4 weights and int8 activations in shared
// memory; weights are dequantized from shared memory into registers for every k-chunk.
// ------------------------------------------------------------------------------------------
constexpr int kPfBN = 128;
constexpr int kPfChunks = 2;  // chunks of 64 per stage (BK = 128)
constexpr int kPfStages = 4;
constexpr int kPfThreads = 256;
constexpr int kPfGroupM = 8;  // raster: 8 token tiles share each weight tile while it sits in L2

template <int BM>
constexpr int pf_stage_u4() {
  return (kPfBN / 16) * kPfChunks * 32 + kPfChunks * BM * 4;
}
template <int BM>
constexpr size_t pf_smem_bytes() {
  return static_cast<size_t>(kPfStages) * pf_stage_u4<BM>() * 16;
}

template <int BM, int OUT>
__global__ void __launch_bounds__(kPfThreads, 2) prefill_kernel(const GemmParams p) {
  constexpr int W_U4 = (kPfBN / 16) * kPfChunks * 32;
  constexpr int X_U4 = kPfChunks * BM * 4;
  constexpr int STAGE_U4 = W_U4 + X_U4;
  constexpr int WM = BM / 4;  // tokens per warp
  constexpr int NT = WM / 8;
  constexpr int MT = 4;  // 16-row tiles per warp (64 channels)
  extern __shared__ uint4 smem[];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int warp_n = warp & 1, warp_m = warp >> 1;

  // Grouped rasterisation.
  const int tiles_n = p.n / kPfBN;
  const int tiles_m = (p.m + BM - 1) / BM;
  const int pid = blockIdx.x;
  const int in_group = kPfGroupM * tiles_n;
  const int first_m = (pid / in_group) * kPfGroupM;
  const int group_m = min(tiles_m - first_m, kPfGroupM);
  const int tile_m = first_m + (pid % in_group) % group_m;
  const int tile_n = (pid % in_group) / group_m;

  const int kc = p.k / kChunkK;
  const int ng = p.k / p.group_size;
  const int kt_total = kc / kPfChunks;
  const int rt0 = tile_n * (kPfBN / 16);
  const int m_base = tile_m * BM;

  auto load_stage = [&](int stage, int kt) {
    uint4 *sw = smem + stage * STAGE_U4;
    uint4 *sx = sw + W_U4;
#pragma unroll
    for (int i = tid; i < W_U4; i += kPfThreads) {
      const int rtl = i / (kPfChunks * 32), rem = i % (kPfChunks * 32);
      const uint4 *src = p.wq + (static_cast<size_t>(rt0 + rtl) * kc + kt * kPfChunks) * 32 + rem;
      cp_async16(sw + i, src, 16);
    }
#pragma unroll
    for (int i = tid; i < X_U4; i += kPfThreads) {
      const int c = i / (BM * 4), r = (i / 4) % BM, u = i % 4;
      const int m = m_base + r;
      const bool ok = m < p.m;
      const int8_t *src = p.x + static_cast<size_t>(ok ? m : 0) * p.k + (kt * kPfChunks + c) * kChunkK + u * 16;
      cp_async16(sx + i, src, ok ? 16 : 0);  // rows past M are zero-filled
    }
  };

  int32_t acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0;

#pragma unroll
  for (int st = 0; st < kPfStages - 1; ++st) {
    if (st < kt_total) load_stage(st, st);
    cp_async_commit();
  }

  const uint32_t *meta_base = p.wmeta + static_cast<size_t>(rt0 + warp_n * MT) * ng * 8 + g;

  for (int kt = 0; kt < kt_total; ++kt) {
    cp_async_wait<kPfStages - 2>();
    __syncthreads();
    {
      const int nk = kt + kPfStages - 1;
      if (nk < kt_total) load_stage(nk % kPfStages, nk);
      cp_async_commit();
    }
    const uint4 *sw = smem + (kt % kPfStages) * STAGE_U4;
    const uint4 *sx = sw + W_U4;
#pragma unroll
    for (int c = 0; c < kPfChunks; ++c) {
      const int grp = (kt * kPfChunks + c) / p.chunks_per_group;
      uint32_t a[MT][2][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t meta = __ldg(meta_base + (static_cast<size_t>(mt) * ng + grp) * 8);
        const uint4 pw = sw[((warp_n * MT + mt) * kPfChunks + c) * 32 + lane];
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

}  // namespace dgq

#include "gemm_ws.cuh"

namespace dgq {

// ------------------------------------------------------------------------------------------
// Dispatch.
// ------------------------------------------------------------------------------------------
namespace {

bool aligned(const void *ptr, size_t a) { return (reinterpret_cast<uintptr_t>(ptr) % a) == 0; }

// The decode kernel for a token-tile count and in-CTA K parts (the instantiated pairs).
using DecodeFn = void (*)(GemmParams, int, int);
template <int OUT>
DecodeFn decode_fn(int nt, int parts) {
  switch (nt * 16 + parts) {
    case 16 + 2:
      return decode_kernel<1, OUT, 2>;
    case 16 + 4:
      return decode_kernel<1, OUT, 4>;
    case 16 + 8:
      return decode_kernel<1, OUT, 8>;
    case 32 + 1:
      return decode_kernel<2, OUT, 1>;
    case 32 + 2:
      return decode_kernel<2, OUT, 2>;
    case 32 + 4:
      return decode_kernel<2, OUT, 4>;
    case 32 + 8:
      return decode_kernel<2, OUT, 8>;
    case 64 + 1:
      return decode_kernel<4, OUT, 1>;
    case 64 + 2:
      return decode_kernel<4, OUT, 2>;
    case 64 + 4:
      return decode_kernel<4, OUT, 4>;
    case 128 + 1:
      return decode_kernel<8, OUT, 1>;
    case 128 + 2:
      return decode_kernel<8, OUT, 2>;
    default:
      return decode_kernel<1, OUT, 1>;
  }
}

// Opts a decode kernel into its dynamic shared memory beyond the 48 KB default (per device;
// cheap and idempotent, so done before every query and launch that needs it).
cudaError_t decode_smem_attr(DecodeFn fn, int smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
}

// Resident CTAs per SM of the decode kernel (occupancy API, cached: the answer depends only on
// the compiled kernel).
int decode_ctas_per_sm(int nt, int parts) {
  static int cache[4][4] = {};
  const int slot = nt == 1 ? 0 : nt == 2 ? 1 : nt == 4 ? 2 : 3;
  const int ps = parts == 1 ? 0 : parts == 2 ? 1 : parts == 4 ? 2 : 3;
  int &c = cache[slot][ps];
  if (c != 0) return c;
  int b = 0;
  const DecodeFn fn = decode_fn<DGQ_OUT_F16>(nt, parts);
  cudaError_t e = decode_smem_attr(fn, decode_smem_bytes(nt, parts));
  if (e == cudaSuccess) {
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, fn, kDecodeWarps * 32 * parts, decode_smem_bytes(nt, parts));
  }
  if (e != cudaSuccess || b < 1) {
    (void)cudaGetLastError();
    b = std::max(1, 4 / parts);
  }
  c = b;
  return c;
}

// K parts of the decode kernel with one part per CTA (grid.y): fill every resident CTA slot once
// (a single wave: a partial second wave would stream its share at a fraction of the bandwidth)
// while each warp keeps at least two batches of loads.
int decode_split(int m, int n, int k, int num_sms) {
  if (m < 1 || m > kDecodeMaxM || n % kDecodeRows != 0 || k % kChunkK != 0) return 0;
  const int row_blocks = n / kDecodeRows;
  const int kc = k / kChunkK;
  const int nt = decode_nt(m);
  const int u = decode_unroll(nt);
  const int slots = std::max(1, num_sms) * decode_ctas_per_sm(nt, 1);
  int split = std::max(1, slots / row_blocks);
  split = std::min(split, std::max(1, kc / (2 * u)));
  // Whole batches per split: a split's time is its number of batches (one HBM round trip
  // each), so a last batch of one chunk costs as much as a full one (H100, 8192² M = 1: split 10
  // = 13 chunks each, 17.5 µs; split 8 = 16 chunks, 16.3 µs).
  const int batches = (kc + u - 1) / u;
  const int per = ((batches + split - 1) / split) * u;
  return (kc + per - 1) / per;
}

// How the decode kernel splits K: `parts` K parts inside each CTA (reduced in shared memory) ×
// `split` CTAs per row block (reduced through the workspace), `per` chunks per part.
struct DecodePlan {
  int parts;
  int split;
  int per;
};

// DGQ_DECODE_CTA_PARTS=n allows at most n K parts per CTA, for comparisons and sweeps (0 or 1:
// every K part in its own CTA, the split-K of h100-v9).
int decode_parts_cap() {
  static const int cap = [] {
    const char *v = getenv("DGQ_DECODE_CTA_PARTS");
    return v == nullptr ? 8 : std::max(1, atoi(v));
  }();
  return cap;
}

// DGQ_DECODE_PLAN=parts,split forces a plan (parts a power of two up to decode_max_parts), for
// sweeps; other values are ignored.
bool decode_plan_forced(int nt, int *parts, int *split) {
  static const std::pair<int, int> f = [] {
    const char *v = getenv("DGQ_DECODE_PLAN");
    int a = 0, b = 0;
    if (v == nullptr || sscanf(v, "%d,%d", &a, &b) != 2) return std::make_pair(0, 0);
    return std::make_pair(a, b);
  }();
  if (f.first < 1 || f.first > decode_max_parts(nt) || (f.first & (f.first - 1)) != 0 || f.second < 1) return false;
  *parts = f.first;
  *split = f.second;
  return true;
}

// The K parts decode_split wants, moved into the CTA as far as the grid still fills the SMs in
// one wave with at least 3/4 of those parts, or half of them where no global split is left: the
// global split-K fix-up (fence, ticket atomic, partial reads: ≈3 µs per call on H100) then goes
// away where N alone gives enough CTAs (8192², 28672×8192, 8192×28672) and shrinks elsewhere.
// (H100, parts × split: 8192² M = 32 4 × 1 16.0 µs, 2 × 3 17.9; 11008×4096 M = 1–8 4 × 1
// 10.7, 2 × 3 12.0–12.2; 8192×28672 M = 32 4 × 1 47.0, 2 × 3 46.6.)
DecodePlan decode_plan(int m, int n, int k, int num_sms) {
  const int want = decode_split(m, n, k, num_sms);
  const int kc = k / kChunkK;
  if (want < 1) return {1, 1, kc};
  const int row_blocks = n / kDecodeRows;
  const int nt = decode_nt(m);
  const int u = decode_unroll(nt);
  const int batches = (kc + u - 1) / u;
  int fp = 0, fs = 0;
  if (decode_plan_forced(nt, &fp, &fs)) {
    const int per = ((batches + fp * fs - 1) / (fp * fs)) * u;
    return {fp, (kc + per * fp - 1) / (per * fp), per};
  }
  const int sms = std::max(1, num_sms);
  for (int parts = decode_max_parts(nt); parts > 1; parts /= 2) {
    if (parts > want || parts > decode_parts_cap()) continue;
    const int slots = sms * decode_ctas_per_sm(nt, parts);
    int split = (want + parts - 1) / parts;
    if (row_blocks * split > slots) split = slots / row_blocks;
    if (split < 1 || 20 * row_blocks * split < 17 * sms) continue;
    if (4 * parts * split < 3 * want && (split > 1 || 2 * parts < want)) continue;
    // One token tile where a global split remains anyway: more, smaller CTAs (H100, 4096² M = 1,
    // parts × split: 2 × 4 7.5 µs, 4 × 2 8.7, 1 × 8 7.4; 11008×4096 2 × 3 12.0, 4 × 2 14.5).
    if (nt == 1 && split > 1 && parts > 2) continue;
    const int per = ((batches + parts * split - 1) / (parts * split)) * u;
    return {parts, (kc + per * parts - 1) / (per * parts), per};
  }
  const int per = (kc + want - 1) / want;
  return {1, (kc + per - 1) / per, per};
}

// Token tile of the wgmma kernel: the least rounds × relative stage cost, where a round is one
// pass of output tiles over the SMs (one persistent CTA per SM) and a stage costs 0.9 / 1 / 1.5
// at BM = 64 / 128 / 256 (fitted to H100 runs at M = 96–384, where the kernel is latency-bound
// and rounds dominate: 11008×4096 M = 128 takes 24 µs at BM = 128, one round, vs 38 at 64, two;
// 28672×8192 M = 192 112 µs at 256 vs 152 at 128 vs 203 at 64; 4096² M = 128 17.4 at 64 vs 21.6
// at 128, both one round). BM = 128 only for M > 64, 256 only for M > 128 (padding tokens cost
// full price: 28672×8192 M = 96 113 µs at 256 vs 80 at 128).
int ws_bm(int m, int n, int num_sms) {
  const int tn = n / kWsBN;
  const int sms = std::max(1, num_sms);
  int best = 64;
  long best_cost = -1;
  for (const int bm : {64, 128, 256}) {
    if (bm > 64 && m <= bm / 2) break;
    const long rounds = (static_cast<long>(tn) * ((m + bm - 1) / bm) + sms - 1) / sms;
    const long cost = rounds * (bm == 64 ? 9 : bm == 128 ? 10 : 15);
    // Ties over several rounds go to the larger tile (fewer dequantizations per token).
    if (best_cost < 0 || cost < best_cost || (cost == best_cost && rounds > 1)) {
      best = bm;
      best_cost = cost;
    }
  }
  return best;
}

int ws_tiles(int m, int n, int num_sms) {
  const int bm = ws_bm(m, n, num_sms);
  return (n / kWsBN) * ((m + bm - 1) / bm);
}

// Automatic choice of the decode kernel (measured on H100): M <= 32. At M = 64 the wgmma kernel
// is faster on every benchmark shape (4096²: 16.9 vs 20.4 µs, 11008×4096: 25.0 vs 35.0, 8192²:
// 30.2 vs 40.8); at M = 32 the decode kernel is (4096²: 11.6 vs 15.7, 8192²: 21.3 vs 29.6).
bool auto_decode(int m, int /*n*/, int /*num_sms*/) { return m <= 32; }

// Split-K of the wgmma kernel: one resident CTA per SM, so fill the SMs once when the output
// tiles alone do not, keeping at least 4 pipeline stages (K = 512) per split.
int wgmma_split(int m, int n, int k, int num_sms) {
  if (m < 1 || n % kWsBN != 0 || k % (kChunkK * kWsChunks) != 0) return 0;
  const int tiles = ws_tiles(m, n, num_sms);
  const int stages = k / (kChunkK * kWsChunks);
  int split = std::max(1, std::max(1, num_sms) / tiles);
  split = std::min(split, std::max(1, stages / 4));
  const int per = (stages + split - 1) / split;
  return (stages + per - 1) / per;
}

// The auto choice takes the wgmma kernel for every M the decode kernel does not take.
bool wgmma_fits(int n) { return n % kWsBN == 0; }

// Programmatic dependent launch (PDL) for the GEMM's kernels: each may launch while the previous
// kernel of the stream finishes and waits for it (griddepcontrol.wait) before touching memory.
// DGQ_NO_PDL=1 turns it off.
bool pdl_enabled() {
  static const bool on = getenv("DGQ_NO_PDL") == nullptr || getenv("DGQ_NO_PDL")[0] != '1';
  return on;
}
struct PdlLaunch {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  PdlLaunch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl_enabled() ? 1 : 0;
  }
};

// Shared memory per SM of the current device (cached, as the occupancies above).
int smem_per_sm() {
  static const int v = [] {
    int dev = 0, b = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&b, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return b;
  }();
  return v;
}

// Dynamic shared memory for a decode launch. The plans assume a grid's CTAs spread evenly over
// the SMs (ceil(grid / SMs) each); where more would fit on one SM the block scheduler may pack
// them (with PDL it places CTAs on whichever SMs free up first), leaving SMs idle. Requesting
// just over 1/(L+1) of an SM's shared memory caps it at L CTAs. (H100, 4096² M = 32, 4 parts ×
// 2 splits = 128 CTAs, 64 registers so 2 fit per SM: 10.5 µs, vs 8.6 with 84 registers, and
// 7.9 or 9.2 µs at M = 16 from one run to the next.)
int decode_launch_smem(int nt, int parts, int grid, int num_sms) {
  const int need = decode_smem_bytes(nt, parts);
  const int sm = smem_per_sm();
  const int per_sm = (grid + std::max(1, num_sms) - 1) / std::max(1, num_sms);
  if (sm <= 0 || decode_ctas_per_sm(nt, parts) <= per_sm) return need;
  const int cap = sm / (per_sm + 1) + 16;  // per_sm + 1 CTAs no longer fit (each also has 1 KB reserved)
  return cap * per_sm + 1024 * per_sm <= sm ? std::max(need, cap) : need;
}

template <int OUT>
int launch_decode(const GemmParams &p, const DecodePlan &plan, int num_sms, cudaStream_t stream) {
  // Launched with PDL so that its launch and ramp overlap the previous kernel's tail.
  const int nt = decode_nt(p.m);
  const DecodeFn fn = decode_fn<OUT>(nt, plan.parts);
  const dim3 grid(p.n / kDecodeRows, plan.split);
  const int smem = decode_launch_smem(nt, plan.parts, static_cast<int>(grid.x * grid.y), num_sms);
  cudaError_t e = decode_smem_attr(fn, smem);
  if (e != cudaSuccess) return static_cast<int>(e);
  PdlLaunch l(grid, dim3(kDecodeWarps * 32 * plan.parts), smem, stream);
  e = cudaLaunchKernelEx(&l.cfg, fn, p, plan.split, plan.per);
  if (e != cudaSuccess) return static_cast<int>(e);
  return static_cast<int>(cudaGetLastError());
}

template <int BM, int OUT>
int launch_prefill_bm(const GemmParams &p, cudaStream_t stream) {
  constexpr size_t smem = pf_smem_bytes<BM>();
  // Set on every call (cheap, host side): the attribute is per device and the caller may switch.
  const cudaError_t e = cudaFuncSetAttribute(prefill_kernel<BM, OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
  if (e != cudaSuccess) return static_cast<int>(e);
  const int tiles = (p.n / kPfBN) * ((p.m + BM - 1) / BM);
  prefill_kernel<BM, OUT><<<tiles, kPfThreads, smem, stream>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <int OUT>
int launch_prefill(const GemmParams &p, int num_sms, cudaStream_t stream) {
  // Largest token tile that still gives every SM a tile; small problems take BM = 32.
  const int tiles_n = p.n / kPfBN;
  auto tiles = [&](int bm) { return tiles_n * ((p.m + bm - 1) / bm); };
  if (tiles(128) >= num_sms) return launch_prefill_bm<128, OUT>(p, stream);
  if (tiles(64) >= num_sms) return launch_prefill_bm<64, OUT>(p, stream);
  return launch_prefill_bm<32, OUT>(p, stream);
}

// cuTensorMapEncodeTiled from the driver, through the runtime's entry-point query (cudart is
// linked statically; the driver library is whatever the process has loaded).
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void *f = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 2-D tensor map over a row-major [rows, cols] matrix of 1- or 2-byte elements, boxes of
// box_cols × box_rows in the 128-byte swizzle (box_cols · element size = 128 bytes).
cudaError_t tensor_map_2d(CUtensorMap *map, CUtensorMapDataType type, int elem_bytes, const void *base, int rows,
                          int cols, int box_cols, int box_rows, CUtensorMapL2promotion promotion) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * elem_bytes};  // bytes, of dimension 1
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode(map, type, 2, const_cast<void *>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promotion,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The wgmma kernel's view of the activations: int8 [M, K], boxes of 128 bytes of K × BM rows in
// the 128-byte swizzle its B descriptors expect; rows past M read as zero.
template <int BM>
cudaError_t activation_tensor_map(const GemmParams &p, CUtensorMap *map) {
  return tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, p.x, p.m, p.k, 128, BM, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// TMA-store epilogue of the wgmma kernel for f16/bf16 output, 16-byte aligned (measured on H100
// against per-thread stores: 4096² M = 4096 110.8 vs 120.8 µs, 11008×4096 296 vs 335;
// DGQ_WS_TMA_STORE=0 turns it off for comparisons).
bool ws_tma_store_enabled() {
  static const bool on = [] {
    const char *v = getenv("DGQ_WS_TMA_STORE");
    return v == nullptr || v[0] != '0';
  }();
  return on;
}

// The output [M, N] of 16-bit elements as boxes of 64 channels × BM rows (128-byte swizzle);
// stores clip rows past M.
template <int BM>
cudaError_t output_tensor_map(const GemmParams &p, CUtensorMap *map) {
  return tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, p.out, p.m, p.n, 64, BM, CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

template <int BM, int OUT, bool TSTORE>
cudaError_t launch_ws_grid(const GemmParams &p, const CUtensorMap &tmap, const CUtensorMap &tmap_out, int split,
                           int per, int grid, cudaStream_t stream) {
  using C = WsCfg<BM, TSTORE>;
  const cudaError_t e = cudaFuncSetAttribute(ws_kernel<BM, OUT, TSTORE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(C::kSmem));
  if (e != cudaSuccess) return e;
  PdlLaunch l(dim3(grid), dim3(kWsThreads), C::kSmem, stream);
  return cudaLaunchKernelEx(&l.cfg, ws_kernel<BM, OUT, TSTORE>, p, tmap, tmap_out, split, per);
}

template <int BM, int OUT>
int launch_ws(const GemmParams &p, int split, int num_sms, cudaStream_t stream) {
  CUtensorMap tmap;
  const cudaError_t te = activation_tensor_map<BM>(p, &tmap);
  if (te != cudaSuccess) return static_cast<int>(te);
  const int tiles = (p.n / kWsBN) * ((p.m + BM - 1) / BM);
  const int stages = p.k / (kChunkK * kWsChunks);
  const int per = (stages + split - 1) / split;
  split = (stages + per - 1) / per;
  // Persistent: one CTA per SM at most, looping over the (tile, split) items.
  const int grid = std::min(tiles * split, std::max(1, num_sms));
  CUtensorMap tmap_out = {};
  cudaError_t le;
  if constexpr (OUT != DGQ_OUT_I32) {
    if (ws_tma_store_enabled() && aligned(p.out, 16)) {
      const cudaError_t oe = output_tensor_map<BM>(p, &tmap_out);
      if (oe != cudaSuccess) return static_cast<int>(oe);
      le = launch_ws_grid<BM, OUT, true>(p, tmap, tmap_out, split, per, grid, stream);
      if (le != cudaSuccess) return static_cast<int>(le);
      return static_cast<int>(cudaGetLastError());
    }
  }
  le = launch_ws_grid<BM, OUT, false>(p, tmap, tmap_out, split, per, grid, stream);
  if (le != cudaSuccess) return static_cast<int>(le);
  return static_cast<int>(cudaGetLastError());
}

template <int OUT>
int launch_wgmma(const GemmParams &p, int bm, int split, int num_sms, cudaStream_t stream) {
  if (bm == 256) return launch_ws<256, OUT>(p, split, num_sms, stream);
  if (bm == 128) return launch_ws<128, OUT>(p, split, num_sms, stream);
  return launch_ws<64, OUT>(p, split, num_sms, stream);
}

template <int OUT>
int dispatch(const DgqGemmArgs &a, const GemmParams &p, cudaStream_t stream) {
  const int num_sms = a.num_sms > 0 ? a.num_sms : 132;
  bool use_decode =
      a.kernel == DGQ_KERNEL_DECODE || (a.kernel == DGQ_KERNEL_AUTO && auto_decode(a.m, a.n, num_sms));
  if (use_decode) {
    if (a.m > kDecodeMaxM) return DGQ_EINVAL;
    const int kc = a.k / kChunkK;
    // A caller's split is one K part per CTA, as asked.
    DecodePlan plan = a.split_k > 0 ? DecodePlan{1, std::min(a.split_k, kc), 0} : decode_plan(a.m, a.n, a.k, num_sms);
    // Shrink the split to what the caller's workspace holds rather than failing.
    const size_t per_split = static_cast<size_t>(a.m) * a.n;
    int split = plan.split;
    if (split > 1) {
      // The fix-up reads the partials as 16-byte vectors.
      const size_t fit = a.ws_partials == nullptr || !aligned(a.ws_partials, 16) ? 0 : a.ws_partials_len / per_split;
      if (a.ws_counters == nullptr || a.ws_counters_len < static_cast<size_t>(a.n / kDecodeRows)) split = 1;
      split = static_cast<int>(std::min<size_t>(split, std::max<size_t>(fit, 1)));
    }
    if (split != plan.split || plan.per == 0) {
      const int parts = plan.parts * std::max(split, 1);
      plan.per = (kc + parts - 1) / parts;
      plan.split = (kc + plan.per * plan.parts - 1) / (plan.per * plan.parts);
    }
    return launch_decode<OUT>(p, plan, num_sms, stream);
  }
  const bool wgmma = wgmma_fits(a.n) && (a.kernel == DGQ_KERNEL_PREFILL ||
                                          a.kernel == DGQ_KERNEL_AUTO);
  if (wgmma) {
    const int bm = ws_bm(a.m, a.n, num_sms);
    const int tiles = ws_tiles(a.m, a.n, num_sms);
    int split = a.split_k > 0 ? a.split_k : wgmma_split(a.m, a.n, a.k, num_sms);
    const int stages = a.k / (kChunkK * kWsChunks);
    split = std::max(1, std::min(split, stages));
    if (split > 1) {
      // Shrink the split to what the caller's workspace holds rather than failing.
      const size_t per_split = static_cast<size_t>(a.m) * a.n;
      // The fix-up reads the partials as 16-byte vectors.
      const size_t fit = a.ws_partials == nullptr || !aligned(a.ws_partials, 16) ? 0 : a.ws_partials_len / per_split;
      if (a.ws_counters == nullptr || a.ws_counters_len < static_cast<size_t>(tiles)) split = 1;
      split = static_cast<int>(std::min<size_t>(split, std::max<size_t>(fit, 1)));
    }
    return launch_wgmma<OUT>(p, bm, std::max(split, 1), num_sms, stream);
  }
  return launch_prefill<OUT>(p, num_sms, stream);
}

}  // namespace
}  // namespace dgq

extern "C" void dgq_w4a8_workspace_len(int32_t m, int32_t n, int32_t k, int32_t num_sms, size_t *partials,
                                       size_t *counters) {
  using namespace dgq;
  size_t parts = 0, cnt = 0;
  if (m >= 1 && auto_decode(m, n, num_sms)) {
    const int split = decode_plan(m, n, k, num_sms).split;
    if (split > 1) parts = static_cast<size_t>(split) * m * n;
    cnt = static_cast<size_t>(n / kDecodeRows);
  } else if (wgmma_fits(n)) {
    const int split = wgmma_split(m, n, k, num_sms);
    const size_t tiles = static_cast<size_t>(ws_tiles(m, n, num_sms));
    if (split > 1) {
      parts = static_cast<size_t>(split) * m * n;
      cnt = tiles;
    }
  }
  if (partials != nullptr) *partials = parts;
  if (counters != nullptr) *counters = cnt;
}

extern "C" int dgq_w4a8_gemm(const DgqGemmArgs *a, void *stream) {
  using namespace dgq;
  if (a == nullptr) return DGQ_EINVAL;
  // The Rust API validates first with precise errors; this is the last line of defence for C.
  if (a->m < 1 || a->n < 1 || a->k < 1 || a->n % kPfBN != 0 || a->k % (kChunkK * kPfChunks) != 0 ||
      a->group_size < kChunkK || a->group_size % kChunkK != 0 || a->k % a->group_size != 0)
    return DGQ_EINVAL;
  if (a->x == nullptr || a->wq == nullptr || a->wmeta == nullptr || a->out == nullptr) return DGQ_EINVAL;
  if (!aligned(a->x, 16) || !aligned(a->wq, 16) || !aligned(a->wmeta, 4)) return DGQ_EINVAL;
  if (a->out_kind != DGQ_OUT_I32) {
    if (a->s1 == nullptr || a->sx == nullptr || !aligned(a->s1, 4) || !aligned(a->sx, 4)) return DGQ_EINVAL;
    if (a->bias != nullptr && !aligned(a->bias, 4)) return DGQ_EINVAL;
  }
  if (!aligned(a->out, a->out_kind == DGQ_OUT_I32 ? 4 : 2)) return DGQ_EINVAL;

  GemmParams p;
  p.x = a->x;
  p.wq = reinterpret_cast<const uint4 *>(a->wq);
  p.wmeta = a->wmeta;
  p.s1 = a->s1;
  p.sx = a->sx;
  p.sx_per_token = a->sx_per_token;
  p.bias = a->bias;
  p.out = a->out;
  p.m = a->m;
  p.n = a->n;
  p.k = a->k;
  p.group_size = a->group_size;
  p.chunks_per_group = a->group_size / kChunkK;
  p.ws_partials = a->ws_partials;
  p.ws_counters = a->ws_counters;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a->out_kind) {
    case DGQ_OUT_F16:
      return dispatch<DGQ_OUT_F16>(*a, p, s);
    case DGQ_OUT_BF16:
      return dispatch<DGQ_OUT_BF16>(*a, p, s);
    case DGQ_OUT_I32:
      return dispatch<DGQ_OUT_I32>(*a, p, s);
    default:
      return DGQ_EINVAL;
  }
}
