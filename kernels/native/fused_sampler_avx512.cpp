/* fp32 kernels for AVX-512F: 16 floats per vector, 6×64 register tile. Called only after
 * __builtin_cpu_supports("avx512f"). */
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")
#endif

#include "fused_sampler_internal.h"

#define IMPACT_VL 16
#define IMPACT_MR 6

namespace {
#include "fused_sampler_vec.inc"
#include "fused_sampler_body.inc"
}  // namespace

namespace impact_native {
void run_avx512(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team) {
  run_block(p, p0, np, work, scratch, gemm_f32, team);
}
}  // namespace impact_native

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
