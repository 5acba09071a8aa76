"""Bad input through the CLI and the API: one line naming the problem, the right exit code,
no traceback, nothing written or clobbered."""
import os
import subprocess
import sys
import warnings

import pytest

from impact_rt import bundle as B
from impact_rt.config import ConfigError
from impact_rt.pipeline import Pipeline

from helpers import save_bundle


def cli(args, cwd):
    p = subprocess.run([sys.executable, "-m", "impact_rt.cli", *args], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return p.returncode, p.stdout, p.stderr


def _corrupt_bundle(tmp, kind):
    d = tmp / f"bundle-{kind}"
    src = Pipeline.random("test")
    save_bundle(src, d, vocoder={"kind": "griffinlim", "n_iter": 4})
    if kind == "garbage-weights":
        (d / "impact.safetensors").write_bytes(b"\x00" * 100)
    elif kind == "missing-weights":
        (d / "impact.safetensors").unlink()
    elif kind == "bad-json":
        (d / "config.json").write_text("{")
    elif kind == "wrong-shapes":
        import json
        raw = json.loads((d / "config.json").read_text())
        raw["model"]["dim"] = 64
        raw["model"]["num_heads"] = 2
        (d / "config.json").write_text(json.dumps(raw))
    elif kind == "missing-vae":
        (d / "vae.safetensors").unlink()
    elif kind in ("bad-rerank", "rerank-without-scorer", "corrupt-scorer"):
        import json
        raw = json.loads((d / "config.json").read_text())
        raw["rerank"] = {"candidates": 0 if kind == "bad-rerank" else 2}
        (d / "config.json").write_text(json.dumps(raw))
        if kind == "corrupt-scorer":
            (d / "scorer.json").write_text('{"dim": 8}')
            (d / "scorer.safetensors").write_bytes(b"\x00" * 64)
    elif kind in ("config-list", "bad-decode", "null-vocoder", "bad-conditioner"):
        import json
        raw = json.loads((d / "config.json").read_text())
        if kind == "config-list":
            raw = []
        elif kind == "bad-decode":
            raw["decode"]["guidance"] = "x"
        elif kind == "null-vocoder":
            raw["vocoder"] = None
        else:
            raw["conditioner"] = {"kind": "no-such-encoder"}
        (d / "config.json").write_text(json.dumps(raw))
    elif kind == "nan-vae":
        from safetensors.torch import load_file, save_file
        state = load_file(str(d / "vae.safetensors"))
        name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[name][0] = float("nan")
        save_file(state, str(d / "vae.safetensors"))
    elif kind == "wrong-format":
        import json
        raw = json.loads((d / "config.json").read_text())
        raw["format"] = "something-else"
        (d / "config.json").write_text(json.dumps(raw))
    return d


FAST = ["-T", "1", "-K", "2"]

# (id, CLI args (PROMPT files prepared by name), exit code, text the one error line must contain)
CASES = [
    ("empty prompt", ["generate", ""], 2, "empty"),
    ("whitespace prompt", ["generate", "   \t"], 2, "empty"),
    ("control characters", ["generate", "thun\x07der"], 2, "control"),
    ("no prompt at all", ["generate"], 2, "no prompt"),
    ("empty negative prompt", ["generate", "x", "--negative-prompt", " "], 2, "negative prompt 1 is empty"),
    ("T zero", ["generate", "x", "-T", "0"], 2, "iterations"),
    ("T negative", ["generate", "x", "-T", "-3"], 2, "iterations"),
    ("T above N", ["generate", "x", "-T", "257"], 2, "iterations"),
    ("T not a number", ["generate", "x", "-T", "many"], 2, "invalid int"),
    ("K zero", ["generate", "x", "-K", "0"], 2, "diffusion steps"),
    ("K above 1000", ["generate", "x", "-K", "1001"], 2, "diffusion steps"),
    ("guidance NaN", ["generate", "x", "--guidance", "nan"], 2, "guidance"),
    ("guidance negative", ["generate", "x", "--guidance", "-1"], 2, "guidance"),
    ("guidance infinite", ["generate", "x", "--guidance", "inf"], 2, "guidance"),
    ("temperature negative", ["generate", "x", "--temperature", "-0.5"], 2, "temperature"),
    ("temperature NaN", ["generate", "x", "--temperature", "nan"], 2, "temperature"),
    ("refine negative", ["generate", "x", "--refine", "-1"], 2, "refine must be an integer in 0..8"),
    ("refine too many", ["generate", "x", "--refine", "9"], 2, "refine must be an integer in 0..8"),
    ("unknown backend", ["generate", "x", "--backend", "vulkan"], 2, "invalid choice"),
    ("unknown precision", ["generate", "x", "--precision", "int4"], 2, "invalid choice"),
    ("precision the backend lacks", ["generate", "x", "--backend", "cpu", "--precision", "fp16"] + FAST,
     2, "not available for the cpu backend"),
    ("precision the reference lacks", ["generate", "x", "--backend", "torch", "--precision", "bf16"] + FAST,
     2, "torch backend"),
    ("backend not available here", ["generate", "x", "--backend", "tensorrt"], 2, "not available"),
    ("missing model folder", ["generate", "x", "--model", "/nonexistent/model"], 1, "not found"),
    ("garbage weights", ["generate", "x", "--model", "@garbage-weights"] + FAST, 1, "corrupt"),
    ("missing weights", ["generate", "x", "--model", "@missing-weights"] + FAST, 1, "impact.safetensors"),
    ("config not JSON", ["generate", "x", "--model", "@bad-json"] + FAST, 1, "JSON"),
    ("weights do not match config", ["generate", "x", "--model", "@wrong-shapes"] + FAST, 1, "do not match"),
    ("missing VAE", ["generate", "x", "--model", "@missing-vae"] + FAST, 1, "vae"),
    ("not a bundle", ["generate", "x", "--model", "@wrong-format"] + FAST, 1, "not an impact-rt bundle"),
    ("bad candidate count in a bundle", ["generate", "x", "--model", "@bad-rerank"] + FAST, 1, "rerank.candidates"),
    ("reranking bundle without its scorer", ["generate", "x", "--model", "@rerank-without-scorer"] + FAST, 1, "no scorer"),
    ("corrupt scorer", ["generate", "x", "--model", "@corrupt-scorer"] + FAST, 1, "scorer"),
    ("candidates zero", ["generate", "x", "--candidates", "0"], 2, "--candidates"),
    ("candidates too many", ["generate", "x", "--candidates", "65"], 2, "--candidates"),
    ("candidates without a scorer", ["generate", "x", "--model", "@plain", "--candidates", "2"] + FAST,
     2, "scorer"),
    ("non-UTF-8 prompts file", ["generate", "--prompts-file", "latin1.txt"], 2, "not UTF-8"),
    ("missing prompts file", ["generate", "--prompts-file", "nope.txt"], 2, "not found"),
    ("empty prompts file", ["generate", "--prompts-file", "empty.txt"], 2, "no prompt"),
    ("CSV without caption", ["generate", "--prompts-file", "bad.csv"], 2, "caption"),
    ("output folder missing", ["generate", "x", "--out-dir", "missing-dir"], 2, "does not exist"),
    ("output folder is a file", ["generate", "x", "--out-dir", "latin1.txt"], 2, "not a folder"),
    ("-o and --out-dir", ["generate", "x", "-o", "c.wav", "--out-dir", "."], 2, "give one"),
    ("-o extension against --format", ["generate", "x", "-o", "c.wav", "--format", "flac"], 2, "--format says flac"),
    ("-o unknown extension with --format", ["generate", "x", "-o", "c.mp3", "--format", "wav"], 2, "extension .mp3"),
    ("prompts file is a folder", ["generate", "--prompts-file", "."], 2, "is a folder"),
    ("CSV header without rows", ["generate", "--prompts-file", "header.csv"], 2, "no rows"),
    ("CSV row without its caption", ["generate", "--prompts-file", "short.csv"], 2, "line 2: no caption"),
    ("model path is a file", ["generate", "x", "--model", "latin1.txt"], 1, "is a file"),
    ("config.json not an object", ["generate", "x", "--model", "@config-list"] + FAST, 1, "JSON object"),
    ("decode default not a number", ["generate", "x", "--model", "@bad-decode"] + FAST, 1, "guidance"),
    ("vocoder entry null", ["generate", "x", "--model", "@null-vocoder"] + FAST, 1, "'vocoder' must be"),
    ("unknown conditioner kind", ["generate", "x", "--model", "@bad-conditioner"] + FAST, 1, "conditioner"),
    ("NaN in the VAE's weights", ["generate", "x", "--model", "@nan-vae"] + FAST, 1, "non-finite"),
    ("unwritable output", ["generate", "x", "-o", "/proc/impact.wav"] + FAST, 1, "/proc"),
    ("existing output", ["generate", "x", "-o", "existing.wav"], 2, "exists"),
    ("-o with many clips", ["generate", "x", "y", "-o", "two.wav"], 2, "one file"),
    ("unknown extension", ["generate", "x", "-o", "clip.mp3"], 2, "extension"),
    ("unknown --format", ["generate", "x", "--format", "mp3"], 2, "invalid choice"),
    ("-o names a folder", ["generate", "x", "-o", "."], 2, "is a folder"),
    ("-o without an extension", ["generate", "x", "-o", "clip"], 2, "no file extension"),
    ("-n zero", ["generate", "x", "-n", "0"], 2, "-n"),
    ("batch size zero", ["generate", "x", "--batch-size", "0"], 2, "batch-size"),
    ("negative seed", ["generate", "x", "--seed", "-1"], 2, "seed"),
    ("seed past 2**63", ["generate", "x", "--seed", str(2 ** 63)], 2, "--seed must be in 0..9223372036854775807"),
    ("last clip's seed past 2**63", ["generate", "x", "-n", "2", "--seed", str(2 ** 63 - 1)], 2, "for 2 clip(s)"),
    ("unknown command", ["compose", "x"], 2, "invalid choice"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "latin1.txt").write_bytes("caf\xe9 sounds\n".encode("latin-1"))
    (d / "empty.txt").write_text("\n \n")
    (d / "bad.csv").write_text("id,text\n1,thunder\n")
    (d / "header.csv").write_text("id,caption\n")
    (d / "short.csv").write_text("id,caption\n1\n")
    (d / "existing.wav").write_bytes(b"keep me")
    for kind in ("garbage-weights", "missing-weights", "bad-json", "wrong-shapes", "missing-vae", "wrong-format",
                 "bad-rerank", "rerank-without-scorer", "corrupt-scorer", "plain", "config-list", "bad-decode",
                 "null-vocoder", "bad-conditioner", "nan-vae"):
        _corrupt_bundle(d, kind)
    return d


def _listing(d):
    return sorted((p.name, p.stat().st_size) for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input(workdir, case):
    _, args, code, needle = case
    args = [str(workdir / f"bundle-{a[1:]}") if a.startswith("@") else a for a in args]
    before = _listing(workdir)
    rc, out, err = cli(args, workdir)
    assert rc == code, err
    lines = [l for l in err.strip().splitlines() if not l.startswith("impact-rt: warning:")]
    assert len(lines) == 1 and lines[0].startswith("impact-rt: error:"), err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err and out == ""
    assert _listing(workdir) == before  # nothing written, nothing clobbered


API_CASES = [
    ("empty prompt", dict(prompts=[""]), ConfigError, "empty"),
    ("no prompts", dict(prompts=[]), ConfigError, "no prompt"),
    ("control characters", dict(prompts=["a\x1bb"]), ConfigError, "control"),
    ("not text", dict(prompts=[None]), ConfigError, "not text"),
    ("prompts not a list", dict(prompts=None), ConfigError, "a string or a list of strings"),
    ("prompts as bytes", dict(prompts=b"rain"), ConfigError, "not bytes"),
    ("guidance not a number", dict(guidance="x"), ConfigError, "guidance must be a number"),
    ("negative prompts miscounted", dict(negative_prompt=["a", "b"]), ConfigError, "2 negative prompts for 1"),
    ("T zero", dict(iterations=0), ConfigError, "iterations"),
    ("T above N", dict(iterations=300), ConfigError, "iterations"),
    ("T not an int", dict(iterations=2.5), ConfigError, "iterations"),
    ("K zero", dict(diffusion_steps=0), ConfigError, "diffusion steps"),
    ("K above 1000", dict(diffusion_steps=5000), ConfigError, "diffusion steps"),
    ("K above the sampling start", dict(diffusion_steps=994), ConfigError, "1..993"),
    ("guidance NaN", dict(guidance=float("nan")), ConfigError, "guidance"),
    ("guidance below 1", dict(guidance=0.5), ConfigError, "guidance"),
    ("temperature negative", dict(temperature=-1.0), ConfigError, "temperature"),
    ("refine not an int", dict(refine=0.5), ConfigError, "refine must be an integer"),
    ("seed negative", dict(seed=-5), ConfigError, "seed"),
    ("last seed past 2**63", dict(prompts=["a", "b"], seed=2 ** 63 - 1), ConfigError, "seed"),
    ("seed not an int", dict(seed="abc"), ConfigError, "seed"),
    ("seed list length", dict(prompts=["a", "b"], seed=[1, 2, 3]), ConfigError, "seeds for"),
]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.random("test")


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(pipe, case):
    _, kw, exc, needle = case
    kw = {"prompts": ["thunder"], "iterations": 1, "diffusion_steps": 2, **kw}
    with pytest.raises(exc) as e:
        pipe.generate(kw.pop("prompts"), **kw)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


@pytest.mark.parametrize("kind,match", [
    ("garbage-weights", "corrupt"), ("missing-weights", "impact.safetensors"), ("bad-json", "JSON"),
    ("wrong-shapes", "do not match"), ("missing-vae", "vae"), ("wrong-format", "not an impact-rt bundle"),
    ("bad-rerank", "rerank.candidates"), ("rerank-without-scorer", "no scorer"), ("corrupt-scorer", "scorer"),
    ("config-list", "JSON object"), ("bad-decode", "guidance"), ("null-vocoder", "vocoder"),
    ("bad-conditioner", "conditioner"), ("nan-vae", "non-finite"),
])
def test_api_bad_bundles(tmp_path, kind, match):
    d = _corrupt_bundle(tmp_path, kind)
    with pytest.raises(B.BundleError, match=match):
        Pipeline.from_pretrained(d)


def test_api_devices_that_do_not_run_here_are_config_errors():
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device cuda is not available here"):
            Pipeline.random("test", device="cuda")
    with pytest.raises(ConfigError, match="unknown device 'foo'"):
        Pipeline.from_pretrained(device="foo")
    with pytest.raises(ConfigError, match="torch backend"):
        Pipeline.random("test", backend="torch", precision="bogus")


def test_api_closed_pipeline_and_non_finite_audio_are_one_line_errors(tmp_path):
    import torch
    p = Pipeline.random("test")
    with torch.no_grad():
        next(p.vae.decoder.parameters()).fill_(float("nan"))    # weights broken after loading
    with pytest.raises(RuntimeError, match="NaN or infinity"):
        p.generate("x", seed=0, iterations=1, diffusion_steps=2)
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.generate("x", seed=0, iterations=1, diffusion_steps=2)


def test_api_save_honours_format_and_names_a_missing_folder(tmp_path):
    import soundfile as sf
    g = Pipeline.random("test").generate("x", seed=0, iterations=1, diffusion_steps=2)
    g.save(tmp_path / "clip", format="flac")
    assert sf.info(tmp_path / "clip").format == "FLAC"
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        g.save(tmp_path / "missing" / "a.wav")
    with pytest.raises(TypeError):
        g.save(tmp_path / "b.wav", 0, True)       # format and force are keyword-only
    assert sorted(f.name for f in tmp_path.iterdir()) == ["clip"]


def test_api_unknown_and_unavailable_backend():
    with pytest.raises(ConfigError, match="unknown backend"):
        Pipeline.from_pretrained(backend="vulkan")
    with pytest.raises(ConfigError, match="not available"):
        Pipeline.from_pretrained(backend="tensorrt")


def test_long_prompt_is_truncated_with_a_warning_not_an_error(pipe):
    with pytest.warns(UserWarning) as caught:
        g = pipe.generate(["rain " * 2000], seed=0, iterations=1, diffusion_steps=2)
    assert [str(w.message).split(";")[-1].strip() for w in caught] == [
        "truncated to 2000", f"only its first {pipe.conditioner.length - 1} are used"]
    assert len(g.prompts[0]) <= 2000


def test_a_prompt_longer_than_the_text_window_is_named_in_a_warning(pipe):
    n = pipe.conditioner.length - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.generate(["rain " * n], seed=0, iterations=1, diffusion_steps=2)      # fits: silent
    with pytest.warns(UserWarning, match=f"prompt 'rain rain .*' is longer than the text encoder's {n} tokens"):
        pipe.generate(["rain " * (n + 1)], seed=0, iterations=1, diffusion_steps=2)


def test_cli_refuses_a_tampered_engine_bundle(tmp_path):
    d = _corrupt_bundle(tmp_path, "intact")
    env = {**os.environ, "IMPACT_RT_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "impact_rt.cli", "generate", "x", "--model", str(d), "--backend", "onnxruntime",
            "-T", "1", "-K", "2", "-q"]
    p = subprocess.run(args + ["-o", str(tmp_path / "a.wav")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    enc = next((tmp_path / "cache").rglob("encoder.onnx"))
    enc.write_bytes(enc.read_bytes() + b"\0")
    p = subprocess.run(args + ["-o", str(tmp_path / "b.wav")], capture_output=True, text=True, env=env)
    lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("impact-rt: warning:")]
    assert p.returncode == 1 and len(lines) == 1 and "encoder.onnx" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "b.wav").exists()
