/* Shared between the dispatcher (fused_sampler.cpp) and the per-ISA translation units.
 *
 * Only plain structs, static inline functions and declarations live here: the ISA units are
 * compiled with different target options, so nothing with external linkage may be defined in
 * more than one of them (the linker would keep one arbitrary copy, maybe an AVX-512 one).
 */
#ifndef IMPACT_FUSED_SAMPLER_INTERNAL_H
#define IMPACT_FUSED_SAMPLER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fused_sampler.h"

namespace impact_native {

/* Largest row tile of any micro-kernel (the avx512 ones use 6). */
enum { MR_MAX = 6, ALIGN_FLOATS = 16 };

struct Problem {
  const impact_head_t* head;
  const impact_sample_args_t* args;
};

/* The threads that share one block of rows ("column split"): every GEMM's output columns and
 * every row-wise pass are divided among them, with a barrier between dependent phases. A team of
 * one (the "row split": each thread owns whole blocks) never waits. */
struct Team {
  int id, size;
  void (*barrier)(void* ctx);
  void* ctx;
  void sync() const {
    if (size > 1) barrier(ctx);
  }
};

static inline size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* Workspace of one block of `pairs` row pairs, in floats, shared by its team; every buffer
 * starts 64-byte aligned. With all_ada (teams of more than one) the adaLN outputs of every
 * ResBlock and of the final layer are kept for the whole step, else one buffer is reused. */
struct WorkLayout {
  size_t h, sy, ada, xm, t1, out, total;
};

static inline WorkLayout work_layout(int pairs, int cfg, int width, int token_dim, int depth, int all_ada) {
  const size_t r = (size_t)(cfg ? 2 * pairs : pairs), w = (size_t)width, c = (size_t)token_dim;
  const size_t ada = all_ada ? r * (3 * w * (size_t)depth + 2 * w) : r * 3 * w;
  WorkLayout l;
  size_t at = 0;
  l.h = at;       at += round_up(r * w, ALIGN_FLOATS);
  l.sy = at;      at += round_up(r * w, ALIGN_FLOATS);
  l.ada = at;     at += round_up(ada, ALIGN_FLOATS);
  l.xm = at;      at += round_up(r * w, ALIGN_FLOATS);
  l.t1 = at;      at += round_up(r * w, ALIGN_FLOATS);
  l.out = at;     at += round_up(r * 2 * c, ALIGN_FLOATS);
  l.total = at;
  return l;
}

/* Per-thread scratch in bytes: the bf16 copy of a GEMM's A, rows padded to a multiple of 32. */
static inline size_t scratch_bytes(int pairs, int cfg, int width, int token_dim) {
  const size_t r = (size_t)(cfg ? 2 * pairs : pairs), kmax = (size_t)(width > token_dim ? width : token_dim);
  return round_up(round_up(r, 32) * kmax * 2, 64);
}

/* One entry point per ISA unit: runs pairs [p0, p0 + np) through all T̂ steps as a member of
 * `team` (work shared by the team, scratch private to this thread). */
void run_generic(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team);
#if defined(__x86_64__) || defined(_M_X64)
void run_avx2(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team);
void run_avx512(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team);
void run_avx512bf16(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team);
#endif
#if defined(__x86_64__) && defined(__linux__)
void run_amx(const Problem& p, int p0, int np, float* work, void* scratch, const Team& team);
#endif

}  // namespace impact_native

#endif
