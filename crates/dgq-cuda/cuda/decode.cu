// Decode kernel (M <= 64): memory-bound W4A8 GEMM for few tokens, its instantiations, its
// occupancy query and its launcher. The plan (K parts per CTA, split, chunks per part, shared
// memory) comes from the host (crates/dgq-cuda/src/plan.rs).

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "launch.cuh"

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

namespace {

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


}  // namespace

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

template <int OUT>
int launch_decode_out(const GemmParams &p, const DgqGemmPlan &plan, cudaStream_t stream) {
  // Launched with PDL (by default) so that its launch and ramp overlap the previous kernel's tail.
  const int nt = decode_nt(p.m);
  const DecodeFn fn = decode_fn<OUT>(nt, plan.parts);
  const dim3 grid(p.n / kDecodeRows, plan.split);
  cudaError_t e = decode_smem_attr(fn, plan.smem);
  if (e != cudaSuccess) return static_cast<int>(e);
  PdlLaunch l(grid, dim3(kDecodeWarps * 32 * plan.parts), plan.smem, plan.pdl != 0, stream);
  e = cudaLaunchKernelEx(&l.cfg, fn, p, plan.split, plan.per);
  if (e != cudaSuccess) return static_cast<int>(e);
  return static_cast<int>(cudaGetLastError());
}

int check_decode_plan(const GemmParams &p, const DgqGemmPlan &plan) {
  const int kc = p.k / kChunkK;
  const int parts = plan.parts;
  if (p.m > kDecodeMaxM || p.n % kDecodeRows != 0) return DGQ_EINVAL;
  if (parts < 1 || parts > decode_max_parts(decode_nt(p.m)) || (parts & (parts - 1)) != 0) return DGQ_EINVAL;
  if (plan.split < 1 || plan.per < 1 || static_cast<long long>(plan.split) * parts * plan.per < kc) return DGQ_EINVAL;
  if (plan.smem < decode_smem_bytes(decode_nt(p.m), parts)) return DGQ_EINVAL;
  return 0;
}

int launch_decode(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream) {
  const int bad = check_decode_plan(p, plan);
  if (bad != 0) return bad;
  switch (out_kind) {
    case DGQ_OUT_F16:
      return launch_decode_out<DGQ_OUT_F16>(p, plan, stream);
    case DGQ_OUT_BF16:
      return launch_decode_out<DGQ_OUT_BF16>(p, plan, stream);
    case DGQ_OUT_I32:
      return launch_decode_out<DGQ_OUT_I32>(p, plan, stream);
    default:
      return DGQ_EINVAL;
  }
}

}  // namespace dgq

extern "C" int dgq_decode_ctas_per_sm(int32_t token_tiles, int32_t parts) {
  using namespace dgq;
  const bool tiles_ok = token_tiles == 1 || token_tiles == 2 || token_tiles == 4 || token_tiles == 8;
  if (!tiles_ok || parts < 1 || parts > decode_max_parts(token_tiles) || (parts & (parts - 1)) != 0) return DGQ_EINVAL;
  return decode_ctas_per_sm(token_tiles, parts);
}
