"""Parity of the fused Triton sampler (kernels/fused_sampler.py) with impact_rt.sampler.sample_head.

Where they run:
* no GPU: under the Triton interpreter (TRITON_INTERPRET=1, set below before Triton is first
  imported), on tiny shapes (w = 32, C = 16 or the `test` preset's C = 128, ≤ 20 rows, T̂ ≤ 5).
  If Triton was already imported by an earlier test module (the interpreter must be chosen
  before that), the interpreter cases are skipped here and ``test_interpreter_cases_in_subprocess``
  runs this file and test_cuda_backend.py in a fresh interpreter-mode process instead.
* GPU: the same tiny cases compiled, plus full-size cases (base head w = 1024, d = 3, T̂ = 100)
  and the column-split (grid barrier) path, which the sequential interpreter cannot run.

Tolerances. A random head under the real cosine schedule amplifies errors by ~1/sqrt(ᾱ) ≈ 2e4
at the first step (x0 ∝ x/sqrt(ᾱ)), so the kernel's arithmetic is checked under a mild schedule
(linear β 1e-3..0.05 over 50 steps, ᾱ_T ≈ 0.27; every term, the last step's noise included, moves
the output by O(0.1–1)) with |fast − ref| ≤ 2e-5 + 2e-5·|ref| in fp32 (interpreter: observed ~1e-6),
and under the cosine schedule with a relative bound max|fast − ref| ≤ 1e-5·max|ref|.
fp16/bf16 weights follow DESIGN §4 in max norm: max|fast − ref32| ≤ 2·max|ref_same_dtype − ref32| + atol
(ref_same_dtype: sample_head with the head, inputs and noise in that dtype; atol 1e-3 tiny, 1e-2 full size).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False


def _interpreting() -> bool:
    from triton.language.random import philox
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(philox, InterpretedFunction)


if not HAVE_TRITON:
    MODE, WHY = None, "triton is not installed (pip install 'impact-rt[test]')"
elif CUDA:
    MODE, WHY = "cuda", ""
elif _interpreting():
    MODE, WHY = "interpret", ""
else:
    MODE, WHY = "subprocess", ("triton was imported before TRITON_INTERPRET=1 could be set; "
                               "these cases run in test_interpreter_cases_in_subprocess")
DEVICE = "cuda" if MODE == "cuda" else "cpu"
needs_kernel = pytest.mark.skipif(MODE not in ("cuda", "interpret"), reason=WHY)
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (full-size shapes / grid barriers)")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(MODE != "subprocess", reason="interpreter cases run in this process")
def test_interpreter_cases_in_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_fused_sampler.py", "tests/test_cuda_backend.py", "tests/test_step_kernels.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


AOT_SCRIPT = """
import torch
from impact_rt.cuda_graphs import FusedConfig
from kernels.fused_sampler import compile_for_arch
for split in (1, 16):
    k = compile_for_arch(90, dtype=torch.float16, config=FusedConfig(block_rows=16, split=split))
    assert len(k.asm["cubin"]) > 0
    assert ("atom.global" in k.asm["ptx"]) == (split > 1)     # grid barriers only when split
k = compile_for_arch(90, dtype=torch.float16, config=FusedConfig(block_rows=16, split=16), adaln_table=True)
assert len(k.asm["cubin"]) > 0
print("ok")
"""


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
def test_kernel_compiles_for_h100_without_a_gpu():
    """The interpreter is permissive; this runs Triton's real compiler (TTIR → PTX → cubin via the
    bundled ptxas) for sm_90 in a subprocess without TRITON_INTERPRET, incl. the grid-barrier path."""
    import importlib.util
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, "-c", AOT_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout[-2000:] + p.stderr[-4000:]


# ---------------------------------------------------------------------------------------------
# Fixtures

def mild_schedule(steps: int, train_steps: int = 50):
    """Linear β 1e-3 .. 2.5/train_steps (ᾱ_T ≈ 0.27), respaced to ``steps``."""
    from impact_rt import ddpm
    return ddpm.Schedule(np.linspace(1e-3, 2.5 / train_steps, train_steps),
                         np.arange(train_steps) * (1000 // train_steps)).respace(steps)


def cosine_schedule(steps: int):
    from impact_rt import ddpm
    return ddpm.sampling_schedule(1000, steps)


def make_head(c=16, w=32, depth=1, cond_dim=24, seed=1, scale=0.5):
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    torch.manual_seed(seed)
    return randomize_(DiffusionHead(c, cond_dim, w, depth), seed=seed, scale=scale).eval().to(DEVICE)


def make_inputs(head, rows, steps, cfg=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    d = head.cond_embed.in_features
    hc = torch.randn(rows, d, generator=g).to(DEVICE)
    hu = torch.randn(rows, d, generator=g).to(DEVICE) if cfg else None
    noise = torch.randn(steps, rows, head.token_dim, generator=g).to(DEVICE)
    return hc, hu, noise


def run_both(head, schedule, rows, cfg=True, guidance=3.0, temperature=0.9, config=None, dtype=torch.float32,
             use_custom_op=False, noise=None, adaln_table=None):
    from impact_rt.sampler import sample_head
    from kernels.fused_sampler import fused_sample, head_tables, pack_head
    tab = schedule.tensors(device=DEVICE)
    steps = schedule.num_steps
    hc, hu, nz = make_inputs(head, rows, steps, cfg)
    nz = nz if noise is None else noise
    with torch.inference_mode():
        ref = sample_head(head, tab, hc, hu, nz, guidance, temperature)
        t_emb, coefs = head_tables(head, tab)
        cc = head.cond_embed(hc)
        cu = head.cond_embed(hu) if cfg else None
        out = fused_sample(pack_head(head, dtype), cc, cu, t_emb, coefs, nz, guidance, temperature,
                           config=config, use_custom_op=use_custom_op, adaln_table=adaln_table)
    return out, ref


def cfg_(br=16, bn=32, bk=32, bc=16, split=1):
    from impact_rt.cuda_graphs import FusedConfig
    return FusedConfig(br, bn, bk, bc, split, 4, 2)


# ---------------------------------------------------------------------------------------------
# Parity with the reference sampler (tiny shapes: interpreter on CPU, compiled on GPU)

@needs_kernel
def test_parity_fp32_cfg():
    head = make_head()
    out, ref = run_both(head, mild_schedule(4), rows=5, config=cfg_())
    assert out.shape == ref.shape == (5, 16) and out.dtype == torch.float32
    assert ref.abs().max() > 0.5          # a non-trivial sample
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


@needs_kernel
def test_parity_two_blocks_two_row_blocks_column_tiles_no_cfg():
    # depth 2; 20 rows → 2 row blocks (the second padded); block_n 16 → 2 column tiles whose
    # LayerNorm partials are combined; block_k 16 → 2 K-tiles per dot.
    head = make_head(depth=2, seed=2)
    out, ref = run_both(head, mild_schedule(4), rows=20, cfg=False, config=cfg_(bn=16, bk=16))
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


@needs_kernel
@pytest.mark.parametrize("cfg_on", [True, False])
def test_parity_precomputed_adaln_table(cfg_on):
    # The adaLN modulation of every step computed before the launch (one GEMM) gives the same
    # sample as computing it inside the loop; 20 rows → 2 row blocks (table layout per block).
    head = make_head(depth=2, seed=4)
    out, ref = run_both(head, mild_schedule(4), rows=20, cfg=cfg_on, config=cfg_(bn=16, bk=16), adaln_table=True)
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)
    inner, _ = run_both(head, mild_schedule(4), rows=20, cfg=cfg_on, config=cfg_(bn=16, bk=16), adaln_table=False)
    torch.testing.assert_close(out, inner, rtol=1e-5, atol=1e-5)


def test_adaln_table_layout_matches_the_head():
    from kernels.fused_sampler import adaln_modulation_table, pack_head
    head = make_head(depth=2, seed=5).cpu()
    w = pack_head(head, torch.float32, "cpu")
    t_emb = torch.randn(3, w.width)
    cc, cu = torch.randn(5, w.width), torch.randn(5, w.width)
    tab = adaln_modulation_table(w.ada_w, w.ada_b, cc, cu, t_emb, row_blocks=2, block_rows=4)
    assert tab.shape == (3, 2, 2, 4, w.ada_n)
    with torch.no_grad():
        blk = head.res_blocks[1].adaLN_modulation
        want = blk(cu[4] + t_emb[2])                     # step 2, uncond half, row 4 = block 1 row 0
    d = w.width
    torch.testing.assert_close(tab[2, 1, 1, 0, 3 * d:6 * d], want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_parity_test_preset_head_cosine_schedule_relative():
    from impact_rt.config import preset
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    cfg = preset("test")
    torch.manual_seed(0)
    head = randomize_(DiffusionHead(cfg.token_dim, cfg.dim, cfg.head_width, cfg.head_depth), seed=0,
                      scale=0.5).eval().to(DEVICE)
    out, ref = run_both(head, cosine_schedule(5), rows=8, config=cfg_(bc=32))
    err = (out - ref).abs().max().item()
    assert err <= 1e-5 * ref.abs().max().item(), (err, ref.abs().max().item())


@needs_kernel
def test_every_term_matters_last_step_noise_and_guidance():
    # The mild schedule makes every input visible in the output: perturbing the noise of the
    # last noisy step, or the guidance, moves x0 far beyond the tolerance.
    head = make_head()
    sch = mild_schedule(4)
    hc, hu, nz = make_inputs(head, 5, 4)
    a, _ = run_both(head, sch, 5, noise=nz, config=cfg_())
    nz2 = nz.clone()
    nz2[-1] += 1.0
    b, ref_b = run_both(head, sch, 5, noise=nz2, config=cfg_())
    c, ref_c = run_both(head, sch, 5, noise=nz, guidance=1.5, config=cfg_())
    assert (a - b).abs().max() > 0.05 and (a - c).abs().max() > 0.05
    torch.testing.assert_close(b, ref_b, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(c, ref_c, rtol=2e-5, atol=2e-5)


@needs_kernel
def test_temperature_zero_ignores_noise_after_x_T():
    head = make_head()
    sch = mild_schedule(4)
    _, _, nz = make_inputs(head, 5, 4)
    nz2 = nz.clone()
    nz2[1:] = torch.randn_like(nz2[1:])
    a, ref = run_both(head, sch, 5, noise=nz, temperature=0.0, config=cfg_())
    b, _ = run_both(head, sch, 5, noise=nz2, temperature=0.0, config=cfg_())
    torch.testing.assert_close(a, ref, rtol=2e-5, atol=2e-5)
    assert torch.equal(a, b)


@needs_kernel
def test_fp16_weights_tolerance_rule():
    from impact_rt.sampler import sample_head
    head = make_head()
    sch = mild_schedule(4)
    out, ref32 = run_both(head, sch, rows=5, config=cfg_(), dtype=torch.float16)
    hc, hu, nz = make_inputs(head, 5, 4)
    with torch.inference_mode():
        ref16 = sample_head(head.half(), sch.tensors(device=DEVICE), hc.half(), hu.half(), nz.half(), 3.0, 0.9).float()
    err, err16 = (out - ref32).abs().max().item(), (ref16 - ref32).abs().max().item()
    assert err <= 2 * err16 + 1e-3, (err, err16)
    assert err > 1e-5          # the fp16 weights are really used


# ---------------------------------------------------------------------------------------------
# In-kernel Philox noise

@needs_kernel
def test_philox_stream_matches_numpy_reference():
    from kernels.fused_sampler import philox_noise
    from kernels.philox import philox_normal
    seeds = torch.tensor([0, 12345, 2 ** 40 + 7], dtype=torch.int64, device=DEVICE)
    z = philox_noise(seeds, rows_per_seed=3, steps=4, token_dim=16, stream=5)
    ref = philox_normal(seeds.cpu().numpy(), 3, 4, 16, 5)
    assert z.shape == (4, 9, 16)
    np.testing.assert_allclose(z.cpu().numpy(), ref, atol=1e-5, rtol=1e-5)
    big = philox_noise(seeds[:1], rows_per_seed=64, steps=8, token_dim=32, stream=0)
    assert abs(big.mean().item()) < 0.03 and abs(big.std().item() - 1) < 0.03


@needs_kernel
def test_philox_mode_equals_injected_and_reference():
    from impact_rt.sampler import sample_head
    from kernels.fused_sampler import fused_sample, head_tables, pack_head, philox_noise
    head = make_head()
    sch = mild_schedule(4)
    tab = sch.tensors(device=DEVICE)
    hc, hu, _ = make_inputs(head, 9, 4)
    seeds = torch.tensor([11, 22, 33], dtype=torch.int64, device=DEVICE)
    with torch.inference_mode():
        w, (t_emb, coefs) = pack_head(head, torch.float32), head_tables(head, tab)
        cc, cu = head.cond_embed(hc), head.cond_embed(hu)
        run = lambda s, stream=5: fused_sample(w, cc, cu, t_emb, coefs, s, 2.0, 1.0, stream=stream,  # noqa: E731
                                               config=cfg_(), use_custom_op=False)
        a = run(seeds)
        nz = philox_noise(seeds, 3, 4, 16, stream=5)
        b = fused_sample(w, cc, cu, t_emb, coefs, nz, 2.0, 1.0, config=cfg_(), use_custom_op=False)
        ref = sample_head(head, tab, hc, hu, nz, 2.0, 1.0)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a, ref, rtol=2e-5, atol=2e-5)
        # A sample's noise depends on its own seed only; the stream (iteration) changes all.
        c = run(torch.tensor([11, 99, 33], dtype=torch.int64, device=DEVICE))
        assert torch.equal(a[:3], c[:3]) and torch.equal(a[6:], c[6:]) and not torch.allclose(a[3:6], c[3:6])
        d = run(seeds, stream=6)
        assert not torch.allclose(a, d)


# ---------------------------------------------------------------------------------------------
# The custom op

@needs_kernel
def test_custom_op_schema_fake_and_eager():
    from kernels.custom_op import fused_sample_op
    from kernels.fused_sampler import head_tables, pack_head
    head = make_head()
    tab = mild_schedule(3).tensors(device=DEVICE)
    hc, hu, nz = make_inputs(head, 5, 3)
    with torch.no_grad():
        w, (t_emb, coefs) = pack_head(head, torch.float32), head_tables(head, tab)
        cc, cu = head.cond_embed(hc), head.cond_embed(hu)
    one = torch.ones(1, device=DEVICE)
    args = (*w.tensors(), cc, cu, t_emb, coefs, nz, None, 2 * one, one, 1, 0, 16, 32, 32, 16, 1, 4, 2)
    torch.library.opcheck(fused_sample_op, args, test_utils=("test_schema", "test_faketensor"))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = torch.ops.impact_rt.fused_sample(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                                  for a in args))
    assert fake.shape == (5, 16) and fake.dtype == torch.float32
    out = torch.ops.impact_rt.fused_sample(*args)
    ref = torch.ops.impact_rt.fused_sample.default(*args)
    assert torch.equal(out, ref)


@needs_kernel
def test_custom_op_is_one_node_under_torch_compile():
    from kernels.fused_sampler import fused_sample, head_tables, pack_head
    head = make_head()
    tab = mild_schedule(3).tensors(device=DEVICE)
    hc, hu, nz = make_inputs(head, 5, 3)
    with torch.no_grad():
        w, (t_emb, coefs) = pack_head(head, torch.float32), head_tables(head, tab)
        cc, cu = head.cond_embed(hc), head.cond_embed(hu)
    g, t = torch.full((1,), 2.0, device=DEVICE), torch.ones(1, device=DEVICE)

    def f(cc, cu, nz):
        return fused_sample(w, cc * 1.0, cu, t_emb, coefs, nz, g, t, config=cfg_()) + 0.0

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(f, backend=backend, fullgraph=True)(cc, cu, nz)
    calls = [n for gm in graphs for n in gm.graph.nodes
             if n.op == "call_function" and "fused_sample" in str(n.target)]
    assert len(graphs) == 1 and len(calls) == 1
    torch.testing.assert_close(out, f(cc, cu, nz), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# GPU only: full-size parity, column split (grid barriers), large row counts

def _base_head():
    from impact_rt.config import preset
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    cfg = preset("base")
    torch.manual_seed(0)
    return randomize_(DiffusionHead(cfg.token_dim, cfg.dim, cfg.head_width, cfg.head_depth), seed=0,
                      scale=0.5).eval().to(DEVICE)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_full_size_parity(dtype):
    from impact_rt.sampler import sample_head
    head = _base_head()
    sch = mild_schedule(50)   # the mild schedule has 50 training steps
    out, ref32 = run_both(head, sch, rows=24, dtype=dtype)
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref32, rtol=1e-4, atol=1e-4)
        out_c, ref_c = run_both(head, cosine_schedule(100), rows=24, dtype=dtype)
        assert (out_c - ref_c).abs().max() <= 1e-4 * ref_c.abs().max()
        return
    hc, hu, nz = make_inputs(head, 24, 50)
    with torch.inference_mode():
        ref_d = sample_head(head.to(dtype), sch.tensors(device=DEVICE), hc.to(dtype), hu.to(dtype),
                            nz.to(dtype), 3.0, 0.9).float()
    err, err_d = (out - ref32).abs().max().item(), (ref_d - ref32).abs().max().item()
    assert err <= 2 * err_d + 1e-2, (err, err_d)


@needs_gpu
@pytest.mark.parametrize("split", [2, 4, 16])
def test_gpu_column_split_equals_single_program(split):
    head = _base_head()
    sch = mild_schedule(20)
    a, ref = run_both(head, sch, rows=20, config=cfg_(bn=64, bk=64, bc=32, split=1))
    b, _ = run_both(head, sch, rows=20, config=cfg_(bn=64, bk=64, bc=32, split=split))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, ref, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_gpu_many_rows_default_config_and_custom_op():
    head = _base_head()
    out, ref = run_both(head, mild_schedule(10), rows=3000, dtype=torch.float32, use_custom_op=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_gpu_philox_matches_numpy_reference():
    from kernels.fused_sampler import philox_noise
    from kernels.philox import philox_normal
    seeds = torch.tensor([3, 2 ** 62 + 1], dtype=torch.int64, device="cuda")
    z = philox_noise(seeds, 97, 100, 128, stream=63)
    np.testing.assert_allclose(z.cpu().numpy(), philox_normal(seeds.cpu().numpy(), 97, 100, 128, 63),
                               atol=1e-4, rtol=1e-4)
