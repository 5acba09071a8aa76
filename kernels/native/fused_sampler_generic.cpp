/* Portable fp32 kernels: GCC/Clang vector extensions, 4 floats per vector, baseline target. */
#include "fused_sampler_internal.h"

#define IMPACT_VL 4
#define IMPACT_MR 3

namespace {
#include "fused_sampler_vec.inc"
#include "fused_sampler_body.inc"
}  // namespace

namespace impact_native {
void run_generic(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team) {
  run_block(p, p0, np, work, scratch, gemm_f32, team);
}
}  // namespace impact_native
