// Toolchain smoke test and status strings.
#include <cuda_runtime.h>

#include "common.cuh"

namespace {
__global__ void ping_kernel(int32_t *out) {
  const int i = threadIdx.x;
  const uint32_t v = static_cast<uint32_t>(i) * 0x01010101u;  // four bytes equal to i
  int32_t r;
  asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(v), "r"(v), "r"(0));  // 4·i·i for i < 128
  out[i] = r;
}
}  // namespace

extern "C" int dgq_ping(int32_t *out, void *stream) {
  if (out == nullptr) return DGQ_EINVAL;
  ping_kernel<<<1, 32, 0, static_cast<cudaStream_t>(stream)>>>(out);
  return static_cast<int>(cudaGetLastError());
}

extern "C" const char *dgq_status_string(int code) {
  if (code == 0) return "success";
  if (code == DGQ_EINVAL) return "invalid argument (rejected before launch)";
  if (code == DGQ_EWORKSPACE) return "split-K workspace missing or too small";
  if (code > 0) return cudaGetErrorString(static_cast<cudaError_t>(code));
  return "unknown dgq status";
}
