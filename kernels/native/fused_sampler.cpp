/* impact-rt native fused diffusion-head sampler: C ABI, CPU dispatch and OpenMP row split.
 *
 * This unit is compiled for the baseline target; the kernels live in one unit per instruction
 * set (fused_sampler_{generic,avx2,avx512,avx512bf16}.cpp) and are called only when
 * __builtin_cpu_supports says the CPU (and OS) runs them, so the library loads anywhere. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "fused_sampler_internal.h"

using namespace impact_native;

namespace {

typedef void (*run_fn)(const Problem&, int, int, float*, void*, const Team&);

/* Sense-reversing barrier for one team: spins (the phases between barriers are microseconds),
 * yielding the CPU after a while so that an oversubscribed machine still makes progress. It does
 * not depend on the OpenMP wait policy. */
struct SpinBarrier {
  alignas(64) std::atomic<int> count{0};
  alignas(64) std::atomic<int> sense{0};
  int n = 1;
};

struct BarrierSlot {
  SpinBarrier* bar;
  int local_sense;
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void barrier_wait(void* ctx) {
  BarrierSlot& slot = *static_cast<BarrierSlot*>(ctx);
  SpinBarrier& b = *slot.bar;
  slot.local_sense ^= 1;
  if (b.count.fetch_add(1, std::memory_order_acq_rel) == b.n - 1) {
    b.count.store(0, std::memory_order_relaxed);
    b.sense.store(slot.local_sense, std::memory_order_release);
    return;
  }
  for (int spins = 0; b.sense.load(std::memory_order_acquire) != slot.local_sense; ++spins) {
    if (spins < 256) cpu_relax();
    else sched_yield();
  }
}

#if defined(__x86_64__) && defined(__linux__)
/* AMX: CPUID.7.0:EDX bit 22 (AMX-BF16) and 24 (AMX-TILE), and Linux must grant this process the
 * tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 18; kernel >= 5.16). */
bool amx_usable() {
  static int state = -1;  /* benign race: every thread computes the same answer */
  if (state >= 0) return state;
  unsigned a, b, c, d;
  bool ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1);
  if (ok) ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
  state = ok;
  return ok;
}
#endif

bool cpu_has(int isa) {
  switch (isa) {
    case IMPACT_ISA_GENERIC: return true;
#if defined(__x86_64__) || defined(_M_X64)
    case IMPACT_ISA_AVX2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case IMPACT_ISA_AVX512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    case IMPACT_ISA_AVX512_BF16:
      return cpu_has(IMPACT_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
#endif
#if defined(__x86_64__) && defined(__linux__)
    case IMPACT_ISA_AMX_BF16:
      return cpu_has(IMPACT_ISA_AVX512_BF16) && amx_usable();
#endif
    default: return false;
  }
}

run_fn kernel(int isa) {
  switch (isa) {
    case IMPACT_ISA_GENERIC: return run_generic;
#if defined(__x86_64__) || defined(_M_X64)
    case IMPACT_ISA_AVX2: return run_avx2;
    case IMPACT_ISA_AVX512: return run_avx512;
    case IMPACT_ISA_AVX512_BF16: return run_avx512bf16;
#endif
#if defined(__x86_64__) && defined(__linux__)
    case IMPACT_ISA_AMX_BF16: return run_amx;
#endif
    default: return nullptr;
  }
}

int fail(char* err, int errlen, const char* msg) {
  if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s", msg);
  return 1;
}

}  // namespace

extern "C" {

int32_t impact_native_abi_version(void) { return IMPACT_NATIVE_ABI_VERSION; }

int32_t impact_native_isa_dtype(int32_t isa) {
  return isa == IMPACT_ISA_AVX512_BF16 || isa == IMPACT_ISA_AMX_BF16 ? IMPACT_DTYPE_BF16 : IMPACT_DTYPE_FP32;
}

int32_t impact_native_isas(void) {
  int32_t mask = 0;
  for (int isa = 0; isa < IMPACT_ISA_COUNT; ++isa)
    if (kernel(isa) && cpu_has(isa)) mask |= 1 << isa;
  return mask;
}

int32_t impact_native_best_isa(int32_t dtype) {
  const int32_t mask = impact_native_isas();
  for (int isa = IMPACT_ISA_COUNT - 1; isa >= 0; --isa)
    if ((mask >> isa & 1) && impact_native_isa_dtype(isa) == dtype) return isa;
  return -1;
}

int32_t impact_native_max_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int32_t impact_native_sample(const impact_head_t* head, const impact_sample_args_t* args, int32_t isa,
                             int32_t threads, int32_t split, int32_t block_pairs, char* err, int32_t errlen) {
  if (!head || !args) return fail(err, errlen, "null head or args");
  const int C = head->token_dim, W = head->width, D = head->depth;
  if (C <= 0 || W <= 0 || D < 0 || C % 16 || W % 16)
    return fail(err, errlen, "unsupported head shape: token_dim and width must be positive multiples of 16");
  if (head->n_linears != 3 * D + 3 || !head->linears) return fail(err, errlen, "head must have 3*depth+3 linears");
  if (D > 0 && (!head->ln_w || !head->ln_b)) return fail(err, errlen, "missing LayerNorm parameters");
  for (int li = 0; li < head->n_linears; ++li) {
    const impact_linear_t& L = head->linears[li];
    int k = W, n = W;
    if (li == 0) k = C;
    else if (li == 3 * D + 1) n = 2 * W;
    else if (li == 3 * D + 2) n = 2 * C;
    else if ((li - 1) % 3 == 0) n = 3 * W;
    if (L.k != k || L.n != n || !L.w || !L.b) {
      char msg[128];
      snprintf(msg, sizeof msg, "linear %d: expected %dx%d, got %dx%d", li, k, n, L.k, L.n);
      return fail(err, errlen, msg);
    }
  }
  const int R = args->rows, T = args->steps;
  if (R < 0 || T <= 0) return fail(err, errlen, "rows must be >= 0 and steps > 0");
  if (!args->c_emb_cond || !args->t_emb || !args->coef_x || !args->coef_eps || !args->logvar_mid ||
      !args->logvar_half || !args->noise || !args->x0)
    return fail(err, errlen, "null input pointer");
  const bool amx_shape = C % 32 == 0 && W % 32 == 0;
  if (isa == IMPACT_ISA_AUTO) {
    isa = impact_native_best_isa(head->dtype);
    if (isa == IMPACT_ISA_AMX_BF16 && !amx_shape) isa = cpu_has(IMPACT_ISA_AVX512_BF16) ? IMPACT_ISA_AVX512_BF16 : -1;
  }
  if (isa == IMPACT_ISA_AMX_BF16 && !amx_shape)
    return fail(err, errlen, "the AMX kernel needs width and token_dim multiples of 32");
  if (isa < 0 || isa >= IMPACT_ISA_COUNT || !kernel(isa) || !cpu_has(isa))
    return fail(err, errlen, "the requested kernel is not built into this library or not supported by this CPU");
  if (impact_native_isa_dtype(isa) != head->dtype)
    return fail(err, errlen, "the kernel's weight dtype does not match the packed head");
  if (R == 0) return 0;

  const run_fn run = kernel(isa);
  const Problem prob{head, args};
  const int cfg = args->c_emb_uncond != nullptr;
  int nt = threads > 0 ? threads : impact_native_max_threads();
  if (nt < 1) nt = 1;
  /* Rows are independent across the whole loop (a cond row and its uncond row form a pair).
   * Row split: the pairs go in blocks to threads, each block to one thread, no waiting; every
   * thread streams all weights through its caches. Column split: all threads work on each block
   * together, dividing every GEMM's columns (each thread reads its share of the weights only,
   * so they can stay in its L2) with ~13 barriers per step. Auto: columns while a row split
   * would leave fewer than 32 pairs per thread. */
  if (split == IMPACT_SPLIT_AUTO) split = (nt > 1 && R < 32 * nt) ? IMPACT_SPLIT_COLUMNS : IMPACT_SPLIT_ROWS;
  if (split != IMPACT_SPLIT_ROWS && split != IMPACT_SPLIT_COLUMNS) return fail(err, errlen, "unknown split");
  const bool columns = split == IMPACT_SPLIT_COLUMNS && nt > 1;
  if (!columns && nt > R) nt = R;
  /* default blocks: 64 pairs for a team; alone, 32 pairs (fp32: activations stay in L2) or 64 (AMX:
   * more rows per pass over the weights) */
  const int bp = block_pairs > 0 ? block_pairs : (columns || isa == IMPACT_ISA_AMX_BF16 ? 64 : 32);
  int nblocks = (R + bp - 1) / bp;
  if (!columns) {
    nblocks = (nblocks + nt - 1) / nt * nt;
    if (nblocks > R) nblocks = R;
  }
  const int base = R / nblocks, rem = R % nblocks;
  const int maxp = base + (rem ? 1 : 0);
  const size_t work_bytes = work_layout(maxp, cfg, W, C, D, columns).total * sizeof(float);
  const size_t scratch = scratch_bytes(maxp, cfg, W, C);
  int failed = 0;

  if (columns) {
    /* one shared workspace and a scratch per thread, allocated up front: every member must run
     * every block (the barriers count on it) */
    char* mem = nullptr;
    if (posix_memalign(reinterpret_cast<void**>(&mem), 64, work_bytes + (size_t)nt * scratch) != 0)
      return fail(err, errlen, "out of memory for the sampler workspace");
    SpinBarrier bar;
    bar.n = nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
#ifdef _OPENMP
      const int tid = omp_get_thread_num(), team_size = omp_get_num_threads();
#else
      const int tid = 0, team_size = 1;
#endif
#ifdef _OPENMP
#pragma omp single
#endif
      bar.n = team_size;  /* (the implicit barrier of single publishes it) */
      BarrierSlot slot{&bar, 0};
      const Team team{tid, team_size, barrier_wait, &slot};
      for (int b = 0; b < nblocks; ++b) {
        const int p0 = b * base + (b < rem ? b : rem);
        run(prob, p0, base + (b < rem ? 1 : 0), reinterpret_cast<float*>(mem),
            mem + work_bytes + (size_t)tid * scratch, team);
      }
    }
    free(mem);
    return 0;
  }

#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(| : failed)
#endif
  {
    char* mem = nullptr;
    if (posix_memalign(reinterpret_cast<void**>(&mem), 64, work_bytes + scratch) != 0) mem = nullptr;
    if (!mem) failed = 1;
    const Team alone{0, 1, nullptr, nullptr};
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int b = 0; b < nblocks; ++b) {
      if (!mem) continue;
      const int p0 = b * base + (b < rem ? b : rem);
      run(prob, p0, base + (b < rem ? 1 : 0), reinterpret_cast<float*>(mem), mem + work_bytes, alone);
    }
    free(mem);
  }
  if (failed) return fail(err, errlen, "out of memory for the sampler workspace");
  return 0;
}

}  // extern "C"
