"""The per-step Triton launches of the head sampler (kernels/step_kernels.py).

Where they run:
* no GPU: under the Triton interpreter (TRITON_INTERPRET=1, set below before Triton is first
  imported) on tiny shapes (w 32/64, d 1/2, C 16/32, R 1–17, T̂ ≤ 5) with tiles small enough that
  there are 2+ column tiles, 2+ K tiles and 2+ LayerNorm tiles (and, in two cases, 2 row blocks).
  If Triton was already imported by an earlier test module, these cases are skipped here and
  tests/test_fused_sampler.py's ``test_interpreter_cases_in_subprocess`` runs this file in a
  fresh interpreter-mode process.
  Plus an AOT compile of every kernel for sm_90 (Triton's real compiler, no GPU).
* GPU: the same tiny cases compiled, full-size parity (w 1024, d 3, C 128, T̂ 100, R 4 + CFG) and
  CUDA-graph capture + replay.

References: the GEMM path's own step and loop (``cuda_backend.make_gemm_step`` with the adaLN table,
``gemm_sampling_loop``: the semantics to match, as ``CudaBackend.sample_gemm`` runs them), and
``impact_rt.sampler.sample_head``.
Tolerances as tests/test_fused_sampler.py: fp32 under a mild schedule (linear β, ᾱ_T ≈ 0.27, where
every input moves the output) |fast − ref| ≤ 2e-5 + 2e-5·|ref|; fp16 weights (DESIGN §4, max norm)
max|fast − ref32| ≤ 2·max|ref16 − ref32| + atol (atol 1e-3 tiny, 1e-2 full size).
"""
import copy
import os
import subprocess
import sys

import pytest
import torch

# Sets TRITON_INTERPRET=1 before Triton's first import when there is no GPU; where Triton was
# imported first, that module's test_interpreter_cases_in_subprocess runs this file too.
from test_fused_sampler import CUDA, DEVICE, HAVE_TRITON, MODE, ROOT, WHY, mild_schedule  # noqa: E402

needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
needs_kernel = pytest.mark.skipif(MODE not in ("cuda", "interpret"), reason=WHY)
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (full-size shapes, CUDA graphs)")


AOT_SCRIPT = """
import torch
from kernels.step_kernels import StepConfig, compile_step_kernels_for_arch
for config in (StepConfig(), StepConfig(ln_partials=True), StepConfig(pdl=True), StepConfig(pdl=True, ln_partials=True),
               StepConfig(pdl=True, pdl_prefetch=False), StepConfig(ln_partials=True, split_k=4)):
    ks = compile_step_kernels_for_arch(90, torch.float16, config=config)
    assert sorted(ks) == ["block_in", "block_out", "final", "final_last", "input_proj"], sorted(ks)
    for name, k in ks.items():
        ptx = k.asm["ptx"]
        assert len(k.asm["cubin"]) > 0, name
        # no grid barriers (kernel boundaries are the barriers); split-K: one arrival atomic per split launch
        atoms = ptx.count("atom.")
        assert atoms == (1 if config.split_k > 1 and name != "input_proj" else 0), (name, atoms, config)
        # programmatic dependent launch: one wait and one trigger in each kernel, and only with pdl
        for op in ("griddepcontrol.wait", "griddepcontrol.launch_dependents"):
            assert ptx.count(op) == (1 if config.pdl else 0), (name, op, config)
        assert bool(getattr(k.metadata, "launch_pdl", False)) == config.pdl, (name, config)
print("ok")
"""


@needs_triton
def test_step_kernels_compile_for_h100_without_a_gpu():
    """Triton's real compiler (TTIR → PTX → cubin with the bundled ptxas) for sm_90, default config,
    with LayerNorm partials, with programmatic dependent launch (griddepcontrol in every kernel
    only then) and with split-K (one atomic in each block kernel only then), fp16, in a subprocess without TRITON_INTERPRET: the interpreter accepts things the compiler does not."""
    import importlib.util
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, "-c", AOT_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0 and "ptxas" in p.stderr and ("not found" in p.stderr or "No such file" in p.stderr):
        pytest.skip("ptxas is not available to Triton here")
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout[-2000:] + p.stderr[-4000:]


# ---------------------------------------------------------------------------------------------
# Fixtures

def make_head(c=16, w=32, depth=1, cond_dim=24, seed=1, scale=0.5):
    """A tiny head with every parameter random (the default init zeroes adaLN and the output)."""
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    torch.manual_seed(seed)
    return randomize_(DiffusionHead(c, cond_dim, w, depth), seed=seed, scale=scale).eval().to(DEVICE)


class Case:
    """Inputs of one sampling call: condition rows, their embedding, the tables and the noise."""

    def __init__(self, head, rows, steps, cfg=True, seed=3, schedule=None):
        g = torch.Generator().manual_seed(seed)
        d = head.cond_embed.in_features
        self.head, self.rows, self.cfg = head, rows, cfg
        self.hc = torch.randn(rows, d, generator=g).to(DEVICE)
        self.hu = torch.randn(rows, d, generator=g).to(DEVICE) if cfg else None
        self.noise = torch.randn(steps, rows, head.token_dim, generator=g).to(DEVICE)
        self.tab = (schedule or mild_schedule(steps)).tensors(device=DEVICE)
        from kernels.fused_sampler import head_tables
        with torch.inference_mode():
            self.t_emb, self.coefs = head_tables(head, self.tab)
            self.c_emb = head.cond_embed(torch.cat([self.hc, self.hu]) if cfg else self.hc)

    def mods(self, dtype):
        from kernels.step_kernels import modulation_table
        return modulation_table(self.head, self.c_emb, self.t_emb, dtype)

    def fast(self, dtype=torch.float32, guidance=3.0, temperature=0.9, noise=None, **kw):
        from kernels.fused_sampler import pack_head
        from kernels.step_kernels import sample_steps
        with torch.inference_mode():
            return sample_steps(pack_head(self.head, dtype), self.mods(dtype), self.coefs,
                                self.noise if noise is None else noise, guidance, temperature, cfg=self.cfg, **kw)

    def gemm_path(self, dtype=torch.float32, guidance=3.0, temperature=0.9, noise=None):
        """The GEMM path's own step and loop (``make_gemm_step``, ``gemm_sampling_loop``, as
        ``CudaBackend.sample_gemm`` runs them): adaLN table in ``dtype``, the head converted to
        ``dtype``, state fp32."""
        from impact_rt.cuda_backend import gemm_sampling_loop, make_gemm_step
        head = copy.deepcopy(self.head).to(dtype)
        step = make_gemm_step(head, dtype, head.token_dim)
        noise = self.noise if noise is None else noise
        g = torch.full((1,), guidance, device=DEVICE)
        t = torch.full((1,), temperature, device=DEVICE)
        with torch.inference_mode():
            return gemm_sampling_loop(step, self.c_emb, self.t_emb, self.coefs, noise, g, t, self.mods(dtype))

    def sample_head(self, guidance=3.0, temperature=0.9):
        from impact_rt.sampler import sample_head
        with torch.inference_mode():
            return sample_head(self.head, self.tab, self.hc, self.hu, self.noise, guidance, temperature)


def cfg_(bn=16, bk=16, bc=16, bl=16, br=None):
    from kernels.step_kernels import StepConfig
    return StepConfig(block_rows=br, block_n=bn, block_k=bk, block_c=bc, block_ln=bl)


def close32(out, ref):
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Parity (tiny shapes: interpreter on CPU, compiled on GPU)

@needs_kernel
def test_parity_fp32_cfg_with_the_gemm_path_and_sample_head():
    # w 64 in 32-column tiles, K tiles of 32, LayerNorm statistics over 2 tiles of 32; depth 2.
    head = make_head(w=64, depth=2, seed=2)
    case = Case(head, rows=3, steps=4)
    out = case.fast(config=cfg_(bn=32, bk=32, bl=32))
    ref = case.gemm_path()
    assert out.shape == (3, 16) and out.dtype == torch.float32
    assert ref.abs().max() > 0.5          # a non-trivial sample
    close32(out, ref)
    close32(out, case.sample_head())


@needs_kernel
@pytest.mark.parametrize("rows,cfg,c,depth,steps,br", [
    (2, False, 16, 1, 5, None),    # no CFG
    (1, True, 16, 2, 3, None),     # batch-1 shape: 1 cond + 1 uncond row
    (2, True, 32, 1, 3, None),     # 2 tiles of token channels in the final launch
    (9, True, 16, 1, 3, 16),       # 18 rows: 2 row blocks in every launch (final: 8 cond + 8 uncond rows)
    (17, False, 16, 1, 2, 16),     # 2 row blocks in every launch
])
def test_parity_fp32_shapes(rows, cfg, c, depth, steps, br):
    head = make_head(c=c, w=32, depth=depth, seed=rows)
    case = Case(head, rows=rows, steps=steps, cfg=cfg)
    out = case.fast(config=cfg_(br=br))          # w 32: 2 column tiles, 2 K tiles, 2 LN tiles
    ref = case.gemm_path()
    assert ref.abs().max() > 0.5
    close32(out, ref)


@needs_kernel
@pytest.mark.parametrize("rows,cfg,w,bn,br", [
    (3, True, 64, 16, None),       # 4 column tiles: 4 partials a row
    (9, True, 32, 16, 16),         # 2 row blocks (final launch: 8 cond + 8 uncond rows)
    (2, False, 64, 32, None),      # no CFG, 2 partials a row
])
def test_layernorm_partials_match_the_full_row_statistics(rows, cfg, w, bn, br):
    # ln_partials: the launches producing h write per-tile mean and M2, the LayerNorm launches
    # combine them; the same sample as the pass over full rows, the GEMM path and sample_head.
    import dataclasses
    head = make_head(w=w, depth=2, seed=10 + rows)
    case = Case(head, rows=rows, steps=3, cfg=cfg)
    config = cfg_(bn=bn, br=br)
    out = case.fast(config=dataclasses.replace(config, ln_partials=True))
    ref = case.gemm_path()
    assert ref.abs().max() > 0.5
    close32(out, ref)
    close32(out, case.fast(config=config))
    if cfg:
        close32(out, case.sample_head())


@needs_kernel
@pytest.mark.parametrize("rows,cfg,w,depth,br,split_k,partials", [
    (3, True, 64, 2, None, 2, True),     # 2 K slices of 2 tiles each, LayerNorm partials
    (3, True, 64, 1, None, 4, False),    # 4 slices of one tile, full-row LayerNorm statistics
    (9, True, 32, 1, 16, 2, True),       # 2 row blocks: a counter per (row block, column tile)
    (2, False, 64, 1, None, 2, False),   # no CFG
])
def test_split_k_matches_the_unsplit_launches(rows, cfg, w, depth, br, split_k, partials):
    """StepConfig.split_k: the block and final launches' K over split_k programs, the last to
    arrive adds the slices in order. Same sample as split_k 1 and the GEMM path (fp32 rounding), every counter
    back at zero after the call (the next launch and a graph replay start from zero), and the same
    result twice (the reduction order does not depend on the arrival order)."""
    import dataclasses
    from kernels.step_kernels import step_scratch
    head = make_head(w=w, depth=depth, seed=20 + rows)
    case = Case(head, rows=rows, steps=3, cfg=cfg)
    base = dataclasses.replace(cfg_(br=br), ln_partials=partials)
    config = dataclasses.replace(base, split_k=split_k)
    scratch = step_scratch(2 * rows if cfg else rows, w, torch.float32, DEVICE, config)
    out = case.fast(config=config, scratch=scratch)
    assert int(scratch.count.abs().sum()) == 0
    close32(out, case.gemm_path())
    close32(out, case.fast(config=base))
    assert torch.equal(out, case.fast(config=config, scratch=scratch))


@needs_kernel
def test_fp16_weights_tolerance_rule():
    head = make_head(w=64, depth=2, seed=4)
    case = Case(head, rows=3, steps=4)
    out = case.fast(torch.float16, config=cfg_(bn=32, bk=32, bl=32))
    ref32 = case.gemm_path(torch.float32)
    ref16 = case.gemm_path(torch.float16)       # the GEMM path in fp16: what this path replaces
    err, err16 = (out - ref32).abs().max().item(), (ref16 - ref32).abs().max().item()
    assert err <= 2 * err16 + 1e-3, (err, err16)
    assert err > 1e-5          # the fp16 weights are really used


@needs_kernel
def test_guidance_and_temperature_are_read_from_device_tensors():
    # The same tensors (and scratch), new values written in place, as between graph replays.
    from kernels.fused_sampler import pack_head
    from kernels.step_kernels import sample_steps, step_scratch
    head = make_head(seed=5)
    case = Case(head, rows=2, steps=3)
    w, mods = pack_head(head, torch.float32), case.mods(torch.float32)
    g, t = torch.full((1,), 3.0, device=DEVICE), torch.full((1,), 0.9, device=DEVICE)
    scratch = step_scratch(4, 32, torch.float32, DEVICE)

    def run(noise=case.noise):
        with torch.inference_mode():
            return sample_steps(w, mods, case.coefs, noise, g, t, cfg=True, config=cfg_(), scratch=scratch)
    a = run()
    close32(a, case.gemm_path(guidance=3.0, temperature=0.9))
    g.fill_(1.5)
    t.fill_(0.0)
    b = run()
    close32(b, case.gemm_path(guidance=1.5, temperature=0.0))
    assert (a - b).abs().max() > 0.05
    other = case.noise.clone()
    other[1:] = torch.randn_like(other[1:])      # temperature 0: only x_T̂ (slot 0) matters
    assert torch.equal(run(other), b)


@needs_kernel
@pytest.mark.parametrize("depth", [1, 2])
def test_launches_per_step_are_2_plus_2_depth(depth, monkeypatch):
    from kernels import step_kernels as sk
    calls = []
    real = sk._launch

    def counting(kernel, grid, *args, **meta):
        calls.append((kernel, grid))
        real(kernel, grid, *args, **meta)
    monkeypatch.setattr(sk, "_launch", counting)
    head = make_head(depth=depth, seed=6)
    case = Case(head, rows=1, steps=2)
    out = case.fast(config=cfg_())
    close32(out, case.gemm_path())
    per_step = 2 + 2 * depth
    assert len(calls) == 2 * per_step
    kinds = [k for k, _ in calls[:per_step]]
    assert kinds == ([sk._input_proj_kernel] + [sk._block_in_kernel, sk._block_out_kernel] * depth
                     + [sk._final_kernel])
    assert calls[0][1] == (2, 1) and calls[-1][1] == (1, 1, 1)   # w 32 / 16 columns; C 16 / 16; no K split


# ---------------------------------------------------------------------------------------------
# Host side (no kernel launches)

@needs_triton
def test_modulation_table_is_the_heads_modulations_in_the_weight_dtype():
    from kernels.step_kernels import modulation_table
    head = make_head(w=32, depth=2, seed=7).cpu()
    c_emb, t_emb = torch.randn(4, 32), torch.randn(3, 32)
    with torch.no_grad():
        for dt in (torch.float32, torch.float16):
            tab = modulation_table(head, c_emb, t_emb, dt)
            want = copy.deepcopy(head).to(dt).modulations((c_emb[None] + t_emb[:, None]).to(dt))
            assert tab.shape == (3, 4, 8 * 32) and tab.dtype == dt and tab.is_contiguous()
            torch.testing.assert_close(tab, want, rtol=0, atol=0)


@needs_triton
def test_config_and_input_checks():
    from kernels.fused_sampler import pack_head
    from kernels.step_kernels import StepConfig, sample_steps
    assert StepConfig().resolve(8, 1024, 128).block_rows == 16
    assert StepConfig().resolve(32, 1024, 128).block_rows == 32
    assert StepConfig().resolve(200, 1024, 128).block_rows == 32          # more rows: row blocks
    assert StepConfig(block_c=16).resolve(2, 32, 16).block_k == 32        # clipped to the width
    with pytest.raises(ValueError, match="block_n"):
        StepConfig(block_n=48).resolve(8, 1024, 128)
    with pytest.raises(ValueError, match="block_c"):
        StepConfig(block_c=256).resolve(8, 1024, 128)
    assert StepConfig(split_k=4).resolve(8, 1024, 128).block_k == 256     # one K tile per slice
    assert StepConfig(split_k=8, block_k=256).resolve(8, 1024, 128).block_k == 128   # clipped to the slice
    for bad in (3, 0, 2048):
        with pytest.raises(ValueError, match="split_k"):
            StepConfig(split_k=bad).resolve(8, 1024, 128)
    with pytest.raises(ValueError, match="2·C ≤ w"):
        StepConfig(split_k=2, block_c=16).resolve(8, 32, 32)
    head = make_head(seed=8).cpu()
    w = pack_head(head, torch.float32, "cpu")
    coefs, noise = torch.zeros(3, 4), torch.zeros(3, 2, 16)
    with pytest.raises(ValueError, match="mods"):       # CFG needs 2R rows of modulations
        sample_steps(w, torch.zeros(3, 2, w.ada_n), coefs, noise, 1.0, 1.0, cfg=True)
    with pytest.raises(ValueError, match="coefs"):
        sample_steps(w, torch.zeros(3, 4, w.ada_n), coefs[:2], noise, 1.0, 1.0, cfg=True)
    # LayerNorm partials need their scratch (step_scratch with the config allocates it)
    from kernels.step_kernels import step_scratch
    plain = step_scratch(4, 32, torch.float32, "cpu")
    assert plain.stats is None
    assert step_scratch(4, 32, torch.float32, "cpu", StepConfig(block_n=16, ln_partials=True)).stats.shape == (4, 4)
    with pytest.raises(ValueError, match="ln_partials needs scratch.stats"):
        sample_steps(w, torch.zeros(3, 4, w.ada_n), coefs, noise, 1.0, 1.0, cfg=True,
                     config=StepConfig(block_n=16, block_c=16, ln_partials=True), scratch=plain)
    split = step_scratch(4, 32, torch.float32, "cpu", StepConfig(block_n=16, split_k=2))
    assert split.part.shape == (2, 4, 32) and split.count.dtype == torch.int32 and not split.count.any()
    with pytest.raises(ValueError, match="split_k 2 needs scratch.part"):
        sample_steps(w, torch.zeros(3, 4, w.ada_n), coefs, noise, 1.0, 1.0, cfg=True,
                     config=StepConfig(block_n=16, block_c=16, split_k=2), scratch=plain)


# ---------------------------------------------------------------------------------------------
# GPU only

def _base_case(steps=100, rows=4):
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    torch.manual_seed(0)
    head = randomize_(DiffusionHead(128, 768, 1024, 3), seed=0, scale=0.5).eval().to(DEVICE)
    return Case(head, rows=rows, steps=steps, schedule=mild_schedule(steps, train_steps=100))


def _hopper():
    return CUDA and torch.cuda.get_device_capability()[0] >= 9


@needs_triton
def test_pdl_is_refused_where_it_cannot_run():
    """StepConfig.pdl needs compiled Triton on an sm_90+ GPU: the interpreter and the CPU say so."""
    from kernels.step_kernels import check_pdl
    if _hopper() and MODE == "cuda":
        check_pdl("cuda")                         # accepted
    else:
        with pytest.raises(ValueError, match="pdl"):
            check_pdl(DEVICE)
    with pytest.raises(ValueError, match="pdl needs a CUDA GPU|interpreter"):
        check_pdl("cpu")


@needs_gpu
@pytest.mark.parametrize("ln_partials,pdl,split_k", [(False, False, 1), (True, False, 1), (False, True, 1),
                                                     (True, True, 1), (True, False, 4), (False, False, 2)])
def test_gpu_full_size_parity(ln_partials, pdl, split_k):
    from kernels.step_kernels import StepConfig
    if pdl and not _hopper():
        pytest.skip("programmatic dependent launch needs compute capability >= 9.0")
    config = StepConfig(ln_partials=ln_partials, pdl=pdl, split_k=split_k)    # the default tiles
    case = _base_case()
    ref32 = case.gemm_path(torch.float32)
    torch.testing.assert_close(case.fast(torch.float32, config=config), ref32, rtol=1e-4, atol=1e-4)
    out = case.fast(torch.float16, config=config)
    ref16 = case.gemm_path(torch.float16)
    err, err16 = (out - ref32).abs().max().item(), (ref16 - ref32).abs().max().item()
    assert err <= 2 * err16 + 1e-2, (err, err16)


@needs_gpu
@pytest.mark.parametrize("pdl,prefetch,split_k", [(False, True, 1), (True, True, 1), (True, False, 1), (False, True, 4)])
def test_gpu_cuda_graph_replay_equals_eager(pdl, prefetch, split_k):
    """Capture + replay = eager, new guidance without recapture; with pdl the graph holds
    programmatic edges between the launches (the waits must still order every read after the
    write it needs: replay must equal the eager run bit for bit)."""
    from kernels.fused_sampler import pack_head
    from kernels.step_kernels import StepConfig, _graphed, sample_steps, step_scratch
    if pdl and not _hopper():
        pytest.skip("programmatic dependent launch needs compute capability >= 9.0")
    case = _base_case(steps=20)
    w, mods = pack_head(case.head, torch.float16), case.mods(torch.float16)
    g, t = torch.full((1,), 3.0, device="cuda"), torch.full((1,), 0.9, device="cuda")
    config = StepConfig(pdl=pdl, pdl_prefetch=prefetch, split_k=split_k)
    scratch = step_scratch(8, 1024, torch.float16, "cuda", config)

    def run():
        return sample_steps(w, mods, case.coefs, case.noise, g, t, cfg=True, config=config, scratch=scratch)
    with torch.inference_mode():
        eager = run()
        if pdl or split_k > 1:   # the same math as the plain launches (split-K: up to the order of the K sums)
            plain = sample_steps(w, mods, case.coefs, case.noise, g, t, cfg=True, config=StepConfig(),
                                 scratch=step_scratch(8, 1024, torch.float16, "cuda"))
            tol = 1e-6 if split_k == 1 else 1e-4
            torch.testing.assert_close(eager, plain, rtol=tol, atol=tol)
        replay, out = _graphed(run)       # warm-up on a side stream, then capture
        replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager)
        g.fill_(1.5)                     # new guidance: same graph
        replay()
        torch.cuda.synchronize()
        again = out.clone()
        assert torch.equal(again, run())
        assert not torch.allclose(again, eager)
