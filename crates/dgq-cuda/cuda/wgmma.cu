// wgmma kernel (Hopper, any M): the warp-specialised kernel of wgmma.cuh, its TMA descriptors and
// its launcher. Token tile, split and grid come from the host plan (crates/dgq-cuda/src/plan.rs).

#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>

#include "launch.cuh"
#include "wgmma.cuh"

namespace dgq {
namespace {

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

// The output [M, N] of 16-bit elements as boxes of 64 channels × BM rows (128-byte swizzle);
// stores clip rows past M.
template <int BM>
cudaError_t output_tensor_map(const GemmParams &p, CUtensorMap *map) {
  return tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, p.out, p.m, p.n, 64, BM, CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

template <int BM, int OUT, bool TSTORE>
cudaError_t launch_wgmma_grid(const GemmParams &p, const CUtensorMap &tmap, const CUtensorMap &tmap_out,
                              const DgqGemmPlan &plan, cudaStream_t stream) {
  using C = WgmmaCfg<BM, TSTORE>;
  const cudaError_t e = cudaFuncSetAttribute(wgmma_kernel<BM, OUT, TSTORE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(C::kSmem));
  if (e != cudaSuccess) return e;
  PdlLaunch l(dim3(plan.grid), dim3(kWgmmaThreads), C::kSmem, plan.pdl != 0, stream);
  return cudaLaunchKernelEx(&l.cfg, wgmma_kernel<BM, OUT, TSTORE>, p, tmap, tmap_out, plan.split, plan.per);
}

// Persistent: plan.grid CTAs (at most one per SM) loop over the (tile, split) items.
// The TMA-store epilogue (f16/bf16 output, 16-byte aligned) was measured on H100 against
// per-thread stores: 4096² M = 4096 110.8 vs 120.8 µs, 11008×4096 296 vs 335.
template <int BM, int OUT>
int launch_wgmma_bm(const GemmParams &p, const DgqGemmPlan &plan, cudaStream_t stream) {
  CUtensorMap tmap;
  const cudaError_t te = activation_tensor_map<BM>(p, &tmap);
  if (te != cudaSuccess) return static_cast<int>(te);
  CUtensorMap tmap_out = {};
  cudaError_t le;
  if constexpr (OUT != DGQ_OUT_I32) {
    if (plan.tma_store != 0 && aligned(p.out, 16)) {
      const cudaError_t oe = output_tensor_map<BM>(p, &tmap_out);
      if (oe != cudaSuccess) return static_cast<int>(oe);
      le = launch_wgmma_grid<BM, OUT, true>(p, tmap, tmap_out, plan, stream);
      if (le != cudaSuccess) return static_cast<int>(le);
      return static_cast<int>(cudaGetLastError());
    }
  }
  le = launch_wgmma_grid<BM, OUT, false>(p, tmap, tmap_out, plan, stream);
  if (le != cudaSuccess) return static_cast<int>(le);
  return static_cast<int>(cudaGetLastError());
}

template <int OUT>
int launch_wgmma_out(const GemmParams &p, const DgqGemmPlan &plan, cudaStream_t stream) {
  if (plan.bm == 256) return launch_wgmma_bm<256, OUT>(p, plan, stream);
  if (plan.bm == 128) return launch_wgmma_bm<128, OUT>(p, plan, stream);
  return launch_wgmma_bm<64, OUT>(p, plan, stream);
}

}  // namespace

int launch_wgmma(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream) {
  if (p.n % kWgmmaBN != 0 || p.k % (kChunkK * kWgmmaChunks) != 0) return DGQ_EINVAL;
  if (plan.bm != 64 && plan.bm != 128 && plan.bm != 256) return DGQ_EINVAL;
  const int stages = p.k / (kChunkK * kWgmmaChunks);
  const long long tiles = static_cast<long long>(p.n / kWgmmaBN) * ((p.m + plan.bm - 1) / plan.bm);
  if (plan.split < 1 || plan.per < 1 || static_cast<long long>(plan.split) * plan.per < stages) return DGQ_EINVAL;
  if (plan.grid < 1 || plan.grid > tiles * plan.split) return DGQ_EINVAL;
  switch (out_kind) {
    case DGQ_OUT_F16:
      return launch_wgmma_out<DGQ_OUT_F16>(p, plan, stream);
    case DGQ_OUT_BF16:
      return launch_wgmma_out<DGQ_OUT_BF16>(p, plan, stream);
    case DGQ_OUT_I32:
      return launch_wgmma_out<DGQ_OUT_I32>(p, plan, stream);
    default:
      return DGQ_EINVAL;
  }
}

}  // namespace dgq
