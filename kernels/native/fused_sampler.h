/* impact-rt native fused diffusion-head sampler: the plain C ABI.
 *
 * One call runs the whole T̂-step DDPM loop of one decoding iteration for all rows (cond and
 * uncond together) of MAR's SimpleMLPAdaLN head (see impact_rt/diffusion_head.py and
 * impact_rt/sampler.py, the golden reference). No torch or Python headers: the library is
 * loaded with ctypes by impact_rt/native_sampler.py, which also packs the weights.
 *
 * Weight packing (done by the caller, see native_sampler.pack_linear): a linear layer with
 * math weight W[K, N] (= torch Linear.weight.T) is stored as column panels of 64 columns (the
 * last panel may be narrower: 16, 32 or 48) concatenated in panel order.
 *   fp32: panel p is row-major [K][nw]            (nw = width of the panel)
 *   bf16: panel p is [K/2][nw][2] (k pairs interleaved, as vdpbf16ps wants), bf16 bits
 * Biases are fp32 [N]. The adaLN layers' "scale" bias has 1 added (modulate uses 1 + scale).
 * Requirements: width % 16 == 0, token_dim % 16 == 0.
 */
#ifndef IMPACT_FUSED_SAMPLER_H
#define IMPACT_FUSED_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMPACT_NATIVE_ABI_VERSION 1

#if defined(__GNUC__)
#define IMPACT_API __attribute__((visibility("default")))
#else
#define IMPACT_API
#endif
#define IMPACT_PANEL 64

enum { IMPACT_DTYPE_FP32 = 0, IMPACT_DTYPE_BF16 = 1 };

/* Kernels (instruction sets) this library was built with and this CPU runs. */
enum {
  IMPACT_ISA_AUTO = -1,
  IMPACT_ISA_GENERIC = 0,     /* portable C++ (GCC vector extensions), fp32 weights */
  IMPACT_ISA_AVX2 = 1,        /* same code compiled for AVX2+FMA, fp32 weights */
  IMPACT_ISA_AVX512 = 2,      /* AVX-512F intrinsics, fp32 weights */
  IMPACT_ISA_AVX512_BF16 = 3, /* AVX-512 BF16 vdpbf16ps, bf16 weights */
  IMPACT_ISA_AMX_BF16 = 4,    /* AMX tdpbf16ps (Linux), bf16 weights; width, token_dim % 32 == 0 */
  IMPACT_ISA_COUNT = 5
};

typedef struct {
  int32_t k, n;        /* math shape W[k, n] */
  const void* w;       /* packed, see above; dtype given by the head */
  const float* b;      /* [n] */
} impact_linear_t;

typedef struct {
  int32_t token_dim;   /* C */
  int32_t width;       /* w */
  int32_t depth;       /* d */
  int32_t dtype;       /* IMPACT_DTYPE_* of every linear's packed weights */
  /* 3*depth + 3 linears, in this order: input_proj (C→w); per block: adaLN (w→3w: shift,
   * scale+1, gate), mlp.0 (w→w), mlp.2 (w→w); final adaLN (w→2w: shift, scale+1); final
   * linear (w→2C). */
  const impact_linear_t* linears;
  int32_t n_linears;
  const float* ln_w;   /* [depth, w] ResBlock in_ln weight */
  const float* ln_b;   /* [depth, w] ResBlock in_ln bias */
} impact_head_t;

typedef struct {
  int32_t rows;                 /* R: cond rows; uncond rows (if any) are as many */
  int32_t steps;                /* T̂ */
  const float* c_emb_cond;      /* [R, w]  cond_embed(h_cond) */
  const float* c_emb_uncond;    /* [R, w]  cond_embed(h_uncond), or NULL (no CFG) */
  const float* t_emb;           /* [T̂, w] time_embed(timestep_map), by sampling index i */
  const float* coef_x;          /* [T̂] */
  const float* coef_eps;        /* [T̂] */
  const float* logvar_mid;      /* [T̂] */
  const float* logvar_half;     /* [T̂] */
  const float* noise;           /* [T̂, R, C]: noise[0] = x_T̂, noise[j] added at index T̂−j */
  float guidance;               /* ε = ε_u + guidance·(ε_c − ε_u) */
  float temperature;
  float* x0;                    /* [R, C] output (also the running state) */
} impact_sample_args_t;

/* Bitmask of 1 << IMPACT_ISA_* that are compiled in AND supported by this CPU. */
IMPACT_API int32_t impact_native_isas(void);
/* The ISA that IMPACT_ISA_AUTO picks for a weight dtype, or -1 if none can run it (for AMX the
 * head must also have width and token_dim multiples of 32, else AUTO takes the next best). */
IMPACT_API int32_t impact_native_best_isa(int32_t dtype);
IMPACT_API int32_t impact_native_abi_version(void);
/* Number of OpenMP threads the library would use by default (1 when built without OpenMP). */
IMPACT_API int32_t impact_native_max_threads(void);
/* Weight dtype a given ISA consumes. */
IMPACT_API int32_t impact_native_isa_dtype(int32_t isa);

/* How threads share the rows: see impact_native_sample. */
enum { IMPACT_SPLIT_AUTO = 0, IMPACT_SPLIT_ROWS = 1, IMPACT_SPLIT_COLUMNS = 2 };

/* Runs the sampler. threads <= 0: OpenMP default. split: IMPACT_SPLIT_ROWS gives each thread
 * whole blocks of row pairs (no synchronisation); IMPACT_SPLIT_COLUMNS has all threads work on
 * every block, dividing each GEMM's output columns (each thread touches only its share of the
 * weights, ~13 barriers per step); AUTO takes columns when rows would leave fewer than 32 pairs
 * per thread. block_pairs <= 0: default block size (by rows 32 pairs, 64 on AMX; by columns 64). The result
 * is bitwise the same for every threads/split/block_pairs. Returns 0 on success; otherwise writes
 * a one-line message into err (if errlen > 0). */
IMPACT_API int32_t impact_native_sample(const impact_head_t* head, const impact_sample_args_t* args,
                                        int32_t isa, int32_t threads, int32_t split, int32_t block_pairs,
                                        char* err, int32_t errlen);

#ifdef __cplusplus
}
#endif

#endif
