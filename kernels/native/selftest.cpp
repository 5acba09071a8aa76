/* Self-check of the native sampler without Python: a random head (small output layer, so the
 * loop is well-behaved), every kernel this CPU runs (the portable one included, so that a CPU
 * with no kernel of its own, e.g. aarch64, is checked too) against a scalar double-precision
 * loop written from the header's math, and thread/blocking invariance. Exit status 0 when all
 * agree. Built by CMake (ctest). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <random>
#include <vector>

#include "fused_sampler.h"

namespace {

struct Rng {
  std::mt19937 g{1234};
  std::normal_distribution<float> n{0.0f, 1.0f};
  float operator()() { return n(g); }
};

uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* W[k][n] row-major → panel layout (see fused_sampler.h). */
std::vector<float> pack_f32(const std::vector<float>& W, int K, int N) {
  std::vector<float> out;
  for (int n0 = 0; n0 < N; n0 += IMPACT_PANEL) {
    const int nw = N - n0 < IMPACT_PANEL ? N - n0 : IMPACT_PANEL;
    for (int k = 0; k < K; ++k)
      for (int c = 0; c < nw; ++c) out.push_back(W[(size_t)k * N + n0 + c]);
  }
  return out;
}

std::vector<uint16_t> pack_bf16(const std::vector<float>& W, int K, int N) {
  std::vector<uint16_t> out;
  for (int n0 = 0; n0 < N; n0 += IMPACT_PANEL) {
    const int nw = N - n0 < IMPACT_PANEL ? N - n0 : IMPACT_PANEL;
    for (int kp = 0; kp < K / 2; ++kp)
      for (int c = 0; c < nw; ++c)
        for (int e = 0; e < 2; ++e) out.push_back(to_bf16(W[(size_t)(2 * kp + e) * N + n0 + c]));
  }
  return out;
}

struct Head {
  int C, W, D;
  std::vector<std::vector<float>> w, b;  /* math W[k][n], bias */
  std::vector<int> k, n;
  std::vector<float> ln_w, ln_b;
  std::vector<std::vector<float>> pf;
  std::vector<std::vector<uint16_t>> pb;
  std::vector<impact_linear_t> lin_f, lin_b;
  impact_head_t hf, hb;

  Head(int C_, int W_, int D_, Rng& rng) : C(C_), W(W_), D(D_) {
    add(C, W, 1.0f, rng);
    for (int i = 0; i < D; ++i) {
      add(W, 3 * W, 1.0f, rng);
      add(W, W, 1.0f, rng);
      add(W, W, 1.0f, rng);
      for (int c = 0; c < W; ++c) {
        ln_w.push_back(1.0f + 0.1f * rng());
        ln_b.push_back(0.02f * rng());
      }
    }
    add(W, 2 * W, 1.0f, rng);
    add(W, 2 * C, 0.01f, rng);
    for (size_t i = 0; i < w.size(); ++i) {
      pf.push_back(pack_f32(w[i], k[i], n[i]));
      pb.push_back(pack_bf16(w[i], k[i], n[i]));
    }
    for (size_t i = 0; i < w.size(); ++i) {
      lin_f.push_back({k[i], n[i], pf[i].data(), b[i].data()});
      lin_b.push_back({k[i], n[i], pb[i].data(), b[i].data()});
    }
    hf = {C, W, D, IMPACT_DTYPE_FP32, lin_f.data(), (int32_t)lin_f.size(), ln_w.data(), ln_b.data()};
    hb = hf;
    hb.dtype = IMPACT_DTYPE_BF16;
    hb.linears = lin_b.data();
  }

  void add(int K, int N, float scale, Rng& rng) {
    std::vector<float> m((size_t)K * N), bb(N);
    const float s = sqrtf(scale / K);
    for (auto& v : m) v = s * rng();
    for (auto& v : bb) v = 0.02f * sqrtf(scale) * rng();
    w.push_back(m);
    b.push_back(bb);
    k.push_back(K);
    n.push_back(N);
  }
};

const float kGuidance = 3.0f, kTemperature = 0.9f;

double silu(double v) { return v / (1.0 + exp(-v)); }

/* y[n] = b[n] + sum_k x[k] W[k][n], in double */
void linear(const Head& h, int li, const double* x, double* y) {
  const int K = h.k[li], N = h.n[li];
  for (int n = 0; n < N; ++n) y[n] = h.b[li][n];
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) y[n] += x[k] * (double)h.w[li][(size_t)k * N + n];
}

void layer_norm(const double* x, int W, const float* g, const float* b, double* y) {
  double mu = 0, var = 0;
  for (int c = 0; c < W; ++c) mu += x[c];
  mu /= W;
  for (int c = 0; c < W; ++c) var += (x[c] - mu) * (x[c] - mu);
  const double r = 1.0 / sqrt(var / W + 1e-6);
  for (int c = 0; c < W; ++c) y[c] = (x[c] - mu) * r * (g ? g[c] : 1.0) + (b ? b[c] : 0.0);
}

/* The head's output (eps | v) [2C] for one row, from the header's math, scalar and in double:
 * the reference every kernel, the portable one included, is checked against. */
std::vector<double> head_step(const Head& h, const std::vector<double>& x, const float* c_emb, const float* t_emb) {
  const int W = h.W, C = h.C;
  std::vector<double> s(W), hid(W), mod(3 * W), ln(W), u(W), m(W), m2(W), out(2 * C);
  for (int c = 0; c < W; ++c) s[c] = silu((double)c_emb[c] + t_emb[c]);
  linear(h, 0, x.data(), hid.data());
  for (int d = 0; d < h.D; ++d) {
    linear(h, 1 + 3 * d, s.data(), mod.data());                   /* shift | scale (+1 folded) | gate */
    layer_norm(hid.data(), W, &h.ln_w[(size_t)d * W], &h.ln_b[(size_t)d * W], ln.data());
    for (int c = 0; c < W; ++c) u[c] = ln[c] * mod[W + c] + mod[c];
    linear(h, 2 + 3 * d, u.data(), m.data());
    for (int c = 0; c < W; ++c) m[c] = silu(m[c]);
    linear(h, 3 + 3 * d, m.data(), m2.data());
    for (int c = 0; c < W; ++c) hid[c] += mod[2 * W + c] * m2[c];
  }
  linear(h, 1 + 3 * h.D, s.data(), mod.data());                   /* final: shift | scale (+1 folded) */
  layer_norm(hid.data(), W, nullptr, nullptr, ln.data());
  for (int c = 0; c < W; ++c) u[c] = ln[c] * mod[W + c] + mod[c];
  linear(h, 2 + 3 * h.D, u.data(), out.data());
  return out;
}

struct Case {
  int R, T;
  std::vector<float> cc, cu, te, cx, ce, lm, lh, noise;
  Case(int R_, int T_, int W, int C, Rng& rng) : R(R_), T(T_) {
    auto fill = [&](std::vector<float>& v, size_t n, float s) { v.resize(n); for (auto& x : v) x = s * rng(); };
    fill(cc, (size_t)R * W, 1.0f);
    fill(cu, (size_t)R * W, 1.0f);
    fill(te, (size_t)T * W, 1.0f);
    fill(noise, (size_t)T * R * C, 1.0f);
    /* cosine schedule respaced to T steps, folded as in impact_rt/ddpm.py */
    std::vector<double> acp;
    for (int i = 0; i < T; ++i) {
      const double s = (T == 1 ? 0.0 : (double)i * 999.0 / (T - 1)) + 1.0;
      const double a = cos((s / 1000.0 + 0.008) / 1.008 * M_PI / 2), a0 = cos(0.008 / 1.008 * M_PI / 2);
      acp.push_back(a * a / (a0 * a0));
    }
    std::vector<double> beta(T), pv(T);
    for (int i = 0; i < T; ++i) {
      const double prev = i ? acp[i - 1] : 1.0;
      beta[i] = 1.0 - acp[i] / prev;
      pv[i] = beta[i] * (1.0 - prev) / (1.0 - acp[i]);
    }
    for (int i = 0; i < T; ++i) {
      const double prev = i ? acp[i - 1] : 1.0;
      const double c1 = beta[i] * sqrt(prev) / (1.0 - acp[i]);
      const double c2 = (1.0 - prev) * sqrt(1.0 - beta[i]) / (1.0 - acp[i]);
      /* clipped posterior log-variance: the first value is the second (ddpm.Schedule) */
      const double plv = T == 1 ? log(beta[0]) : log(pv[i ? i : 1]);
      cx.push_back((float)(c1 * sqrt(1.0 / acp[i]) + c2));
      ce.push_back((float)(c1 * sqrt(1.0 / acp[i] - 1.0)));
      lm.push_back((float)(0.5 * (log(beta[i]) + plv)));
      lh.push_back((float)(0.5 * (log(beta[i]) - plv)));
    }
  }
  /* The whole loop in double (impact_rt/sampler.py's sample_head and ddpm.p_sample_step). */
  std::vector<float> reference(const Head& h, bool cfg) const {
    const int C = h.C, W = h.W;
    std::vector<float> x0((size_t)R * C);
    for (int r = 0; r < R; ++r) {
      std::vector<double> x(noise.begin() + (size_t)r * C, noise.begin() + (size_t)(r + 1) * C);
      for (int j = 0, i = T - 1; i >= 0; ++j, --i) {
        std::vector<double> o = head_step(h, x, &cc[(size_t)r * W], &te[(size_t)i * W]);
        if (cfg) {
          const std::vector<double> ou = head_step(h, x, &cu[(size_t)r * W], &te[(size_t)i * W]);
          for (int c = 0; c < C; ++c) o[c] = ou[c] + kGuidance * (o[c] - ou[c]);
        }
        for (int c = 0; c < C; ++c) {
          double v = cx[i] * x[c] - ce[i] * o[c];
          if (i > 0) v += exp(0.5 * (lm[i] + lh[i] * o[C + c])) * noise[((size_t)(j + 1) * R + r) * C + c] * kTemperature;
          x[c] = v;
        }
      }
      for (int c = 0; c < C; ++c) x0[(size_t)r * C + c] = (float)x[c];
    }
    return x0;
  }
  std::vector<float> run(const impact_head_t& h, int isa, int threads, int split, int bp, bool cfg, int C) const {
    std::vector<float> x0((size_t)R * C);
    impact_sample_args_t a = {R, T, cc.data(), cfg ? cu.data() : nullptr, te.data(), cx.data(), ce.data(),
                              lm.data(), lh.data(), noise.data(), kGuidance, kTemperature, x0.data()};
    char err[256] = {0};
    if (impact_native_sample(&h, &a, isa, threads, split, bp, err, sizeof err) != 0) {
      fprintf(stderr, "sample failed: %s\n", err);
      exit(2);
    }
    return x0;
  }
};

/* NaN anywhere gives NaN (fmax would drop it, and a kernel writing NaN would pass). Plain
 * comparisons, not fmax: GCC 12's aarch64 vectoriser crashes on this loop as an fmax reduction. */
double rel_max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = fabs((double)a[i] - b[i]), r = fabs((double)b[i]);
    if (isnan(e) || isnan(r)) return NAN;
    if (e > d) d = e;
    if (r > m) m = r;
  }
  return d / (m > 0 ? m : 1);
}

}  // namespace

int main() {
  static const char* names[] = {"generic", "avx2", "avx512", "avx512-bf16", "amx-bf16"};
  const int isas = impact_native_isas();
  printf("abi %d, kernels:", impact_native_abi_version());
  for (int i = 0; i < IMPACT_ISA_COUNT; ++i)
    if (isas >> i & 1) printf(" %s", names[i]);
  printf(", threads %d\n", impact_native_max_threads());
  Rng rng;
  int failures = 0;
  const int shapes[][3] = {{128, 32, 1}, {128, 256, 3}, {64, 80, 2}};
  for (const auto& s : shapes) {
    Head h(s[0], s[1], s[2], rng);
    Case c(13, 50, s[1], s[0], rng);
    for (int cfg = 0; cfg < 2; ++cfg) {
      const std::vector<float> ref = c.reference(h, cfg);
      for (int isa = 0; isa < IMPACT_ISA_COUNT; ++isa) {
        if (!(isas >> isa & 1)) continue;
        if (isa == IMPACT_ISA_AMX_BF16 && (s[0] % 32 || s[1] % 32)) continue;  /* AMX needs multiples of 32 */
        const bool bf = impact_native_isa_dtype(isa) == IMPACT_DTYPE_BF16;
        const std::vector<float> x = c.run(bf ? h.hb : h.hf, isa, 2, IMPACT_SPLIT_ROWS, 0, cfg, s[0]);
        const double d = rel_max_diff(x, ref), tol = bf ? 2e-2 : 1e-5;   /* measured: fp32 3e-7 (AVX2, generic) */
        printf("C=%d w=%d d=%d cfg=%d %-12s max|diff|/max|ref| = %.2e (tol %.0e) %s\n", s[0], s[1], s[2], cfg,
               names[isa], d, tol, d <= tol ? "ok" : "FAIL");
        failures += !(d <= tol);   /* NaN fails */
        /* rows are independent: the result must not depend on threads or blocking */
        const int splits[][3] = {{1, IMPACT_SPLIT_ROWS, 3}, {2, IMPACT_SPLIT_COLUMNS, 0}, {2, IMPACT_SPLIT_COLUMNS, 5},
                                 {3, IMPACT_SPLIT_COLUMNS, 4}};
        for (const auto& sp : splits) {
          const std::vector<float> y = c.run(bf ? h.hb : h.hf, isa, sp[0], sp[1], sp[2], cfg, s[0]);
          if (memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0) {
            printf("  %s: result depends on threads/split/blocking (%d, %d, %d): FAIL\n", names[isa], sp[0], sp[1], sp[2]);
            ++failures;
          }
        }
      }
    }
  }
  printf(failures ? "FAILED (%d)\n" : "all kernels agree\n", failures);
  return failures ? 1 : 0;
}
