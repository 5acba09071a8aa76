import json

import numpy as np
import pytest
import torch

from impact_rt import bundle as B
from impact_rt.config import ConfigError, DecodeConfig
from impact_rt.pipeline import Pipeline, check_prompts

from helpers import save_bundle


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.random("test")


def test_generate_shape_and_determinism(pipe):
    a = pipe.generate(["thunder", "rain"], seed=3, iterations=2, diffusion_steps=4)
    assert a.audio.shape == (2, 163840) and a.audio.dtype == np.float32 and a.sample_rate == 16000
    assert a.seeds == [3, 4] and np.isfinite(a.audio).all()
    b = pipe.generate(["thunder", "rain"], seed=3, iterations=2, diffusion_steps=4)
    c = pipe.generate(["thunder", "rain"], seed=4, iterations=2, diffusion_steps=4)
    assert np.array_equal(a.audio, b.audio)
    assert not np.allclose(a.audio[0], c.audio[0])


def test_save_is_atomic_and_refuses_overwrite(pipe, tmp_path):
    import soundfile as sf
    g = pipe.generate("thunder", seed=0, iterations=1, diffusion_steps=2)
    p = g.save(tmp_path / "x.wav")
    data, sr = sf.read(p)
    assert sr == 16000 and data.shape == (163840,)
    with pytest.raises(FileExistsError):
        g.save(p)
    assert [q.name for q in tmp_path.iterdir()] == ["x.wav"]  # no temp file left behind


@pytest.mark.parametrize("prompts,match", [
    ([], "no prompt"), ([""], "empty"), (["   "], "empty"), (["a\x00b"], "control"), ([3], "not text"),
])
def test_bad_prompts(prompts, match):
    with pytest.raises(ConfigError, match=match):
        check_prompts(prompts)


def test_long_prompt_truncated_with_warning():
    with pytest.warns(UserWarning, match="truncated"):
        out = check_prompts(["x" * 10000])
    assert len(out[0]) == 2000


def test_bad_seeds(pipe):
    with pytest.raises(ConfigError, match="seed"):
        pipe.generate("a", seed=-1, iterations=1, diffusion_steps=1)
    with pytest.raises(ConfigError, match="seeds for"):
        pipe.generate(["a", "b"], seed=[1], iterations=1, diffusion_steps=1)


def test_negative_prompt_replaces_the_null_condition():
    pipe = Pipeline.random("test")
    kw = dict(seed=[3, 4], iterations=2, diffusion_steps=3)
    prompts = ["thunder", "a dog barking"]
    plain = pipe.generate(prompts, guidance=3.0, **kw)
    neg = pipe.generate(prompts, guidance=3.0, negative_prompt="rain", **kw)
    assert neg.settings["negative_prompts"] == ["rain", "rain"] and "negative_prompts" not in plain.settings
    assert np.abs(neg.audio - plain.audio).max() > 1e-3          # the unconditional branch changed
    # a clip's own prompt as its negative cancels guidance: ε_u + β (ε_c − ε_u) = ε_c, i.e. β = 1
    same = pipe.generate(prompts, guidance=3.0, negative_prompt=prompts, **kw)
    unguided = pipe.generate(prompts, guidance=1.0, **kw)
    np.testing.assert_allclose(same.audio, unguided.audio, rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="1 negative prompts for 2 prompts"):
        pipe.generate(prompts, negative_prompt=["rain"], **kw)
    with pytest.raises(ConfigError, match="empty"):
        pipe.generate(prompts, negative_prompt="  ", **kw)


def test_bundle_round_trip(tmp_path):
    src = Pipeline.random("test")
    d = save_bundle(src, tmp_path / "bundle")
    loaded = Pipeline.from_pretrained(d, backend="torch")
    for (k, v), (k2, v2) in zip(src.model.state_dict().items(), loaded.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    a = src.generate("thunder", seed=1, iterations=2, diffusion_steps=3)
    b = loaded.generate("thunder", seed=1, iterations=2, diffusion_steps=3)
    np.testing.assert_array_equal(a.audio, b.audio)
    h = B.bundle_hash(d)
    (d / "impact.safetensors").write_bytes(b"garbage")
    assert B.bundle_hash(d) != h
    with pytest.raises(B.BundleError, match="corrupt"):
        Pipeline.from_pretrained(d)


def test_load_module_takes_every_tensor_from_the_state_and_draws_no_random_numbers():
    from impact_rt.config import preset
    from impact_rt.model import IMPACT
    torch.manual_seed(0)
    src = IMPACT(preset("test"))
    state = {k: v.half() for k, v in src.state_dict().items()}      # as a bundle stores them
    rng = torch.get_rng_state()
    got = B.load_module(lambda: IMPACT(preset("test")), state)
    assert torch.equal(torch.get_rng_state(), rng)                     # no random initialisation ran
    for k, v in got.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k
    assert all(p.requires_grad for p in got.parameters())
    with pytest.raises(RuntimeError, match="Missing key"):
        B.load_module(lambda: IMPACT(preset("test")), {k: v for k, v in state.items() if k != "null_condition"})
    with pytest.raises(RuntimeError, match="size mismatch"):
        B.load_module(lambda: IMPACT(preset("test")), {**state, "null_condition": state["null_condition"][:, :2]})

    class WithTable(torch.nn.Module):                                   # a buffer no file holds
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("table", torch.ones(3), persistent=False)
    with pytest.raises(RuntimeError, match="not given by the weights.*table"):
        B.load_module(WithTable, {"lin.weight": torch.ones(2, 2), "lin.bias": torch.ones(2)})


def test_loading_a_bundle_does_not_import_dynamo(tmp_path):
    """Meta-device normal_ (nn.Embedding's init, MAR's) goes through torch._refs, which imports
    torch._dynamo: ~1 s of every CLI run (session 19). Checked in a fresh interpreter."""
    import subprocess
    import sys
    d = save_bundle(Pipeline.random("test"), tmp_path / "bundle")
    code = ("import sys, torch; before = 'torch._dynamo' in sys.modules; from impact_rt.pipeline import Pipeline; "
            f"Pipeline.from_pretrained({str(d)!r}, backend='torch'); "
            "from impact_rt.text_conditioner import MiniLMConditioner; MiniLMConditioner(); "
            "assert before or 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("preset", ["test", "test-gl"])
def test_bundle_with_a_vocos_vocoder(tmp_path, preset):
    """A bundle whose config names a trained Vocos loads it from vocoder.safetensors and every
    CPU backend runs it; a kind that disagrees with the file is a one-line BundleError."""
    from impact_rt.vocoder import Vocos
    src = Pipeline.random("test")
    d = save_bundle(src, tmp_path / "bundle", vocoder={"kind": "vocos"})
    voc = Vocos(preset, seed=2).eval()
    torch.nn.init.normal_(voc.head.weight, std=0.02)
    voc.save_pretrained(str(d), "vocoder", dtype=torch.float16)
    loaded = Pipeline.from_pretrained(d, backend="torch")
    assert isinstance(loaded.vocoder, Vocos) and loaded.vocoder.config.phase == voc.config.phase
    a = loaded.generate("thunder", seed=1, iterations=2, diffusion_steps=3)
    b = Pipeline.from_pretrained(d, backend="cpu", precision="fp32").generate("thunder", seed=1, iterations=2,
                                                                              diffusion_steps=3)
    assert a.audio.shape == b.audio.shape and np.isfinite(a.audio).all()
    np.testing.assert_allclose(a.audio, b.audio, atol=2e-3)
    save_bundle(src, d, vocoder={"kind": "hifigan"})
    with pytest.raises(B.BundleError, match="Vocos"):
        Pipeline.from_pretrained(d)


def test_a_prompt_table_stands_in_for_the_text_encoder(tmp_path):
    from impact_rt.text_conditioner import HashConditioner, write_prompt_table
    src = Pipeline.random("test")
    d = save_bundle(src, tmp_path / "bundle")
    table = write_prompt_table(src.conditioner, ["thunder", "rain", "thunder"], tmp_path / "t.safetensors")
    via = Pipeline.from_pretrained(d, backend="torch", prompt_table=table)
    kw = dict(seed=[1, 2], iterations=2, diffusion_steps=3)
    np.testing.assert_array_equal(via.generate(["rain", "thunder"], **kw).audio,
                                  src.generate(["rain", "thunder"], **kw).audio)
    with pytest.raises(ConfigError, match=r"'a dog' is not in the prompt table .*\(2 prompts\)"):
        via.generate("a dog", seed=1, iterations=2, diffusion_steps=3)
    other = write_prompt_table(HashConditioner(src.model.cfg.text_len, src.model.cfg.text_dim, seed=7), ["rain"],
                               tmp_path / "other.safetensors")
    with pytest.raises(B.BundleError, match="written by conditioner .*'seed': 7"):
        Pipeline.from_pretrained(d, backend="torch", prompt_table=other)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(ConfigError, match="is not a prompt table"):
        Pipeline.from_pretrained(d, backend="torch", prompt_table=tmp_path / "bad.safetensors")


def test_missing_bundle_and_unknown_backend(tmp_path):
    with pytest.raises(B.BundleError, match="not found"):
        Pipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(B.BundleError, match="not valid JSON"):
        Pipeline.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="unknown backend"):
        Pipeline.from_pretrained(tmp_path, backend="vulkan")
    with pytest.raises(ConfigError, match="not available"):
        Pipeline.from_pretrained(tmp_path, backend="tensorrt")


def _latent_std(pipe, **kw) -> float:
    seen = {}
    audio = pipe.backend.audio

    def keep(tokens):
        seen["tokens"] = tokens.clone()
        return audio(tokens)

    pipe.backend.audio = keep
    try:
        pipe.generate(["thunder", "a dog barking"], seed=0, iterations=2, diffusion_steps=100, **kw)
    finally:
        pipe.backend.audio = audio
    return float(seen["tokens"].std())


def test_shipped_model_samples_latents_at_the_data_scale(monkeypatch):
    """The VAE's scale factor makes the data's latents ~unit scale. Sampling from t = 999 (ᾱ =
    2.4e-9) made the shipped model's latents ~800x larger (session 4); the negative control
    restores that schedule and must see it."""
    from impact_rt import ddpm
    pipe = Pipeline.from_pretrained(backend="torch")
    assert 0.3 < _latent_std(pipe) < 3.0
    monkeypatch.setattr(ddpm, "sampling_schedule", lambda train, steps: ddpm.Schedule.cosine(train).respace(steps))
    pipe._tables.clear()
    assert _latent_std(pipe) > 10.0


def test_auto_checks_backends_in_order_and_stops_at_the_first_that_runs(monkeypatch):
    import impact_rt.backends as B
    from impact_rt.pipeline import resolve_backend
    seen = []
    monkeypatch.setattr(B, "available", lambda name: (seen.append(name), (name == "cpu", "why"))[1])
    assert resolve_backend("auto") == "cpu" and seen == ["tensorrt", "cuda", "cpu"]
    seen.clear()
    with pytest.raises(ConfigError, match="backend onnxruntime is not available here: why"):
        resolve_backend("onnxruntime")
    assert seen == ["onnxruntime"]


def test_audio_is_clipped_to_full_scale_and_the_clipped_share_reported():
    """The vocoder can overshoot [-1, 1] (the shipped model: ~2 % of samples): the API returns what a file
    holds, and says per clip how much was clipped and the peak before clipping (parity tests scale their
    tolerance by it, as they did by the unclipped audio)."""
    import torch
    p = Pipeline.random("test")
    wav = torch.zeros(2, 8)
    wav[0, :2] = torch.tensor([3.0, -1.5])          # 2 of 8 samples beyond full scale
    wav[1, 0] = 1.0                                  # full scale itself is not clipped
    p.backend.audio = lambda tokens: wav.clone()
    g = p.generate(["a", "b"], seed=0, iterations=1, diffusion_steps=2)
    assert g.settings["clipped"] == [0.25, 0.0] and g.settings["peak"] == [3.0, 1.0]
    assert g.audio[0, :2].tolist() == [1.0, -1.0] and g.audio[1, 0] == 1.0 and float(abs(g.audio).max()) == 1.0


def test_a_bundle_can_default_to_refinement_and_a_call_can_turn_it_off(tmp_path):
    src = Pipeline.random("test")
    d = save_bundle(src, tmp_path / "bundle",
                    defaults=DecodeConfig(iterations=2, diffusion_steps=3, refine=1, refine_share=0.5))
    assert json.loads((d / "config.json").read_text())["decode"]["refine"] == 1
    pipe = Pipeline.from_pretrained(d, backend="torch")
    steps = []
    refined = pipe.generate("thunder", seed=1, progress=lambda t, n: steps.append(n))
    plain = pipe.generate("thunder", seed=1, refine=0)
    assert refined.settings["refine"] == 1 and refined.settings["refine_share"] == 0.5
    assert "refine" not in plain.settings and set(steps) == {3}       # 2 iterations + the pass's last one
    assert not np.array_equal(refined.audio, plain.audio)
    assert np.array_equal(pipe.generate("thunder", seed=1).audio, refined.audio)
