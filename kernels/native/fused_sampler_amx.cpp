/* bf16-weight kernels on AMX (tdpbf16ps: a 16×32 bf16 tile times a 32×16 bf16 tile into a
 * 16×16 fp32 tile). Same weight layout as the AVX-512 BF16 kernel: a B tile is 16 k-pair rows of
 * one 16-column slice of a panel, loaded with the panel's row stride. Activations are rounded to
 * bf16 (RNE) when they enter a GEMM, rows padded with zeros to a multiple of 32; accumulation,
 * state, LayerNorm, SiLU and the DDPM update stay fp32. Needs K (token_dim, width) and every N
 * to be multiples of 32. Called only after the CPU reports AMX-BF16 and Linux granted the tile
 * state (arch_prctl ARCH_REQ_XCOMP_PERM). */
#if defined(__x86_64__) && defined(__linux__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,amx-tile,amx-bf16")
#endif

#include <immintrin.h>

#include "fused_sampler_internal.h"

#define IMPACT_VL 16
#define IMPACT_MR 6

namespace {
#include "fused_sampler_vec.inc"
#include "fused_sampler_body.inc"

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

/* tmm0-3: C (2 row tiles × 2 column tiles), tmm4-5: A, tmm6-7: B; all 16 rows × 64 bytes. */
static void amx_configure() {
  TileConfig cfg;
  __builtin_memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  __asm__ volatile("" ::: "memory");
  _tile_loadconfig(&cfg);
}

template <int EPI>
static inline void epilogue_rows(const float* tmp, int rows, const float* bias, float* out, int ldo,
                                 const float* gate, int ldg) {
  for (int r = 0; r < rows; ++r)
    for (int v = 0; v < 2; ++v)
      epilogue<EPI>(vld(tmp + r * 32 + v * 16), bias + v * 16, out + (size_t)r * ldo + v * 16,
                    gate ? gate + (size_t)r * ldg + v * 16 : nullptr);
}

/* Same contract as gemm_f32 (n_end rounded up to 32 columns). A is rounded to bf16 into scratch
 * in tile order (tile (mt, kt): rows 16mt.., k 32kt.., 16 rows of 64 bytes, contiguous; rows
 * padded with zeros to a multiple of 32), which the hardware streams better than row-major.
 * Loop order: 32 rows (A: K/32 tile pairs, L1-resident) outer, 32 columns inner. */
static void gemm_amx(const float* A, int M, int lda, const impact_linear_t& L, int n_begin, int n_end, float* out,
                     int ldo, int epi, const float* gate, int ldg, void* scratch) {
  const int K = L.k, KT = K / 32, Mp = (M + 31) & ~31;
  uint16_t* Ab = static_cast<uint16_t*>(scratch);
  for (int m = 0; m < M; ++m) {
    const float* a = A + (size_t)m * lda;
    uint16_t* dst = Ab + (size_t)(m >> 4) * KT * 512 + (size_t)(m & 15) * 32;
    for (int kt = 0; kt < KT; ++kt) {
      const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + 32 * kt + 16), _mm512_loadu_ps(a + 32 * kt));
      __builtin_memcpy(dst + (size_t)kt * 512, &b, 64);
    }
  }
  for (int m = M; m < Mp; ++m) {
    uint16_t* dst = Ab + (size_t)(m >> 4) * KT * 512 + (size_t)(m & 15) * 32;
    for (int kt = 0; kt < KT; ++kt) __builtin_memset(dst + (size_t)kt * 512, 0, 64);
  }
  __asm__ volatile("" ::: "memory");  /* the tile loads below read Ab */

  const uint16_t* W = static_cast<const uint16_t*>(L.w);
  alignas(64) float tmp[32 * 32];
  for (int m0 = 0; m0 < Mp; m0 += 32) {
    const uint16_t* a0 = Ab + (size_t)(m0 >> 4) * KT * 512;
    const uint16_t* a1 = a0 + (size_t)KT * 512;
    const int rows = M - m0 < 32 ? M - m0 : 32;
    for (int n0 = n_begin; n0 < n_end; n0 += 32) {
      const int p0 = n0 / IMPACT_PANEL * IMPACT_PANEL;
      const int nw = L.n - p0 < IMPACT_PANEL ? L.n - p0 : IMPACT_PANEL;
      const uint16_t* B = W + (size_t)p0 * K + (size_t)(n0 - p0) * 2;
      const long b_stride = (long)nw * 4;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kt = 0; kt < KT; ++kt) {
        const uint16_t* bk = B + (size_t)kt * 16 * nw * 2;
        _tile_loadd(4, a0 + kt * 512, 64);
        _tile_loadd(5, a1 + kt * 512, 64);
        _tile_loadd(6, bk, b_stride);
        _tile_loadd(7, bk + 32, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, tmp, 128);
      _tile_stored(1, tmp + 16, 128);
      _tile_stored(2, tmp + 16 * 32, 128);
      _tile_stored(3, tmp + 16 * 32 + 16, 128);
      float* o = out + (size_t)m0 * ldo + n0;
      const float* g = gate ? gate + (size_t)m0 * ldg + n0 : nullptr;
      if (epi == EPI_BIAS) epilogue_rows<EPI_BIAS>(tmp, rows, L.b + n0, o, ldo, g, ldg);
      else if (epi == EPI_SILU) epilogue_rows<EPI_SILU>(tmp, rows, L.b + n0, o, ldo, g, ldg);
      else epilogue_rows<EPI_GATED>(tmp, rows, L.b + n0, o, ldo, g, ldg);
    }
  }
}
}  // namespace

namespace impact_native {
void run_amx(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team) {
  amx_configure();
  run_block(p, p0, np, work, scratch, gemm_amx, team);
  _tile_release();
}
}  // namespace impact_native

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
