// W4A8 GEMM: int8 activations [M, K] × prepared DGQ u4 weights [N, K] -> [M, N].
//
// Both kernels keep the weights as u4 in HBM and expand them to int8 in registers inside the
// main loop (dq4: one IMAD + one XOR per four weights), then run INT8 tensor-core MMAs with the
// weights as the A operand (output channels) and the tokens as B. The prepared weights give
// every lane its A fragments of a 64-deep chunk in one 16-byte load, in the hardware's own K
// order: the wgmma kernel takes the activations from shared memory exactly as TMA copies them,
// and the mma.sync kernels stage them in shared memory and read B fragments with ldmatrix.
//
// This file is the entry point: it checks the arguments and the host's plan
// (crates/dgq-cuda/src/plan.rs) and hands them to the kernel's launcher in decode.cu, mma.cu or
// wgmma.cu. Activation quantization is in act_quant.cu.

#include <cuda_runtime.h>

#include "launch.cuh"

namespace {

// Shapes every kernel takes: N and K multiples of 128.
constexpr int kGemmTileN = 128;
constexpr int kGemmTileK = 128;
constexpr int kDecodeRowsPerCounter = 64;  // decode: one tile counter per 64 output channels
constexpr int kWgmmaTileN = 128;

// A split plan needs split · M · N int32 partials (16-byte aligned: the fix-up reads vectors)
// and one counter per output tile.
bool workspace_holds(const DgqGemmArgs &a, int split, long long counters) {
  if (split <= 1) return true;
  if (a.ws_partials == nullptr || a.ws_counters == nullptr || !dgq::aligned(a.ws_partials, 16)) return false;
  const unsigned long long need = static_cast<unsigned long long>(split) * a.m * a.n;
  return a.ws_partials_len >= need && a.ws_counters_len >= static_cast<unsigned long long>(counters);
}

}  // namespace

extern "C" int dgq_w4a8_gemm(const DgqGemmArgs *a, const DgqGemmPlan *plan, void *stream) {
  using namespace dgq;
  if (a == nullptr || plan == nullptr) return DGQ_EINVAL;
  // The Rust API validates first with precise errors; this is the last line of defence for C.
  if (a->m < 1 || a->n < 1 || a->k < 1 || a->n % kGemmTileN != 0 || a->k % kGemmTileK != 0 ||
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
  switch (plan->kernel) {
    case DGQ_GEMM_DECODE:
      if (!workspace_holds(*a, plan->split, a->n / kDecodeRowsPerCounter)) return DGQ_EWORKSPACE;
      return launch_decode(p, a->out_kind, *plan, s);
    case DGQ_GEMM_MMA:
      return launch_mma(p, a->out_kind, *plan, s);
    case DGQ_GEMM_WGMMA: {
      if (plan->bm < 1) return DGQ_EINVAL;
      const long long tiles = static_cast<long long>(a->n / kWgmmaTileN) * ((a->m + plan->bm - 1) / plan->bm);
      if (!workspace_holds(*a, plan->split, tiles)) return DGQ_EWORKSPACE;
      return launch_wgmma(p, a->out_kind, *plan, s);
    }
    default:
      return DGQ_EINVAL;
  }
}