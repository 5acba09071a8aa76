/* bf16-weight kernels for AVX-512 BF16 (vdpbf16ps: 32 bf16 products summed pairwise into 16
 * fp32 lanes). Activations are rounded to bf16 (RNE) when they enter a GEMM; accumulation,
 * state, LayerNorm, SiLU and the DDPM update stay fp32. Called only after
 * __builtin_cpu_supports("avx512bf16"). */
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")
#endif

#include <immintrin.h>

#include "fused_sampler_internal.h"

#define IMPACT_VL 16
#define IMPACT_MR 6

namespace {
#include "fused_sampler_vec.inc"
#include "fused_sampler_body.inc"

/* out[MR, NV·16] (+)= A[MR, K] · Wp with A bf16 [MR][lda], Wp bf16 [K/2][nw][2]. */
template <int MR, int NV, int EPI>
static void mk_bf16(const uint16_t* __restrict A, int lda, const uint16_t* __restrict Wp, int K, int nw,
                    const float* bias, float* out, int ldo, const float* gate, int ldg) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  const int KP = K / 2;
  for (int kp = 0; kp < KP; ++kp) {
    const uint16_t* wk = Wp + (size_t)kp * nw * 2;
    __m512bh w[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) w[v] = (__m512bh)_mm512_loadu_si512((const void*)(wk + v * 32));
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      int32_t pair;
      __builtin_memcpy(&pair, A + (size_t)m * lda + 2 * kp, 4);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], av, w[v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      epilogue<EPI>((vf)acc[m][v], bias + v * 16, out + (size_t)m * ldo + v * 16,
                    gate ? gate + (size_t)m * ldg + v * 16 : nullptr);
}

typedef void (*mk_bf16_fn)(const uint16_t*, int, const uint16_t*, int, int, const float*, float*, int,
                           const float*, int);

template <int MR, int NV>
static mk_bf16_fn mk_bf16_pick_epi(int epi) {
  return epi == EPI_BIAS ? mk_bf16<MR, NV, EPI_BIAS> : epi == EPI_SILU ? mk_bf16<MR, NV, EPI_SILU>
                                                                       : mk_bf16<MR, NV, EPI_GATED>;
}

template <int MR>
static mk_bf16_fn mk_bf16_pick_nv(int nv, int epi) {
  switch (nv) {
    case 1: return mk_bf16_pick_epi<MR, 1>(epi);
    case 2: return mk_bf16_pick_epi<MR, 2>(epi);
    case 3: return mk_bf16_pick_epi<MR, 3>(epi);
    default: return mk_bf16_pick_epi<MR, 4>(epi);
  }
}

static mk_bf16_fn mk_bf16_pick(int mr, int nv, int epi) {
  switch (mr) {
    case 1: return mk_bf16_pick_nv<1>(nv, epi);
    case 2: return mk_bf16_pick_nv<2>(nv, epi);
    case 3: return mk_bf16_pick_nv<3>(nv, epi);
    case 4: return mk_bf16_pick_nv<4>(nv, epi);
    case 5: return mk_bf16_pick_nv<5>(nv, epi);
    default: return mk_bf16_pick_nv<6>(nv, epi);
  }
}

/* Same contract as gemm_f32; A (fp32) is rounded to bf16 into scratch once per call. */
static void gemm_bf16(const float* A, int M, int lda, const impact_linear_t& L, int n_begin, int n_end,
                      float* out, int ldo, int epi, const float* gate, int ldg, void* scratch) {
  const int K = L.k;
  uint16_t* Ab = static_cast<uint16_t*>(scratch);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; k += 16) {
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(A + (size_t)m * lda + k));
      __builtin_memcpy(Ab + (size_t)m * K + k, &b, 32);
    }
  const uint16_t* W = static_cast<const uint16_t*>(L.w);
  const RowTiles tiles(M, 6);
  for (int n0 = n_begin; n0 < n_end; n0 += IMPACT_PANEL) {
    const int nw = L.n - n0 < IMPACT_PANEL ? L.n - n0 : IMPACT_PANEL;
    const uint16_t* Wp = W + (size_t)n0 * K;
    const int nv = nw / 16;
    for (int t = 0; t < tiles.n; ++t) {
      const int m0 = tiles.begin(t);
      mk_bf16_pick(tiles.size(t), nv, epi)(Ab + (size_t)m0 * K, K, Wp, K, nw, L.b + n0,
                                           out + (size_t)m0 * ldo + n0, ldo,
                                           gate ? gate + (size_t)m0 * ldg + n0 : nullptr, ldg);
    }
  }
}
}  // namespace

namespace impact_native {
void run_avx512bf16(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team) {
  run_block(p, p0, np, work, scratch, gemm_bf16, team);
}
}  // namespace impact_native

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
