"""Native fused sampler (kernels/native, impact_rt.native_sampler) against the golden reference.

Test heads: ``randomize_`` weights (scale 1) everywhere, then the final layer re-randomised with
``scale=0.1`` (ε̂ and v of std ≈ 0.33), with injected noise. Untrained weights give
|x_0| ~ 10⁴–10⁵ whatever the head (nothing predicts the noise, x_0 ∝ x/√ᾱ with ᾱ ≈ 2·10⁻⁹ at
the first step), so the bounds scale with max|ref|. The smaller final layer keeps ε̂ and the
variance value in a sane range; measured, the loop is not chaotic for these heads (float32 vs
float64 stays ~1e-6·max|ref| for final-layer scales 0.01…1).

fp32 rule: |fast − ref| ≤ atol = 6e-6·max|ref| element-wise. Measured: the fp32 reference is
0.7–1.5e-6·max|ref| from a float64 run of the same loop, and the native kernels (other summation
order, FMA) are as far, so the bound is ≈4× the fp32 noise floor. A 1e-3 change of one bias of
one ResBlock moves x_0 by ≈1.8e-5·max|ref|; a test checks that it breaks the bound. (Changes
below ~5e-6·max|ref|, e.g. LayerNorm eps 1e-6 → 1e-5, are within fp32 noise and not seen.)
bf16 rule (DESIGN §4): |fast − ref32| ≤ 2·|ref_bf16 − ref32| + atol, ref_bf16 = the reference
under CPU bf16 autocast, atol = 4·mean|ref_bf16 − ref32| (the autocast error at one element is
one draw of a sign-changing error and can be ~0 by chance; measured need ≤ 2.5·mean over 8
heads); plus mean|fast − ref32| ≤ mean|ref_bf16 − ref32| (measured ≈ 0.5×: activations,
accumulation and outputs stay fp32 in the kernel).

Set IMPACT_RT_TEST_CMAKE=1 to also build the library with CMake (slow) and run its self-test.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from impact_rt import ddpm
from impact_rt import native_sampler as ns
from impact_rt.config import preset
from impact_rt.diffusion_head import DiffusionHead
from impact_rt.model import randomize_
from impact_rt.sampler import sample_head

ROOT = Path(__file__).resolve().parents[1]
OK, WHY = ns.available()
needs_lib = pytest.mark.skipif(not OK, reason=f"native sampler not available: {WHY}")
FP32_ISAS = [i for i in ("generic", "avx2", "avx512") if OK and i in ns.isas()]
# bf16 kernels this CPU runs; None: bf16 weights emulated on the best fp32 kernel
BF16_ISAS = [i for i in ("avx512-bf16", "amx-bf16") if OK and i in ns.isas()] or [None]
STEPS = 100


def make_head(width, depth, cond_dim, seed=0, token_dim=128):
    head = randomize_(DiffusionHead(token_dim, cond_dim, width, depth), seed=seed).eval()
    with torch.no_grad():
        randomize_(head.final_layer, seed=seed + 100, scale=0.1)
    return head


def preset_head():       # the `test` preset's head (w=32, d=1)
    cfg = preset("test")
    return make_head(cfg.head_width, cfg.head_depth, cfg.dim, token_dim=cfg.token_dim)


def small_head():      # the `small` preset's width and depth (w=256, d=3)
    cfg = preset("small")
    return make_head(cfg.head_width, cfg.head_depth, cfg.dim, token_dim=cfg.token_dim)


@pytest.fixture(scope="module")
def tab():
    return ddpm.sampling_schedule(1000, STEPS).tensors()


def inputs(head, rows, seed=1, steps=STEPS):
    g = torch.Generator().manual_seed(seed)
    d = head.cond_embed.in_features
    return (torch.randn(rows, d, generator=g), torch.randn(rows, d, generator=g),
            torch.randn(steps, rows, head.token_dim, generator=g))


def reference(head, tab, hc, hu, noise, guidance, temperature, autocast=False):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return sample_head(head, tab, hc, hu, noise, guidance, temperature).float()


def fp32_bound(ref):
    return torch.full_like(ref, 6e-6 * float(ref.abs().max()))


def assert_fp32_close(out, ref, what):
    err = (out - ref).abs()
    bad = err > fp32_bound(ref)
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements out of tolerance; max|err| {err.max():.3g}, "
                           f"max|ref| {ref.abs().max():.3g}")


# ---------------------------------------------------------------------------------------------
# Without the library

def test_unavailable_library_is_reported_not_substituted(tmp_path):
    """available() says why when the library is missing; constructing a sampler raises."""
    code = ("import sys\nfrom impact_rt import native_sampler as ns, diffusion_head as dh\n"
            "ok, why = ns.available()\nassert ok is False and 'IMPACT_RT_NATIVE_LIB' in why, why\n"
            "try:\n    ns.NativeHeadSampler(dh.DiffusionHead(128, 32, 32, 1))\nexcept OSError as e:\n"
            "    print('raised', e)\nelse:\n    sys.exit('no error')\n")
    env = {**os.environ, "IMPACT_RT_NATIVE_LIB": str(tmp_path / "missing.so")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "raised" in r.stdout


@pytest.mark.parametrize("n", [64, 200, 16])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_pack_linear_layout(n, dtype):
    """Element (k, col) of W = weight.T sits where kernels/native/fused_sampler.h says."""
    k = 6
    weight = torch.randn(n, k)
    flat = ns.pack_linear(weight, dtype)
    wm = weight.t().to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    assert flat.numel() == n * k and flat.dtype == wm.dtype
    for kk in range(k):
        for col in range(n):
            p, c = divmod(col, ns.PANEL)
            nw = min(ns.PANEL, n - p * ns.PANEL)
            if dtype == "fp32":
                at = p * ns.PANEL * k + kk * nw + c
            else:
                at = p * ns.PANEL * k + (kk // 2) * nw * 2 + c * 2 + kk % 2
            assert flat[at] == wm[kk, col]


def test_head_shape_check():
    with pytest.raises(ValueError, match="multiples of 16"):
        ns.check_head(DiffusionHead(128, 32, 40, 1))


# ---------------------------------------------------------------------------------------------
# Parity with the reference (fp32)

@needs_lib
@pytest.mark.parametrize("isa", FP32_ISAS)
@pytest.mark.parametrize("cfg", [True, False])
def test_fp32_parity_test_preset(tab, isa, cfg):
    head = preset_head()
    hc, hu, noise = inputs(head, 13)
    hu = hu if cfg else None
    ref = reference(head, tab, hc, hu, noise, 3.0 if cfg else 1.0, 0.9)
    out = ns.NativeHeadSampler(head, "fp32", isa=isa).sample(hc, hu, noise, 3.0 if cfg else 1.0, 0.9, tab)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert_fp32_close(out, ref, f"test preset, {isa}, cfg={cfg}")


@needs_lib
@pytest.mark.parametrize("isa", FP32_ISAS)
def test_fp32_parity_small_width(tab, isa):
    head = small_head()
    hc, hu, noise = inputs(head, 12, seed=2)
    ref = reference(head, tab, hc, hu, noise, 4.0, 1.0)
    out = ns.NativeHeadSampler(head, "fp32", isa=isa).sample(hc, hu, noise, 4.0, 1.0, tab)
    assert_fp32_close(out, ref, f"small width, {isa}")


@needs_lib
def test_fp32_tolerance_is_calibrated(tab):
    """The bound holds for the fp32 reference against float64 and breaks for a 1e-3 bias change."""
    head = small_head()
    hc, hu, noise = inputs(head, 6, seed=3)
    ref = reference(head, tab, hc, hu, noise, 3.0, 1.0)
    h64 = small_head().double()
    tab64 = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in tab.items()}
    ref64 = reference(h64, tab64, hc.double(), hu.double(), noise.double(), 3.0, 1.0)
    assert ((ref64 - ref).abs() <= fp32_bound(ref)).all()
    assert (ref - sample_head_zero(head, tab, hc, hu, noise)).abs().max() > 0.3 * ref.abs().max()  # the head matters
    with torch.no_grad():
        head.res_blocks[1].mlp[2].bias[7] += 1e-3
    bumped = ns.NativeHeadSampler(head, "fp32").sample(hc, hu, noise, 3.0, 1.0, tab)
    assert ((bumped - ref).abs() > fp32_bound(ref)).any(), "a 1e-3 bias change went unnoticed"


def sample_head_zero(head, tab, hc, hu, noise):
    zero = DiffusionHead(head.token_dim, head.cond_embed.in_features, head.input_proj.out_features,
                         len(head.res_blocks)).eval()   # MAR init: ε̂ = v = 0
    return reference(zero, tab, hc, hu, noise, 3.0, 1.0)


@needs_lib
def test_module_level_sample_matches_class(tab):
    """sample(head_pack, c_emb_cond, c_emb_uncond, t_emb, coefs, ...) is what the class calls."""
    head = preset_head()
    hc, hu, noise = inputs(head, 5)
    s = ns.NativeHeadSampler(head)
    with torch.inference_mode():
        t_emb = head.time_embed(tab["timestep_map"])
        c = head.cond_embed(torch.cat([hc, hu]))
    a = ns.sample(s.pack, c[:5], c[5:], t_emb, tab, noise, 2.5, 0.7)
    b = s.sample(hc, hu, noise, 2.5, 0.7, tab)
    assert torch.equal(a, b)


@needs_lib
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_threads_split_and_blocking_do_not_change_bits(tab, dtype):
    """Rows are independent for the whole loop, and a column split does the same arithmetic per
    element: any threads/split/blocking gives the same bits."""
    head = small_head()
    hc, hu, noise = inputs(head, 11, seed=4, steps=20)
    tab20 = ddpm.sampling_schedule(1000, 20).tensors()
    pack = ns.pack_head(head, dtype)
    with torch.inference_mode():
        t_emb = head.time_embed(tab20["timestep_map"])
        cc, cu = head.cond_embed(hc), head.cond_embed(hu)
    outs = [ns.sample(pack, cc, cu, t_emb, tab20, noise, 3.0, 1.0, threads=t, split=s, block_pairs=b)
            for t, s, b in ((1, "rows", 0), (2, "rows", 0), (2, "rows", 1), (1, "rows", 3), (2, "columns", 0),
                            (2, "columns", 4), (3, "columns", 0), (2, "auto", 0))]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


@needs_lib
def test_temperature_zero_and_single_step(tab):
    head = preset_head()
    hc, hu, noise = inputs(head, 4)
    for steps, temp in ((1, 1.0), (STEPS, 0.0)):
        t = ddpm.sampling_schedule(1000, steps).tensors()
        nz = noise[:steps]
        ref = reference(head, t, hc, hu, nz, 3.0, temp)
        out = ns.NativeHeadSampler(head).sample(hc, hu, nz, 3.0, temp, t)
        assert_fp32_close(out, ref, f"steps={steps} temperature={temp}")


@needs_lib
def test_bad_inputs_raise(tab):
    head = preset_head()
    s = ns.NativeHeadSampler(head)
    hc, hu, noise = inputs(head, 4)
    with pytest.raises(ValueError):
        s.sample(hc, hu[:3], noise, 3.0, 1.0, tab)
    with pytest.raises(ValueError):
        s.sample(hc, hu, noise[:50], 3.0, 1.0, tab)      # noise steps != schedule steps
    with torch.inference_mode():
        cc, t_emb = head.cond_embed(hc), head.time_embed(tab["timestep_map"])
    with pytest.raises(RuntimeError, match="kernel"):      # fp32 weights on the bf16 kernel
        ns.sample(s.pack, cc, None, t_emb, tab, noise, 1.0, 1.0, isa="avx512-bf16")


# ---------------------------------------------------------------------------------------------
# bf16

@needs_lib
@pytest.mark.parametrize("isa", BF16_ISAS)
@pytest.mark.parametrize("make", [preset_head, small_head], ids=["test-preset", "small-width"])
def test_bf16_parity_rule(tab, make, isa):
    head = make()
    hc, hu, noise = inputs(head, 12, seed=5)
    ref = reference(head, tab, hc, hu, noise, 3.0, 0.9)
    ref_bf16 = reference(head, tab, hc, hu, noise, 3.0, 0.9, autocast=True)
    sampler = ns.NativeHeadSampler(head, "bf16", isa=isa)
    out = sampler.sample(hc, hu, noise, 3.0, 0.9, tab)
    ref_err, err = (ref_bf16 - ref).abs(), (out - ref).abs()
    bad = err > 2 * ref_err + 4 * ref_err.mean()
    assert not bad.any(), f"{sampler.kernel}: {int(bad.sum())} elements out of the bf16 rule"
    assert err.mean() <= ref_err.mean(), (err.mean(), ref_err.mean())
    assert err.max() > fp32_bound(ref).max(), "bf16 weights were not used"


@needs_lib
def test_bf16_emulated_on_fp32_kernel(tab):
    """The fallback for CPUs without a bf16 kernel: bf16-rounded weights on an fp32 kernel."""
    head = small_head()
    hc, hu, noise = inputs(head, 6, seed=6)
    ref = reference(head, tab, hc, hu, noise, 3.0, 0.9)
    ref_bf16 = reference(head, tab, hc, hu, noise, 3.0, 0.9, autocast=True)
    pack = ns.HeadPack(head, "bf16", weight_dtype="fp32")
    with torch.inference_mode():
        c = head.cond_embed(torch.cat([hc, hu]))
        out = ns.sample(pack, c[:6], c[6:], head.time_embed(tab["timestep_map"]), tab, noise, 3.0, 0.9,
                        isa=FP32_ISAS[-1])
    ref_err, err = (ref_bf16 - ref).abs(), (out - ref).abs()
    assert not (err > 2 * ref_err + 4 * ref_err.mean()).any()
    assert fp32_bound(ref).max() < err.max() and err.mean() <= ref_err.mean()


# ---------------------------------------------------------------------------------------------
# The CMake build (slow: opt in)

# Toolchains: the default compiler; Clang (the `#pragma clang attribute` paths of the ISA units);
# an aarch64 cross-compiler, its self-test run under qemu-user (the portable kernel alone, against
# the self-test's double-precision loop; no Python loads that library here).
TOOLCHAINS = {
    "default": ([], None, ("cmake",)),
    "clang": (["-DCMAKE_CXX_COMPILER=clang++"], None, ("cmake", "clang++")),
    "aarch64": (["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                 "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++"], ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
                ("cmake", "aarch64-linux-gnu-g++", "qemu-aarch64")),
}


@pytest.mark.skipif(os.environ.get("IMPACT_RT_TEST_CMAKE") != "1", reason="set IMPACT_RT_TEST_CMAKE=1 (slow)")
@pytest.mark.parametrize("toolchain", list(TOOLCHAINS))
def test_cmake_build(tmp_path, toolchain):
    flags, runner, tools = TOOLCHAINS[toolchain]
    missing = [t for t in tools if not shutil.which(t)]
    if toolchain == "default" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        missing.append("a C++ compiler")
    if missing:
        pytest.skip(f"{toolchain} toolchain: {', '.join(missing)} missing (Debian: clang libomp-dev, "
                    "g++-aarch64-linux-gnu qemu-user)")
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *flags], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    r = subprocess.run([*(runner or []), str(build / "impact_native_selftest")], capture_output=True, text=True)
    assert r.returncode == 0 and "all kernels agree" in r.stdout, r.stdout + r.stderr
    assert " generic " in r.stdout            # the portable kernel is checked against the double loop too
    if runner:
        return
    lib = next(build.glob("libimpact_native_sampler.*"))
    code = ("from impact_rt import native_sampler as ns\nok, why = ns.available()\nassert ok, why\n"
            f"assert ns.library_path()[0] == {str(lib)!r}\nprint(why)\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "IMPACT_RT_NATIVE_LIB": str(lib)},
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
