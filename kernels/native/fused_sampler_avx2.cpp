/* fp32 kernels for AVX2+FMA: the portable code compiled with 8 floats per vector. Called only
 * after __builtin_cpu_supports("avx2") and ("fma"). */
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#include "fused_sampler_internal.h"

#define IMPACT_VL 8
#define IMPACT_MR 3

namespace {
#include "fused_sampler_vec.inc"
#include "fused_sampler_body.inc"
}  // namespace

namespace impact_native {
void run_avx2(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team) {
  run_block(p, p0, np, work, scratch, gemm_f32, team);
}
}  // namespace impact_native

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
