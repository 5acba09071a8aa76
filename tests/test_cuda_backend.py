"""The cuda backend (issue 6): plans and keys (pure Python), the backend glue under the Triton
interpreter on CPU, and CUDA-graph behaviour on a GPU (skipped here with a reason)."""
import dataclasses
import math

import pytest
import torch

# Sets TRITON_INTERPRET=1 before Triton's first import when there is no GPU (see that module).
from test_fused_sampler import CUDA, DEVICE, MODE, WHY, mild_schedule  # noqa: E402

from impact_rt.config import ConfigError, DecodeConfig, preset
from impact_rt.cuda_graphs import (CaptureKey, DecodePlan, FusedConfig, GraphCache, buffer_plan, choose_config,
                                   plan_bytes, scratch_bytes)
from impact_rt.mask_schedule import MaskPlan, guidance_schedule

from helpers import tiny_condition, tiny_model

needs_kernel = pytest.mark.skipif(MODE not in ("cuda", "interpret"), reason=WHY or "no Triton")
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CUDA graphs)")

BASE = preset("base")
TEST = preset("test")


# ---------------------------------------------------------------------------------------------
# Availability and the registry

@pytest.mark.skipif(CUDA, reason="checks the no-GPU answer")
def test_available_says_why_not_without_cuda():
    from impact_rt import cuda_backend
    from impact_rt.backends import availability
    ok, why = cuda_backend.available()
    assert not ok and ("CUDA" in why or "triton" in why)
    assert availability()["cuda"] == (False, why)
    with pytest.raises(ConfigError, match="not available"):
        cuda_backend.load_backend(tiny_model(), None, None, device="cuda")


# ---------------------------------------------------------------------------------------------
# Capture keys

def test_capture_key_depends_on_shapes_not_on_data():
    k = CaptureKey.build(2, DecodeConfig(8, 100, guidance=5.0, temperature=1.0), BASE, "fp16")
    assert k == CaptureKey.build(2, DecodeConfig(8, 100, guidance=3.0, temperature=0.7), BASE, "fp16")
    assert k != CaptureKey.build(2, DecodeConfig(8, 50, guidance=5.0), BASE, "fp16")
    assert k != CaptureKey.build(1, DecodeConfig(8, 100, guidance=5.0), BASE, "fp16")
    assert k != CaptureKey.build(2, DecodeConfig(16, 100, guidance=5.0), BASE, "fp16")
    assert k != CaptureKey.build(2, DecodeConfig(8, 100, guidance=5.0), BASE, "bf16")
    no_cfg = CaptureKey.build(2, DecodeConfig(8, 100, guidance=1.0), BASE, "fp16")
    assert k.cfg and not no_cfg.cfg
    assert len({k, no_cfg, k}) == 2                       # hashable, usable as a cache key
    with pytest.raises(ConfigError):
        CaptureKey.build(2, DecodeConfig(8, 100), BASE, "int8")
    with pytest.raises(ConfigError):
        CaptureKey.build(0, DecodeConfig(8, 100), BASE, "fp16")
    with pytest.raises(ConfigError):
        CaptureKey.build(1, DecodeConfig(300, 100), BASE, "fp16")


# ---------------------------------------------------------------------------------------------
# Decode plans

@pytest.mark.parametrize("batch,iterations", [(1, 64), (1, 8), (64, 4), (3, 1)])
def test_decode_plan_slices_partition_the_order(batch, iterations):
    key = CaptureKey.build(batch, DecodeConfig(iterations, 100, guidance=5.0), BASE, "fp16")
    plan = DecodePlan.build(key, 5.0, width=1024, sm_count=132)
    mp = MaskPlan.build(BASE.num_tokens, iterations)
    covered = []
    for t, it in enumerate(plan.iterations):
        assert it.t == t and it.stream == t
        assert it.visible_start == it.predicted_stop == mp.masked[t]    # visible = order[:, masked[t]:]
        assert it.predicted_start == mp.masked[t + 1]
        assert plan.visible(t) == mp.counts(t)[0] and it.predicted == mp.counts(t)[1]
        assert it.rows == batch * it.predicted
        assert it.config.programs(it.rows) <= max(132, it.config.row_blocks(it.rows))
        covered += range(it.predicted_start, it.predicted_stop)
    assert sorted(covered) == list(range(BASE.num_tokens))             # every position once
    assert plan.total_rows() == batch * BASE.num_tokens
    assert plan.guidance == tuple(guidance_schedule(iterations, 5.0))
    assert len({it.stream for it in plan.iterations}) == iterations     # a fresh noise stream per iteration


def test_decode_plan_rejects_philox_counter_overflow():
    cfg = preset("test")
    import dataclasses
    big = dataclasses.replace(cfg, latent_channels=8 * 4096)            # C = 2^19 per token
    key = CaptureKey(1, 1, 1000, True, "fp16", big.num_tokens, big.token_dim)
    with pytest.raises(ConfigError, match="Philox"):
        DecodePlan.build(key, 1.0, width=32, config_override=FusedConfig(16, 32, 32, 32))


def test_buffer_plan_shapes_and_bytes():
    key = CaptureKey.build(4, DecodeConfig(16, 100, guidance=5.0), BASE, "fp16")
    bufs = {b.name: b for b in buffer_plan(key, BASE)}
    assert bufs["cond"].shape == (8, BASE.text_len, BASE.dim) and bufs["cond"].dtype == "fp16"
    assert bufs["cond_mask"].shape == (8, BASE.text_len)
    assert bufs["tokens"].shape == (4, 256, 128) and bufs["tokens"].dtype == "fp32"
    assert bufs["order"].shape == (4, 256) and bufs["seeds"].shape == (4,)
    assert bufs["guidance"].shape == (16,) and bufs["temperature"].shape == (1,)
    assert bufs["t_emb"].shape == (100, 1024) and bufs["coefs"].shape == (100, 4)
    assert bufs["cond"].nbytes == 8 * 78 * 768 * 2
    no_cfg = {b.name: b for b in buffer_plan(CaptureKey.build(4, DecodeConfig(16, 100, guidance=1.0), BASE, "fp16"),
                                             BASE)}
    assert no_cfg["cond"].shape[0] == 4
    plan = DecodePlan.build(key, 5.0, 1024, 132)
    sizes = plan_bytes(key, BASE, plan)
    assert sizes["static"] == sum(b.nbytes for b in bufs.values())
    assert 0 < sizes["max_scratch"] < 2 ** 30


# ---------------------------------------------------------------------------------------------
# Fused sampler configurations

def test_choose_config_splits_columns_only_when_rows_are_few():
    small = choose_config(8, 1024, 128, sm_count=132)            # batch 1, T = 64: ~4-8 rows
    assert small.split > 1 and small.programs(8) <= 132
    assert small.validate(1024, 128) is small
    big = choose_config(6400, 1024, 128, sm_count=132)           # batch 64, T = 4
    assert big.split == 1 and big.block_rows == 64
    assert choose_config(8, 1024, 128, sm_count=1).split == 1    # CPU / interpreter
    assert choose_config(8, 1024, 128, sm_count=132, max_split=1).split == 1
    assert choose_config(8, 1024, 128, sm_count=132, max_split=6).split == 4
    tiny = choose_config(5, 32, 16)
    assert (tiny.block_n, tiny.block_k, tiny.block_c) == (32, 32, 16)
    for rows in (1, 7, 16, 100, 1000, 20000):
        c = choose_config(rows, 1024, 128, sm_count=132)
        assert c.split == 1 or c.programs(rows) <= 132          # grid barriers need co-residency


@pytest.mark.parametrize("bad", [dict(block_rows=12), dict(block_n=48), dict(split=3), dict(block_c=64),
                                 dict(num_stages=0)])
def test_fused_config_validation(bad):
    kwargs = dict(block_rows=16, block_n=32, block_k=32, block_c=16, split=1)
    kwargs.update(bad)
    width, c = (96 if bad.get("block_n") == 48 else 32), 16
    with pytest.raises(ConfigError):
        FusedConfig(**kwargs).validate(width, c)


def test_scratch_bytes_scale_with_rows_and_split():
    c1 = FusedConfig(16, 64, 64, 32, 1)
    c8 = FusedConfig(16, 64, 64, 32, 8)
    assert scratch_bytes(32, 1024, 3, c1, True) < scratch_bytes(64, 1024, 3, c1, True)
    assert scratch_bytes(32, 1024, 3, c1, True) < scratch_bytes(32, 1024, 3, c8, True)
    assert scratch_bytes(32, 1024, 3, c1, False) < scratch_bytes(32, 1024, 3, c1, True)


def test_graph_cache_lru_releases_evicted():
    released = []

    class Entry:
        def __init__(self, k):
            self.k = k

        def release(self):
            released.append(self.k)

    cache = GraphCache(max_entries=2)
    cache.put("a", Entry("a"))
    cache.put("b", Entry("b"))
    assert cache.get("a").k == "a"          # a is now most recent
    cache.put("c", Entry("c"))
    assert released == ["b"] and "b" not in cache and len(cache) == 2
    assert cache.captures == 3 and cache.hits == 1
    cache.put("a", Entry("a2"))             # replaced under the same key: the old entry is released
    assert released == ["b", "a"] and cache.get("a").k == "a2" and len(cache) == 2
    cache.clear()
    assert sorted(released) == ["a", "a2", "b", "c"] and len(cache) == 0
    with pytest.raises(ConfigError):
        GraphCache(0)


# ---------------------------------------------------------------------------------------------
# The backend glue (interpreter on CPU, compiled on GPU): tiny model, few iterations

class PhiloxNoise:
    """A NoiseSource that hands out exactly the noise the kernel draws in Philox mode."""

    def __init__(self, seeds, order, refine_orders=()):
        self.seeds = torch.as_tensor(seeds, dtype=torch.int64, device=DEVICE)
        self._order, self.refine_orders = order, list(refine_orders)

    def order(self, batch, num_tokens):
        return self._order

    def refine(self, p):
        from impact_rt.decoding import refine_seeds
        return PhiloxNoise(refine_seeds(self.seeds.tolist(), p), self.refine_orders[p])

    def head(self, t, batch, rows, steps, dim):
        from kernels.fused_sampler import philox_noise
        big = dict(block_rows=512, block_c=128) if not CUDA else {}   # few interpreter programs; GPU defaults
        return philox_noise(self.seeds, rows, steps, dim, stream=t, **big)


TINY_CFG = FusedConfig(block_rows=256, block_n=32, block_k=32, block_c=128, split=1)  # few interpreter programs


def _tiny_setup(prompts, dc):
    from impact_rt.decoding import DecodeTables
    model = tiny_model(0, scale=0.5)
    with torch.inference_mode():
        cond, mask = tiny_condition(model, prompts)
        model = model.to(DEVICE)
        nc, nm = model.null(len(prompts))
    return model, cond.to(DEVICE), mask.to(DEVICE), nc, nm, DecodeTables.build(model.cfg, dc)


def _backend(model, **kw):
    """The backend under test. The head's step is not compiled unless a test asks (compile_head):
    these tests compare head paths with tolerances of a few ulps, and on a GPU the default would
    otherwise be inductor's fused step (its own parity test covers it); compile_head=None gives the
    shipped default."""
    from impact_rt.cuda_backend import CudaBackend
    kw.setdefault("precision", "fp32")
    kw.setdefault("config", None if CUDA else TINY_CFG)
    kw.setdefault("compile_head", "none")
    kw.setdefault("compile_encoder", "none")
    return CudaBackend(model, device=DEVICE, **kw)


@needs_kernel
def test_per_step_backend_matches_torch_backend_with_recorded_noise():
    from impact_rt.decoding import RecordedNoise, TorchNoise, decode
    from impact_rt.reference import TorchBackend
    dc = DecodeConfig(iterations=2, diffusion_steps=2, guidance=3.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["a dog barks"], dc)
    rec = RecordedNoise.wrap(TorchNoise([1], DEVICE))
    with torch.inference_mode():
        ref = decode(TorchBackend(model), model.cfg, dc, cond, mask, nc, nm, rec, tables)
        out = decode(_backend(model), model.cfg, dc, cond, mask, nc, nm, rec.replay(), tables)
    # Random test weights under the cosine schedule amplify by ~1/sqrt(ᾱ): relative bound.
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


@needs_kernel
def test_decode_all_equals_per_step_decode_with_the_same_philox_noise():
    from impact_rt.decoding import TorchNoise, decode
    dc = DecodeConfig(iterations=2, diffusion_steps=2, guidance=4.0, temperature=0.8)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    be = _backend(model)
    with torch.inference_mode():
        fast = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        step = decode(be, model.cfg, dc, cond, mask, nc, nm, PhiloxNoise([5, 6], order), tables)
    assert fast.shape == (2, 256, 128) and (fast.abs().sum(-1) > 0).all()
    assert (fast - step).abs().max() <= 1e-6 * step.abs().max()


@needs_kernel
def test_decode_all_refinement_equals_per_step_decode_and_needs_no_capture_of_its_own():
    from impact_rt.decoding import TorchNoise, decode
    dc = DecodeConfig(iterations=2, diffusion_steps=2, guidance=4.0, refine=1, refine_share=0.6)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain"], dc)
    noise = TorchNoise([5], DEVICE)
    order, again = noise.order(1, model.cfg.num_tokens), noise.refine(0).order(1, model.cfg.num_tokens)
    be = _backend(model)
    with torch.inference_mode():
        fast = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5], order, tables, refine_orders=[again])
        step = decode(be, model.cfg, dc, cond, mask, nc, nm, PhiloxNoise([5], order, [again]), tables)
        plain = be.decode_all(model.cfg, DecodeConfig(iterations=2, diffusion_steps=2, guidance=4.0),
                              cond, mask, nc, nm, [5], order, tables)
        with pytest.raises(ConfigError, match="re-masking orders"):
            be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5], order, tables)
    assert (fast - step).abs().max() <= 1e-6 * step.abs().max()
    assert not torch.equal(fast, plain)
    assert be.stats["captures"] == 1                    # refine is not part of the capture key


@needs_kernel
def test_decode_all_new_seed_changes_audio_without_recapture():
    from impact_rt.decoding import DecodeTables, TorchNoise
    dc = DecodeConfig(iterations=2, diffusion_steps=2, guidance=3.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["thunder"], dc)
    order = TorchNoise([1], DEVICE).order(1, model.cfg.num_tokens)
    be = _backend(model)
    with torch.inference_mode():
        a = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [1], order, tables)
        b = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [2], order, tables)
        a2 = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [1], order, tables)
        dc2 = DecodeConfig(iterations=2, diffusion_steps=2, guidance=2.0)     # new β_max: same key
        c = be.decode_all(model.cfg, dc2, cond, mask, nc, nm, [1], order, DecodeTables.build(model.cfg, dc2))
    assert not torch.allclose(a, b) and torch.equal(a, a2) and not torch.allclose(a, c)
    assert be.stats == {"captures": 1, "hits": 3, "cached": 1}


@needs_kernel
def test_backend_project_null_audio_match_torch_backend():
    from impact_rt.audio import GriffinLim
    from impact_rt.reference import TorchBackend
    from impact_rt.text_conditioner import HashConditioner
    from impact_rt.vae import AutoencoderKL
    model = tiny_model(0).to(DEVICE)
    vae, voc = AutoencoderKL("test").eval(), GriffinLim(n_iter=2, nnls_iter=2)   # left on CPU, as the pipeline may
    ref, be = TorchBackend(model, vae, voc), _backend(model)
    be.vae, be.vocoder = vae, voc
    states, mask = HashConditioner(TEST.text_len, TEST.text_dim).encode(["a cat"])
    tokens = torch.randn(1, TEST.num_tokens, TEST.token_dim, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        for a, b in zip(ref.project(states.to(DEVICE), mask.to(DEVICE)), be.project(states, mask)):
            torch.testing.assert_close(a, b)
        for a, b in zip(ref.null(2), be.null(2)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(ref.audio(tokens), be.audio(tokens.to(DEVICE)).cpu())


# ---------------------------------------------------------------------------------------------
# GPU only: CUDA graphs

@needs_gpu
def test_gpu_graph_replay_equals_eager_and_no_recapture():
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=4, diffusion_steps=20, guidance=5.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["thunder", "rain"], dc)
    # Random weights under the cosine schedule grow the tokens to ~1e3 (past what fp16 compares well, as the
    # eager fp16 model does); the mild schedule keeps them O(1), so that fp16 is compared too.
    tables = dataclasses.replace(tables, schedule=mild_schedule(20))
    order = TorchNoise([1, 2], "cuda").order(2, model.cfg.num_tokens)
    for precision in ("fp32", "fp16"):
        graphs = _backend(model, precision=precision, use_graphs=True, compile_head=None)   # the shipped default
        eager = _backend(model, precision=precision, use_graphs=False, compile_head=None)
        with torch.inference_mode():
            g1 = graphs.decode_all(model.cfg, dc, cond, mask, nc, nm, [1, 2], order, tables)
            e1 = eager.decode_all(model.cfg, dc, cond, mask, nc, nm, [1, 2], order, tables)
            runner = graphs.graphs.get(CaptureKey.build(2, dc, model.cfg, precision))
            assert len(runner.graphs) == dc.iterations
            g2 = graphs.decode_all(model.cfg, dc, cond, mask, nc, nm, [3, 2], order, tables)
            g3 = graphs.decode_all(model.cfg, dc, cond, mask, nc, nm, [1, 2], order, tables)
        assert torch.isfinite(e1).all(), precision
        torch.testing.assert_close(g1, e1, rtol=1e-5, atol=1e-5 * e1.abs().max().item())
        assert torch.equal(g1, g3)                                   # replay is deterministic
        assert not torch.allclose(g1[0], g2[0]) and torch.equal(g1[1], g2[1])   # per-sample seeds
        assert graphs.stats["captures"] == 1


def _assert_compiled_matches_plain_gemm_path(**compiled_kw):
    """The GEMM head path with ``compiled_kw`` (a torch.compile'd part) against the plain one, both
    in captured graphs, fp32 and fp16, on the tiny model with a mild schedule."""
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=4, diffusion_steps=20, guidance=5.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["thunder", "rain"], dc)
    tables = dataclasses.replace(tables, schedule=mild_schedule(20))
    order = TorchNoise([1, 2], "cuda").order(2, model.cfg.num_tokens)
    for precision, tol in (("fp32", 1e-4), ("fp16", 2e-2)):
        plain = _backend(model, precision=precision, gemm_rows=1)
        compiled = _backend(model, precision=precision, gemm_rows=1, **compiled_kw)
        with torch.inference_mode():
            p = plain.decode_all(model.cfg, dc, cond, mask, nc, nm, [1, 2], order, tables)
            c = compiled.decode_all(model.cfg, dc, cond, mask, nc, nm, [1, 2], order, tables)
        assert torch.isfinite(p).all(), precision
        torch.testing.assert_close(c, p, rtol=tol, atol=tol * p.abs().max().item())


@needs_gpu
@pytest.mark.parametrize("compile_head", ["inductor", "inductor:max-autotune-no-cudagraphs"])
def test_gpu_inductor_compiled_gemm_path_matches_the_plain_gemm_path(compile_head):
    """compile_head="inductor" (bench cells ``*_gemm_compiled``, the fastest path measured on the
    H100 in session 9) against the plain GEMM path, both inside captured graphs: inductor fuses the
    step's elementwise work around the GEMMs, so only rounding may differ. Passed on an H200
    (session 10) for "inductor"; the max-autotune mode (Triton GEMM templates with fused
    epilogues, session 12) has not run on a GPU yet."""
    _assert_compiled_matches_plain_gemm_path(compile_head=compile_head)


@needs_gpu
def test_gpu_base_preset_per_step_parity_with_torch_backend():
    from impact_rt.decoding import DecodeTables, RecordedNoise, TorchNoise, decode
    from impact_rt.model import IMPACT, randomize_
    from impact_rt.reference import TorchBackend
    from impact_rt.text_conditioner import HashConditioner
    torch.manual_seed(0)
    model = randomize_(IMPACT(BASE), seed=0, scale=0.5).eval().cuda()
    states, m = HashConditioner(BASE.text_len, BASE.text_dim).encode(["a dog barks"])
    with torch.inference_mode():
        cond, mask = model.project_condition(states.cuda(), m.cuda())
        nc, nm = model.null(1)
        dc = DecodeConfig(iterations=4, diffusion_steps=25, guidance=5.0)
        tables = DecodeTables.build(BASE, dc)
        rec = RecordedNoise.wrap(TorchNoise([0], "cuda"))
        ref = decode(TorchBackend(model), BASE, dc, cond, mask, nc, nm, rec, tables)
        out = decode(_backend(model, precision="fp32"), BASE, dc, cond, mask, nc, nm, rec.replay(), tables)
    assert (out - ref).abs().max() <= 1e-3 * ref.abs().max()


@needs_gpu
def test_gpu_pipeline_generates_with_cuda_backend():
    from impact_rt.pipeline import Pipeline
    # fp32: random `test` weights under the cosine schedule reach ~1e3 (~1e5 from t=999), far from O(1).
    pipe = Pipeline.random("test", device="cuda", backend="cuda", precision="fp32")
    out = pipe.generate(["thunder"], seed=0, iterations=4, diffusion_steps=10)
    assert out.settings["backend"] == "cuda"
    assert out.audio.shape == (1, 163840) and math.isfinite(float(abs(out.audio).max()))


@needs_gpu
@pytest.mark.parametrize("flags", ["on", "partials", "pdl", "pdl,partials", "pdl,noprefetch,partials",
                                   "partials,splitk4"])
def test_gpu_step_kernel_head_path_matches_the_gemm_path_in_graphs(flags):
    """The step-kernel head path (bench cells ``*_steps*``) against the plain GEMM path, both in
    captured graphs, at batch 1 (few rows an iteration); a new seed changes the tokens without a
    new capture."""
    from impact_rt.decoding import TorchNoise
    if "pdl" in flags and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs compute capability >= 9.0")
    dc = DecodeConfig(iterations=16, diffusion_steps=20, guidance=5.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["thunder"], dc)
    tables = dataclasses.replace(tables, schedule=mild_schedule(20))
    order = TorchNoise([1], "cuda").order(1, model.cfg.num_tokens)
    for precision, tol in (("fp32", 1e-4), ("fp16", 2e-2)):
        plain = _backend(model, precision=precision, gemm_rows=1, compile_head="none")
        steps = _backend(model, precision=precision, step_kernels=flags)
        with torch.inference_mode():
            p = plain.decode_all(model.cfg, dc, cond, mask, nc, nm, [1], order, tables)
            s = steps.decode_all(model.cfg, dc, cond, mask, nc, nm, [1], order, tables)
            s2 = steps.decode_all(model.cfg, dc, cond, mask, nc, nm, [2], order, tables)
        assert torch.isfinite(p).all(), precision
        torch.testing.assert_close(s, p, rtol=tol, atol=tol * p.abs().max().item())
        assert not torch.allclose(s, s2) and steps.stats["captures"] == 1


def test_plan_override_gives_way_where_its_barriers_cannot_all_be_resident():
    over = FusedConfig(block_rows=16, block_n=32, block_k=64, block_c=32, split=32)
    key = CaptureKey.build(64, DecodeConfig(4, 100), BASE, "fp16")          # thousands of rows an iteration
    plan = DecodePlan.build(key, 1.0, BASE.head_width, 132, over)
    for it in plan.iterations:
        assert it.config.programs(key.batch * it.predicted) <= 132 or it.config.split == 1
    small = DecodePlan.build(CaptureKey.build(1, DecodeConfig(64, 100), BASE, "fp16"), 1.0, BASE.head_width, 132, over)
    assert all(it.config == over for it in small.iterations)


@needs_kernel
def test_gemm_head_path_equals_fused_kernel_with_the_same_philox_noise():
    """Many rows run the head as GEMMs (cuBLAS on a GPU): same math, same Philox stream."""
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=2, diffusion_steps=3, guidance=4.0, temperature=0.8)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    with torch.inference_mode():
        fused = _backend(model, gemm_rows=10 ** 9).decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        gemm_be = _backend(model, gemm_rows=1)
        gemm = gemm_be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        other = gemm_be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 7], order, tables)
    assert (gemm - fused).abs().max() <= 1e-5 * fused.abs().max()
    assert torch.equal(gemm[0], other[0]) and not torch.allclose(gemm[1], other[1])   # per-sample seeds


@needs_kernel
def test_step_kernel_head_path_equals_the_gemm_path_with_the_same_philox_noise():
    """step_kernels="on": iterations of up to ``step_rows`` cond rows run the head as 2 + 2d Triton
    launches a step (kernels/step_kernels.py); same adaLN table, same Philox stream, same tokens
    as the GEMM path. step_rows is raised here so that the tiny model's iterations take it."""
    import kernels.step_kernels as sk
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=2, diffusion_steps=2, guidance=4.0, temperature=0.8)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    launched, real = [], sk._launch
    with torch.inference_mode():
        gemm = _backend(model, gemm_rows=1).decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        steps_be = _backend(model, step_kernels="on", step_rows=10 ** 6)
        sk._launch = lambda kernel, *a, **k: (launched.append(kernel), real(kernel, *a, **k))
        try:
            steps = steps_be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        finally:
            sk._launch = real
    assert steps_be.step_config == sk.StepConfig()
    assert len(launched) == 2 * 2 * (2 + 2 * model.cfg.head_depth)     # iterations × T̂ × (2 + 2d)
    assert (steps - gemm).abs().max() <= 1e-5 * gemm.abs().max()


@needs_kernel
def test_step_kernels_option_parsing_and_pdl_refusal(monkeypatch):
    from impact_rt.cuda_backend import step_kernels_from
    from kernels.step_kernels import StepConfig
    assert step_kernels_from(None) is None
    for off in ("", "0", "none", "off", " OFF "):
        assert step_kernels_from(off) is None
    assert step_kernels_from("on") == StepConfig()
    assert step_kernels_from("pdl,partials") == StepConfig(pdl=True, ln_partials=True)
    assert step_kernels_from("partials") == StepConfig(ln_partials=True)
    assert step_kernels_from("pdl,noprefetch") == StepConfig(pdl=True, pdl_prefetch=False)
    assert StepConfig(pdl=True, pdl_prefetch=False).pdl_mode == 1 and StepConfig(pdl=True).pdl_mode == 2
    assert StepConfig(pdl_prefetch=False).pdl_mode == 0
    with pytest.raises(ConfigError, match="noprefetch only goes with pdl"):
        step_kernels_from("noprefetch")
    assert step_kernels_from("partials,splitk4") == StepConfig(ln_partials=True, split_k=4)
    for bad in ("splitk", "splitkx", "splitk2,splitk4"):
        with pytest.raises(ConfigError, match="unknown flags"):
            step_kernels_from(bad)
    cfg = StepConfig(block_n=32)
    assert step_kernels_from(cfg) is cfg
    with pytest.raises(ConfigError, match="unknown flags"):
        step_kernels_from("pdl,fast")
    model = tiny_model(0, scale=0.5)
    monkeypatch.setenv("IMPACT_RT_STEP_KERNELS", "partials")
    assert _backend(model).step_config == StepConfig(ln_partials=True)
    assert _backend(model, step_kernels="off").step_config is None      # the argument wins
    if not (CUDA and torch.cuda.get_device_capability()[0] >= 9):
        with pytest.raises(ConfigError, match="pdl"):                    # interpreter / pre-Hopper: refused
            _backend(model, step_kernels="pdl")


@needs_kernel
def test_gemm_path_adaln_table_equals_per_step_modulation(monkeypatch):
    """The GEMM path with every step's adaLN modulation precomputed (4 GEMMs an iteration) gives
    the per-step computation's tokens; the table is skipped past its byte cap."""
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=2, diffusion_steps=3, guidance=4.0, temperature=0.8)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    with torch.inference_mode():
        table_be = _backend(model, gemm_rows=1, adaln_table=True)
        plain_be = _backend(model, gemm_rows=1, adaln_table=False)
        assert table_be.gemm_adaln_table(3, 8) and not plain_be.gemm_adaln_table(3, 8)
        with_table = table_be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        per_step = plain_be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
    assert with_table.abs().max() > 0.1
    torch.testing.assert_close(with_table, per_step, rtol=1e-5, atol=1e-5 * float(per_step.abs().max()))
    assert not table_be.gemm_adaln_table(100, 10 ** 6)         # past ADALN_TABLE_MAX_BYTES
    monkeypatch.setenv("IMPACT_RT_ADALN_TABLE", "0")
    assert not _backend(model).gemm_adaln_table(3, 8) and _backend(model, adaln_table=True).gemm_adaln_table(3, 8)


def test_head_step_modulated_equals_step():
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    head = randomize_(DiffusionHead(16, 24, 32, 2), seed=3, scale=0.5).eval()
    x, y = torch.randn(5, 16), torch.randn(5, 32)
    with torch.no_grad():
        mods = head.modulations(y)
        assert mods.shape == (5, (3 * 2 + 2) * 32)
        torch.testing.assert_close(head.step_modulated(x, mods), head.step(x, y), rtol=1e-6, atol=1e-6)
        table = head.modulations(y[None] + torch.randn(4, 1, 32))       # [steps, rows, ...] at once
        assert table.shape == (4, 5, 256)


@needs_kernel
def test_compiled_gemm_step_traces_whole_and_equals_the_plain_one(monkeypatch):
    """compile_head: the GEMM path's step through torch.compile. Here the "eager" backend checks
    that dynamo traces the step without graph breaks (fullgraph) and that the result is the plain
    step's; on a GPU the same wiring runs with inductor (bench cells ``*_gemm_compiled``)."""
    from impact_rt.decoding import TorchNoise
    dc = DecodeConfig(iterations=2, diffusion_steps=3, guidance=4.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    with torch.inference_mode():
        plain = _backend(model, gemm_rows=1).decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        be = _backend(model, gemm_rows=1, compile_head="eager")
        compiled = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
    assert torch.equal(plain, compiled)
    # "backend:mode" reaches torch.compile as its mode (inductor's max-autotune on a GPU)
    from impact_rt import cuda_backend as cb
    seen = []
    monkeypatch.setattr(cb.torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    cb.make_gemm_step(model.head, torch.float32, model.cfg.token_dim, "inductor:max-autotune-no-cudagraphs")
    cb.make_gemm_step(model.head, torch.float32, model.cfg.token_dim, "eager")
    assert [(k["backend"], k["mode"]) for k in seen] == [("inductor", "max-autotune-no-cudagraphs"), ("eager", None)]
    monkeypatch.undo()
    monkeypatch.setenv("IMPACT_RT_COMPILE_HEAD", "eager")
    assert _backend(model, compile_head=None).compile_head == "eager" and _backend(model, compile_head="").compile_head == ""


@needs_kernel
def test_compiled_encoder_traces_whole_and_equals_the_plain_one(monkeypatch):
    """compile_encoder: the latent encoder of each iteration through torch.compile (dynamic
    shapes: the visible and predicted counts change with the iteration). The "eager" backend
    checks here that dynamo traces it without graph breaks and changes nothing; on a GPU the same
    wiring runs with inductor (bench path ``encoder_compiled``, GPU parity test below)."""
    from impact_rt import cuda_backend as cb
    from impact_rt.decoding import TorchNoise, decode
    dc = DecodeConfig(iterations=3, diffusion_steps=2, guidance=4.0)
    model, cond, mask, nc, nm, tables = _tiny_setup(["rain", "wind"], dc)
    order = TorchNoise([5, 6], DEVICE).order(2, model.cfg.num_tokens)
    with torch.inference_mode():
        plain = _backend(model).decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        be = _backend(model, compile_encoder="eager")
        assert be.compile_encoder == "eager" and be.encoder is not be.model.encoder
        compiled = be.decode_all(model.cfg, dc, cond, mask, nc, nm, [5, 6], order, tables)
        per_step = decode(be, model.cfg, dc, cond, mask, nc, nm, PhiloxNoise([5, 6], order), tables)
    assert torch.equal(plain, compiled)
    assert (per_step - plain).abs().max() <= 1e-6 * plain.abs().max()
    # the argument wins over IMPACT_RT_COMPILE_ENCODER; "backend:mode" reaches torch.compile
    assert cb.encoder_path(None, env={}) == "" and cb.encoder_path(" off ", env={}) == ""
    assert cb.encoder_path(None, env={"IMPACT_RT_COMPILE_ENCODER": "inductor"}) == "inductor"
    assert cb.encoder_path("none", env={"IMPACT_RT_COMPILE_ENCODER": "inductor"}) == ""
    seen = []
    monkeypatch.setattr(cb.torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    assert cb.make_encoder(model.encoder, "") is model.encoder and not seen
    cb.make_encoder(model.encoder, "inductor:max-autotune-no-cudagraphs")
    assert [(k["backend"], k["mode"], k["dynamic"], k["fullgraph"]) for k in seen] == \
        [("inductor", "max-autotune-no-cudagraphs", True, True)]
    monkeypatch.undo()
    monkeypatch.setenv("IMPACT_RT_COMPILE_ENCODER", "eager")
    assert _backend(model, compile_encoder=None).compile_encoder == "eager"
    assert _backend(model, compile_encoder="").compile_encoder == ""


@needs_gpu
def test_gpu_inductor_compiled_encoder_matches_the_plain_encoder():
    """compile_encoder="inductor" (bench path ``encoder_compiled``) against the eager encoder, both
    inside captured graphs with the same head path: inductor fuses the encoder's LayerNorms,
    residual adds and GELUs around the GEMMs, so only rounding may differ. Not yet run on a GPU."""
    _assert_compiled_matches_plain_gemm_path(compile_encoder="inductor")


def test_gemm_rows_threshold_from_argument_or_environment(monkeypatch):
    from impact_rt import cuda_backend
    if not cuda_backend._interpreting() and not CUDA:
        pytest.skip("the backend needs a GPU or the Triton interpreter")
    monkeypatch.delenv("IMPACT_RT_COMPILE_HEAD", raising=False)
    monkeypatch.delenv("IMPACT_RT_GEMM_ROWS", raising=False)
    want = 1 if CUDA else cuda_backend.DEFAULT_GEMM_ROWS      # on CUDA the compiled GEMM path for every row count
    assert _backend(tiny_model(0), compile_head=None).gemm_rows == want
    monkeypatch.setenv("IMPACT_RT_GEMM_ROWS", "512")
    assert _backend(tiny_model(0), compile_head=None).gemm_rows == 512
    assert _backend(tiny_model(0), compile_head=None, gemm_rows=64).gemm_rows == 64


def test_head_path_defaults_compiled_gemms_on_cuda_and_the_fused_kernel_elsewhere():
    """Pure: on CUDA inductor and GEMMs for every row count; elsewhere no compile and the fused
    kernel below DEFAULT_GEMM_ROWS; arguments win over the environment, which wins over defaults."""
    from impact_rt.config import ConfigError
    from impact_rt.cuda_backend import DEFAULT_GEMM_ROWS, head_path
    assert head_path("cuda", env={}) == ("inductor", 1)
    assert head_path("cpu", env={}) == ("", DEFAULT_GEMM_ROWS)
    assert head_path("cuda", env={"IMPACT_RT_COMPILE_HEAD": "none"}) == ("", DEFAULT_GEMM_ROWS)
    assert head_path("cuda", "", env={}) == ("", DEFAULT_GEMM_ROWS)
    assert head_path("cuda", env={"IMPACT_RT_GEMM_ROWS": "300"}) == ("inductor", 300)
    assert head_path("cuda", env={"IMPACT_RT_COMPILE_HEAD": "eager"}) == ("eager", 1)
    assert head_path("cpu", "inductor", 64, env={"IMPACT_RT_COMPILE_HEAD": "none"}) == ("inductor", 64)
    with pytest.raises(ConfigError, match="gemm_rows"):
        head_path("cuda", gemm_rows=0, env={})


def test_decode_bench_builds_the_default_and_only_the_paths_asked_for(monkeypatch):
    """bench_fused_sampler --paths: each head path is a backend built at the start (weights cast,
    compile wrappers); paths not asked for are not built. Checked with a stand-in backend."""
    import impact_rt.cuda_backend as cb
    import impact_rt.text_conditioner as tc
    import kernels.bench_fused_sampler as bench
    built = []

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop

    monkeypatch.setattr(cb, "CudaBackend", lambda model, **kw: built.append(kw))
    monkeypatch.setattr(bench, "_base_model", lambda: None)
    monkeypatch.setattr(bench, "_hopper", lambda: True)     # the PDL paths are built on sm_90+ only
    monkeypatch.setattr(tc, "HashConditioner", stop)      # the first step after the backends
    for paths, few, want in ((("gemm_compiled",), None, [{}, {"gemm_rows": 1, "compile_head": "inductor"}]),
                             (("tuned",), None, [{}]),    # no sweep config: nothing to tune with
                             (bench.DECODE_PATHS, "cfg", None)):
        built.clear()
        with pytest.raises(Stop):
            bench.bench_decode(paths=paths, few_rows_config=few)
        kws = [{k: v for k, v in kw.items() if k not in ("device", "precision")} for kw in built]
        if want is not None:
            assert kws == want
        else:
            assert len(kws) == len(bench.DECODE_PATHS) and kws.count({"config": "cfg"}) == 2
    with pytest.raises(ValueError, match="unknown decode paths"):
        bench.bench_decode(paths=("nope",))
