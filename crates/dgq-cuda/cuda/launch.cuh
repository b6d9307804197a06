// Host-side pieces shared by the launchers: the launch with programmatic dependent launch, the
// alignment test, and the per-kernel launchers that gemm.cu calls with the host's plan.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common.cuh"

namespace dgq {

inline bool aligned(const void *ptr, size_t a) { return (reinterpret_cast<uintptr_t>(ptr) % a) == 0; }

// A launch that, with `pdl`, may start while the previous kernel of the stream finishes (each
// kernel waits for it with griddepcontrol.wait before touching memory).
struct PdlLaunch {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  PdlLaunch(dim3 grid, dim3 block, size_t smem, bool pdl, cudaStream_t stream) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
};

// Each checks the plan fields its kernel reads (DGQ_EINVAL when they are out of range), then
// launches. `out_kind` is a DgqOutKind.
int launch_decode(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream);
int launch_mma(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream);
int launch_wgmma(const GemmParams &p, int out_kind, const DgqGemmPlan &plan, cudaStream_t stream);

// Resident CTAs per SM of the decode kernel with `nt` 8-token tiles and `parts` K parts.
int decode_ctas_per_sm(int nt, int parts);

}  // namespace dgq
