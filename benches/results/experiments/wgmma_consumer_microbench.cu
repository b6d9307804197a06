// Stand-alone microbenchmark (not part of the build): one CTA per SM, two warpgroups that loop
// over exactly the wgmma prefill kernel's consumer work without any data pipeline — RS wgmma
// m64n256k32 on a fixed shared-memory B tile, optionally with the LDS + dequant (+ meta __ldg) of
// the real kernel in front of every chunk — to find out whether the consumer side limits it.
// Build and run (H100):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I../../../cuda -I../../../cuda/include \
//     -o mb wgmma_consumer_microbench.cu
//   ./mb
// Result (2026-11-23, H100 80GB HBM3, two sessions of two launches): RS 1957-1972 TOPS, SS 1943-1967,
// RS+dequant 1909-1924, RS+dequant+ldg meta 1907-1945 (dense INT8 peak ≈ 1979).
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

// The real kernel's descriptor, RS wgmma wrappers and dequant (cuda/).
#include "gemm_wgmma.cuh"
using namespace dgq;
__device__ __forceinline__ uint64_t desc(const void *p) { return smem_desc_sw128(p); }
__device__ __forceinline__ void wgmma_m64n256k32_ss(int32_t (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, 1;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
        "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
        "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
        "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]),
        "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]),
        "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]),
        "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]),
        "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(desc_a), "l"(desc_b));
}
template <int MODE>
__global__ void __launch_bounds__(256,1) k(int iters, int32_t* out, const uint32_t* gmeta) {
  extern __shared__ __align__(1024) uint8_t sm[];
  for (int i = threadIdx.x; i < 65536/4; i += 256) reinterpret_cast<uint32_t*>(sm)[i] = i * 2654435761u;
  __syncthreads();
  int32_t acc[128];
  for (int i = 0; i < 128; ++i) acc[i] = 0;
  uint32_t a[4][2][4];
  for (int b = 0; b < 4; ++b) for (int s = 0; s < 2; ++s) for (int r = 0; r < 4; ++r) a[b][s][r] = threadIdx.x * 7 + b + s + r;
  const int wg = threadIdx.x >> 7;
  const uint8_t* sb = sm + 32768 * 0;
  const uint8_t* sa = sm + 32768 + wg * 8192;
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      if (MODE >= 2) {
        const uint4 pw = reinterpret_cast<const uint4*>(sm + 32768)[((threadIdx.x >> 5) * 8 + ((it * 4 + c) & 7)) * 32 + (threadIdx.x & 31)];
        const uint32_t meta = MODE == 3 ? __ldg(gmeta + ((it * 4 + c) & 255) * 8 + (threadIdx.x & 7)) : 0x05800740u + it;
        dequant(pw, meta, a[c]);
      }
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        if (MODE != 1) wgmma_m64n256k32_rs(acc, a[c][s], desc(sb + 32 * (2 * (c & 1) + s)));
        else wgmma_m64n256k32_ss(acc, desc(sa + 32 * (2 * (c & 1) + s)), desc(sb + 32 * (2 * (c & 1) + s)));
      }
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    }
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  int32_t s = 0;
  for (int i = 0; i < 128; ++i) s += acc[i];
  out[blockIdx.x * 256 + threadIdx.x] = s;
}
int main() {
  int32_t* out; cudaMalloc(&out, 132 * 256 * 4);
  cudaFuncSetAttribute(k<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536);
  cudaFuncSetAttribute(k<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536);
  cudaFuncSetAttribute(k<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536);
  cudaFuncSetAttribute(k<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  const int iters = 20000;
  uint32_t* gm; cudaMalloc(&gm, 8192 * 4); cudaMemset(gm, 3, 8192 * 4);
  for (int mode = 0; mode < 4; ++mode) {
    for (int rep = 0; rep < 2; ++rep) {
      cudaEventRecord(e0);
      if (mode == 0) k<0><<<132, 256, 65536>>>(iters, out, gm); else if (mode == 1) k<1><<<132, 256, 65536>>>(iters, out, gm);
      else if (mode == 2) k<2><<<132, 256, 65536>>>(iters, out, gm); else k<3><<<132, 256, 65536>>>(iters, out, gm);
      cudaEventRecord(e1); cudaEventSynchronize(e1);
      float ms; cudaEventElapsedTime(&ms, e0, e1);
      double macs = 132.0 * 2 /*wg*/ * iters * 4 * 2 * 64.0 * 256 * 32;
      printf("%s: %.3f ms, %.1f TOPS (%s)\n", mode == 0 ? "RS" : mode == 1 ? "SS" : mode == 2 ? "RS+dequant" : "RS+dequant+ldg meta", ms, 2 * macs / ms / 1e9, cudaGetErrorString(cudaGetLastError()));
    }
  }
  return 0;
}
