// INT8 activation quantization: f16/bf16 [M, K] -> int8 [M, K] + f32 scales, optionally dividing
// by smoothing factors first. One CTA per token row. Arithmetic mirrors dgq_core::act exactly:
// v = x / k_j (IEEE division), amax = max|v|, scale = amax / 127, inv = 127 / amax,
// q = clamp(rne(v · inv), −127, 127); amax < 2^-100 (dgq_core::act::MIN_AMAX, zero included) gives
// q = 0 and scale = 0. Static: inv = 1 / scale.

#include <cuda_runtime.h>

#include "common.cuh"

namespace dgq {
namespace {

constexpr int kQThreads = 512;
constexpr int kQCache = 8;
constexpr float kMinAmax = 0x1p-100f;  // dgq_core::act::MIN_AMAX  // 16-byte vectors kept in registers per thread between the two passes

template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T, bool SMOOTH>
__device__ __forceinline__ void load8(const T *row, const float *smooth, int vec, float (&v)[8]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(row) + vec);
  const T *e = reinterpret_cast<const T *>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = to_f32<T>(e[j]);
  if constexpr (SMOOTH) {
    const float4 k0 = __ldg(reinterpret_cast<const float4 *>(smooth) + vec * 2);
    const float4 k1 = __ldg(reinterpret_cast<const float4 *>(smooth) + vec * 2 + 1);
    v[0] = __fdiv_rn(v[0], k0.x);
    v[1] = __fdiv_rn(v[1], k0.y);
    v[2] = __fdiv_rn(v[2], k0.z);
    v[3] = __fdiv_rn(v[3], k0.w);
    v[4] = __fdiv_rn(v[4], k1.x);
    v[5] = __fdiv_rn(v[5], k1.y);
    v[6] = __fdiv_rn(v[6], k1.z);
    v[7] = __fdiv_rn(v[7], k1.w);
  }
}

__device__ __forceinline__ void quant_store8(int8_t *qrow, int vec, const float (&v)[8], float inv) {
  uint32_t w[2] = {0u, 0u};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    int q = __float2int_rn(__fmul_rn(v[j], inv));
    q = max(-127, min(127, q));
    w[j / 4] |= (static_cast<uint32_t>(q) & 0xffu) << (8 * (j % 4));
  }
  reinterpret_cast<uint2 *>(qrow)[vec] = make_uint2(w[0], w[1]);
}

// CACHED: the row fits in kQThreads × kQCache vectors and is read once; otherwise pass 2 re-reads.
template <typename T, bool SMOOTH, bool DYNAMIC, bool CACHED>
__global__ void __launch_bounds__(kQThreads) act_quant_kernel(const T *__restrict__ x, const float *__restrict__ smooth,
                                                              float static_scale, int8_t *__restrict__ q,
                                                              float *__restrict__ scales, int k) {
  const int row = blockIdx.x;
  const int nvec = k / 8;
  const T *xrow = x + static_cast<size_t>(row) * k;
  int8_t *qrow = q + static_cast<size_t>(row) * k;

  float inv;
  float cache[CACHED ? kQCache : 1][8];
  if constexpr (DYNAMIC) {
    float amax = 0.f;
    if constexpr (CACHED) {
#pragma unroll
      for (int i = 0; i < kQCache; ++i) {
        const int vec = threadIdx.x + i * kQThreads;
        if (vec < nvec) {
          load8<T, SMOOTH>(xrow, smooth, vec, cache[i]);
#pragma unroll
          for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(cache[i][j]));
        }
      }
    } else {
      for (int vec = threadIdx.x; vec < nvec; vec += kQThreads) {
        float v[8];
        load8<T, SMOOTH>(xrow, smooth, vec, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
      }
    }
    __shared__ float red[kQThreads / 32];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = red[0];
#pragma unroll
    for (int i = 1; i < kQThreads / 32; ++i) amax = fmaxf(amax, red[i]);
    const bool zero_row = !(amax >= kMinAmax);
    inv = zero_row ? 0.f : __fdiv_rn(127.f, amax);
    if (threadIdx.x == 0) scales[row] = zero_row ? 0.f : __fdiv_rn(amax, 127.f);
  } else {
    inv = __fdiv_rn(1.f, static_scale);
  }

  if constexpr (DYNAMIC && CACHED) {
#pragma unroll
    for (int i = 0; i < kQCache; ++i) {
      const int vec = threadIdx.x + i * kQThreads;
      if (vec < nvec) quant_store8(qrow, vec, cache[i], inv);
    }
  } else {
    for (int vec = threadIdx.x; vec < nvec; vec += kQThreads) {
      float v[8];
      load8<T, SMOOTH>(xrow, smooth, vec, v);
      quant_store8(qrow, vec, v, inv);
    }
  }
}

template <typename T, bool SMOOTH>
int launch_t(const DgqQuantArgs &a, cudaStream_t s) {
  const T *x = static_cast<const T *>(a.x);
  const bool dynamic = !(a.static_scale > 0.f);
  const bool cached = a.k / 8 <= kQThreads * kQCache;
  const dim3 grid(a.m), block(kQThreads);
  if (dynamic && cached) {
    act_quant_kernel<T, SMOOTH, true, true><<<grid, block, 0, s>>>(x, a.smooth, 0.f, a.q, a.scales, a.k);
  } else if (dynamic) {
    act_quant_kernel<T, SMOOTH, true, false><<<grid, block, 0, s>>>(x, a.smooth, 0.f, a.q, a.scales, a.k);
  } else {
    act_quant_kernel<T, SMOOTH, false, false><<<grid, block, 0, s>>>(x, a.smooth, a.static_scale, a.q, a.scales, a.k);
  }
  return static_cast<int>(cudaGetLastError());
}

bool aligned(const void *ptr, size_t al) { return (reinterpret_cast<uintptr_t>(ptr) % al) == 0; }

}  // namespace
}  // namespace dgq

extern "C" int dgq_quantize_acts(const DgqQuantArgs *a, void *stream) {
  using namespace dgq;
  if (a == nullptr || a->x == nullptr || a->q == nullptr) return DGQ_EINVAL;
  if (a->m < 1 || a->k < 8 || a->k % 8 != 0) return DGQ_EINVAL;
  if (!aligned(a->x, 16) || !aligned(a->q, 8)) return DGQ_EINVAL;
  if (a->smooth != nullptr && !aligned(a->smooth, 16)) return DGQ_EINVAL;
  const bool dynamic = !(a->static_scale > 0.f);
  if (dynamic && (a->scales == nullptr || !aligned(a->scales, 4))) return DGQ_EINVAL;
  if (!dynamic && !(a->static_scale < __FLT_MAX__)) return DGQ_EINVAL;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool smooth = a->smooth != nullptr;
  if (a->in_kind == DGQ_IN_F16) {
    return smooth ? launch_t<__half, true>(*a, s) : launch_t<__half, false>(*a, s);
  }
  if (a->in_kind == DGQ_IN_BF16) {
    return smooth ? launch_t<__nv_bfloat16, true>(*a, s) : launch_t<__nv_bfloat16, false>(*a, s);
  }
  return DGQ_EINVAL;
}
