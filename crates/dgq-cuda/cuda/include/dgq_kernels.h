/*
 * dgq CUDA kernels: the C launch API (bindgen reads this header; it must stay plain C with no
 * CUDA headers). Every launcher takes the caller's stream as an opaque `void*` (a cudaStream_t /
 * CUstream), enqueues work on it and never synchronises.
 *
 * Return codes: 0 = success; > 0 = a cudaError_t from the launch; < 0 = a DGQ_E* code below
 * (the arguments were rejected before anything was launched).
 *
 * Prepared weight layout (see crates/dgq-cuda/src/layout.rs for the exact bijection):
 *   wq    : [N/16][K/64][32 lanes][16 B]  packed u4 codes q' = q - qmin(group), nibble order
 *           chosen so that lane (g = lane/4, t = lane%4) holds rows 16r+g and 16r+g+8: nibble i
 *           of u32 word j is column 64c + 32(j%2) + 16(i%2) + 4t + i/2 of row 16r+g+8(j/2), i.e.
 *           the m16n8k32 / m64nNk32 A fragments of two k-steps in the hardware's K order (the
 *           activations are used in their natural order).
 *   wmeta : [N/16][K/group][8] u32 = S2(row g) | a(row g) << 8 | S2(row g+8) << 16 | a(row g+8) << 24,
 *           a = 128 + S2·(qmin − z), so that the int8 weight is ((q'·S2 + a) mod 256) ^ 0x80.
 */
#ifndef DGQ_KERNELS_H
#define DGQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Arguments rejected before launch (null pointer, shape or alignment). */
#define DGQ_EINVAL (-1)
/** The split-K workspace is missing or too small for the requested split. */
#define DGQ_EWORKSPACE (-2)

/** Output element type of the GEMM. */
typedef enum DgqOutKind {
  DGQ_OUT_F16 = 0,
  DGQ_OUT_BF16 = 1,
  /** Raw INT32 accumulators X_s8 · W_s8ᵀ (no epilogue); for exact testing. */
  DGQ_OUT_I32 = 2,
} DgqOutKind;

/** The GEMM kernels (the values of DgqGemmPlan.kernel). */
typedef enum DgqGemmKernel {
  /** Memory-bound kernel for few tokens (M <= 64): mma.sync, K split inside and across CTAs. */
  DGQ_GEMM_DECODE = 0,
  /** Tiled mma.sync kernel with a cp.async pipeline (any M). */
  DGQ_GEMM_MMA = 1,
  /** Persistent, warp-specialised Hopper wgmma kernel with TMA loads (any M). */
  DGQ_GEMM_WGMMA = 2,
} DgqGemmKernel;

/** Input element type of activation quantization. */
typedef enum DgqInKind {
  DGQ_IN_F16 = 0,
  DGQ_IN_BF16 = 1,
} DgqInKind;

/** Operands of dgq_w4a8_gemm. Shapes: N % 128 == 0, K % 128 == 0, group % 64 == 0, K % group == 0. */
typedef struct DgqGemmArgs {
  /** int8 activations [M, K] row-major, 16-byte aligned. */
  const int8_t *x;
  /** Prepared packed weights (layout above), 16-byte aligned. */
  const uint8_t *wq;
  /** Prepared (S2, a) words, 4-byte aligned. */
  const uint32_t *wmeta;
  /** Per-output-channel scale s1 [N] as f32. */
  const float *s1;
  /** Activation scales: [M] when sx_per_token != 0, else [1]. Unused for DGQ_OUT_I32. */
  const float *sx;
  int32_t sx_per_token;
  /** Optional f32 bias [N] (NULL for none). */
  const float *bias;
  /** Output [M, N] row-major of out_kind. */
  void *out;
  int32_t out_kind;
  int32_t m;
  int32_t n;
  int32_t k;
  int32_t group_size;
  /** Scratch: int32 split-K partial sums; capacity in elements. It must be 16-byte aligned to be used. */
  int32_t *ws_partials;
  size_t ws_partials_len;
  /** Split-K tile counters (must be zero before first use; kernels leave them zero), length in elements. */
  uint32_t *ws_counters;
  size_t ws_counters_len;
} DgqGemmArgs;

/** How one GEMM launches: made by the host plan (crates/dgq-cuda/src/plan.rs), checked by the
 *  launcher against what its kernel was compiled for. */
typedef struct DgqGemmPlan {
  /** DgqGemmKernel. */
  int32_t kernel;
  /** Token tile: 32, 64 or 128 (mma); 64, 128 or 256 (wgmma); unused by decode. */
  int32_t bm;
  /** Decode: K parts inside a CTA (a power of two the token-tile count was compiled for). */
  int32_t parts;
  /** Decode: CTAs along K per 64-channel row block; wgmma: K splits. > 1 needs the workspace
   *  (split · M · N partials, 16-byte aligned, and the tile counters). */
  int32_t split;
  /** Decode: 64-deep K chunks per part; wgmma: 128-deep stages per split. */
  int32_t per;
  /** wgmma: persistent CTAs (at most the SM count). */
  int32_t grid;
  /** Decode: dynamic shared memory per CTA in bytes (at least the activation buffers). */
  int32_t smem;
  /** Non-zero: launch with programmatic dependent launch (overlaps the previous kernel's tail). */
  int32_t pdl;
  /** wgmma, f16/bf16 output: non-zero allows the TMA-store epilogue (used when out is 16-byte
   *  aligned). */
  int32_t tma_store;
} DgqGemmPlan;

/** Enqueues the W4A8 GEMM Y = (s_x ⊗ s1) · (X_s8 · W_s8ᵀ) (+ bias) as `plan` says. */
int dgq_w4a8_gemm(const DgqGemmArgs *args, const DgqGemmPlan *plan, void *stream);

/** Resident CTAs per SM of the decode kernel with `token_tiles` 8-token tiles (1, 2, 4, 8) and
 *  `parts` K parts per CTA, on the current device (cached after the first query); DGQ_EINVAL for
 *  a pair that is not compiled. */
int dgq_decode_ctas_per_sm(int32_t token_tiles, int32_t parts);

/** Arguments of dgq_quantize_acts. K % 8 == 0, x 16-byte aligned, q 8-byte aligned. */
typedef struct DgqQuantArgs {
  /** f16/bf16 activations [M, K] row-major. */
  const void *x;
  int32_t in_kind;
  /** Optional smoothing factors [K] (x is divided by them first), NULL for none. */
  const float *smooth;
  /** 0: dynamic per-token scales written to `scales` [M]; otherwise the static per-tensor scale (> 0). */
  float static_scale;
  int8_t *q;
  float *scales;
  int32_t m;
  int32_t k;
} DgqQuantArgs;

/** Enqueues INT8 activation quantization (round half to even, codes in [-127, 127]). */
int dgq_quantize_acts(const DgqQuantArgs *args, void *stream);

/** Writes 32 ints to `out` through a dp4a kernel: out[i] = 4·i·i (toolchain smoke test). */
int dgq_ping(int32_t *out, void *stream);

/** Name of a return code (static string). */
const char *dgq_status_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* DGQ_KERNELS_H */
