// Shared device helpers: the in-register u4 -> s8 dequant, INT8 mma, epilogue, cp.async.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "dgq_kernels.h"

namespace dgq {

// K covered by one prepared chunk: two m16n8k32 k-steps; one warp reads it as 32 × 16 B.
constexpr int kChunkK = 64;

struct GemmParams {
  const int8_t *x;
  const uint4 *wq;
  const uint32_t *wmeta;
  const float *s1;
  const float *sx;
  int sx_per_token;
  const float *bias;
  void *out;
  int m, n, k, group_size;
  int chunks_per_group;  // group_size / 64
  int32_t *ws_partials;
  uint32_t *ws_counters;
};

// Four u4 codes (one per byte, 0..15) -> four int8 weights. No byte carries into the next:
// q'·S2 + a = W_s8 + 128 ∈ [1, 255] for every valid weight (prepare() guarantees it), so one
// IMAD does four multiply-adds and the XOR maps w + 128 back to two's complement w.
__device__ __forceinline__ uint32_t dq4(uint32_t nib, uint32_t s2, uint32_t abias) {
  return (nib * s2 + abias) ^ 0x80808080u;
}

// One lane's 16 prepared bytes + its group's meta word -> A fragments of two k-steps.
// a[s][0..3] are the m16n8k32 A registers of k-step s (a0/a2: row g, a1/a3: row g + 8).
__device__ __forceinline__ void dequant(const uint4 p, const uint32_t meta, uint32_t (&a)[2][4]) {
  const uint32_t s_lo = meta & 0xffu;
  const uint32_t a_lo = ((meta >> 8) & 0xffu) * 0x01010101u;
  const uint32_t s_hi = (meta >> 16) & 0xffu;
  const uint32_t a_hi = (meta >> 24) * 0x01010101u;
  a[0][0] = dq4(p.x & 0x0f0f0f0fu, s_lo, a_lo);
  a[0][2] = dq4((p.x >> 4) & 0x0f0f0f0fu, s_lo, a_lo);
  a[1][0] = dq4(p.y & 0x0f0f0f0fu, s_lo, a_lo);
  a[1][2] = dq4((p.y >> 4) & 0x0f0f0f0fu, s_lo, a_lo);
  a[0][1] = dq4(p.z & 0x0f0f0f0fu, s_hi, a_hi);
  a[0][3] = dq4((p.z >> 4) & 0x0f0f0f0fu, s_hi, a_hi);
  a[1][1] = dq4(p.w & 0x0f0f0f0fu, s_hi, a_hi);
  a[1][3] = dq4((p.w >> 4) & 0x0f0f0f0fu, s_hi, a_hi);
}

// The B fragments of one 64-deep chunk for 8 token rows: k-step 0 takes k = 4t..4t+3 and
// 16+4t..16+4t+3 of row g (lane = 4g + t), k-step 1 the same 32 further on (the prepared weights
// hold the matching A fragments). ldmatrix.x4 reads them from shared memory: matrix j is bytes
// 16j..16j+15 of the 8 rows, and lane 8j + r gives the address of row r of matrix j.
__device__ __forceinline__ uint4 ldmatrix_x4(uint32_t smem_addr) {
  uint4 v;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(smem_addr));
  return v;
}

__device__ __forceinline__ void mma_s8(int32_t (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Weights are read exactly once: keep them out of L1. A coherent load, not ld.global.nc: ptxas
// sinks read-only (.nc) loads below a bar.sync, and in the decode kernel that put all four weight
// loads of a batch after the per-batch barrier (SASS, 16 tokens × 8 parts), so the barrier wait
// and the HBM latency added up instead of overlapping.
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
  uint4 v;
  asm volatile("ld.global.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// 16-byte cp.async through L1 (.ca: the decode kernel's CTAs read the same activations), issued
// only where `on` (a predicated instruction, not a branch around it: lanes of a warp differ).
__device__ __forceinline__ void cp_async16_ca_if(bool on, uint32_t smem_addr, const void *gmem) {
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %0, 0;\n @p cp.async.ca.shared.global [%1], [%2], 16;\n}\n" ::"r"(
                   static_cast<int>(on)),
               "r"(smem_addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Epilogue y = float(acc) · (s_x[m] · s1[n]) (+ bias[n]), with explicit round-to-nearest
// intrinsics so no FMA contraction changes the result versus the CPU reference. The factors
// come in registers: callers load them in batches ahead of the stores (loaded next to each
// store, every load waited behind the previous store — the compiler cannot prove they do not
// alias — and the epilogue took a third of the prefill kernel's consumer time at M = 4096).
// scaled_bits: y as the 16 bits of an f16 / bf16 output.
template <int OUT>
__device__ __forceinline__ uint16_t scaled_bits(const GemmParams &p, int32_t acc, float sx, float s1, float bias) {
  float y = __fmul_rn(__int2float_rn(acc), __fmul_rn(sx, s1));
  if (p.bias != nullptr) y = __fadd_rn(y, bias);
  if constexpr (OUT == DGQ_OUT_F16) {
    return __half_as_ushort(__float2half_rn(y));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(y));
  }
}
template <int OUT>
__device__ __forceinline__ void store_scaled(const GemmParams &p, int m, int n, int32_t acc, float sx, float s1,
                                             float bias) {
  const size_t idx = static_cast<size_t>(m) * p.n + n;
  if constexpr (OUT == DGQ_OUT_I32) {
    static_cast<int32_t *>(p.out)[idx] = acc;
  } else {
    static_cast<uint16_t *>(p.out)[idx] = scaled_bits<OUT>(p, acc, sx, s1, bias);
  }
}
// The epilogue factors of row m / column n (unused, and not read, for INT32 output).
template <int OUT>
__device__ __forceinline__ float row_scale(const GemmParams &p, int m) {
  return OUT == DGQ_OUT_I32 ? 0.f : __ldg(p.sx + (p.sx_per_token ? m : 0));
}
template <int OUT>
__device__ __forceinline__ float col_scale(const GemmParams &p, int n) {
  return OUT == DGQ_OUT_I32 ? 0.f : __ldg(p.s1 + n);
}
template <int OUT>
__device__ __forceinline__ float col_bias(const GemmParams &p, int n) {
  return OUT == DGQ_OUT_I32 || p.bias == nullptr ? 0.f : __ldg(p.bias + n);
}
template <int OUT>
__device__ __forceinline__ void store_out(const GemmParams &p, int m, int n, int32_t acc) {
  store_scaled<OUT>(p, m, n, acc, row_scale<OUT>(p, m), col_scale<OUT>(p, n), col_bias<OUT>(p, n));
}

// Split-K fix-up run by the last CTA of a tile: sums the int32 partials of `split` K slices for
// rows [m0, m0 + rows) × columns [n0, n0 + cols) (cols % 4 == 0; the workspace is 16-byte
// aligned, which dispatch guarantees) and runs the epilogue. VEC 16-byte vectors per thread and
// a partly unrolled split loop keep up to 4·VEC independent loads in flight: one load at a time
// made this tail cost tens of microseconds at M = 128. (The decode kernel takes VEC = 1: more
// registers there cost it resident CTAs.)
template <int OUT, int VEC>
__device__ __forceinline__ void splitk_reduce(const GemmParams &p, int split, int m0, int rows, int n0, int cols,
                                              int tid, int nthreads) {
  const size_t plane = static_cast<size_t>(p.m) * p.n;
  const int q = cols / 4;
  const int total = rows * q;
  for (int base = tid; base < total; base += VEC * nthreads) {
    int4 s[VEC];
    const int4 *src[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      s[j] = make_int4(0, 0, 0, 0);
      const int idx = min(base + j * nthreads, total - 1);
      src[j] = reinterpret_cast<const int4 *>(p.ws_partials + static_cast<size_t>(m0 + idx / q) * p.n + n0 +
                                              (idx % q) * 4);
    }
#pragma unroll 4
    for (int ss = 0; ss < split; ++ss) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int4 v = __ldcg(src[j] + ss * (plane / 4));
        s[j].x += v.x;
        s[j].y += v.y;
        s[j].z += v.z;
        s[j].w += v.w;
      }
    }
    // Every factor of the VEC vectors first, then the stores (see store_scaled).
    float sx[VEC], s1[VEC][4], bias[VEC][4];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int idx = min(base + j * nthreads, total - 1);
      const int m = m0 + idx / q, n = n0 + (idx % q) * 4;
      sx[j] = row_scale<OUT>(p, m);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s1[j][e] = col_scale<OUT>(p, n + e);
        bias[j][e] = col_bias<OUT>(p, n + e);
      }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int idx = base + j * nthreads;
      if (idx < total) {
        const int m = m0 + idx / q, n = n0 + (idx % q) * 4;
        store_scaled<OUT>(p, m, n, s[j].x, sx[j], s1[j][0], bias[j][0]);
        store_scaled<OUT>(p, m, n + 1, s[j].y, sx[j], s1[j][1], bias[j][1]);
        store_scaled<OUT>(p, m, n + 2, s[j].z, sx[j], s1[j][2], bias[j][2]);
        store_scaled<OUT>(p, m, n + 3, s[j].w, sx[j], s1[j][3], bias[j][3]);
      }
    }
  }
}

}  // namespace dgq
