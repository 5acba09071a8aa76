"""Training of the VAE and the vocoder (training/): data, one step, checkpoint/resume, export."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from impact_rt.vae import AutoencoderKL
from impact_rt.vocoder import HifiGan, Vocos
from training import audio_dataset as D
from training import train_vae, train_vocoder


@pytest.fixture()
def corpus(tmp_path):
    """Three short synthetic files (two rates, one stereo) and a manifest with relative paths."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "audio"
    folder.mkdir()
    names = []
    for i, (sr, seconds) in enumerate([(16000, 1.5), (22050, 0.8), (16000, 0.2)]):
        t = np.arange(int(sr * seconds)) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t) + 0.05 * rng.standard_normal(t.size)
        if i == 1:
            x = np.stack([x, 0.5 * x], 1)
        name = f"clip{i}.{'flac' if i == 1 else 'wav'}"
        sf.write(folder / name, x.astype(np.float32), sr)
        names.append(name)
    manifest = tmp_path / "train.csv"
    manifest.write_text("file,caption\n" + "".join(f"audio/{n},a sound\n" for n in names))
    return {"manifest": str(manifest), "folder": str(folder), "files": names}


COMMON = ["--preset", "test", "--batch-size", "2", "--crop-frames", "32", "--warmup", "0", "--quiet"]


def test_list_audio_files(corpus):
    from_manifest = D.list_audio_files(manifest=corpus["manifest"])
    from_folder = D.list_audio_files(folder=corpus["folder"])
    assert sorted(from_manifest) == sorted(from_folder) and len(from_folder) == 3
    with pytest.raises(ValueError):
        D.list_audio_files()


def test_step_batches_deterministic_crops(corpus):
    files = D.list_audio_files(folder=corpus["folder"])
    batches = D.StepBatches(files, batch_size=3, n_samples=160 * 32, seed=5)
    b = batches[7]
    assert b["wav"].shape == (3, 5120) and b["mel"].shape == (3, 32, 64)
    torch.testing.assert_close(b["wav"].abs().amax(-1), torch.full((3,), 0.5), rtol=1e-4, atol=0)
    again = D.StepBatches(files, batch_size=3, n_samples=160 * 32, seed=5)[7]
    assert torch.equal(b["wav"], again["wav"]) and torch.equal(b["mel"], again["mel"])
    assert not torch.equal(b["wav"], batches[8]["wav"])
    assert not torch.equal(b["wav"], D.StepBatches(files, 3, 160 * 32, seed=5, rank=1)[7]["wav"])
    rng = np.random.default_rng(0)
    short = D.random_crop(torch.ones(100), 300, rng)
    assert short.shape == (300,) and short[100:].abs().sum() == 0


def test_optimizer_state_roundtrip_without_pickle():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    tensors, info = D.optimizer_tensors(opt, "optim.g")
    json.dumps(info)  # the non-tensor part is plain JSON
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    D.load_optimizer(opt2, tensors, json.loads(json.dumps(info)), "optim.g")
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for k, v in s1["state"][pid].items():
            assert torch.equal(v, s2["state"][pid][k])


def _fixed_batch_losses(trainer, batch, steps, key):
    losses = []
    for step in range(steps):
        torch.manual_seed(step)
        losses.append(trainer.train_step(batch, step)[key])
    return losses


def test_vae_training_step_lowers_loss(corpus):
    args = train_vae.build_parser().parse_args(
        ["--manifest", corpus["manifest"], "--out", "unused", "--lr", "3e-3", *COMMON])
    torch.manual_seed(0)
    trainer = train_vae.VAETrainer(args, torch.device("cpu"))
    batch = D.StepBatches(D.list_audio_files(manifest=corpus["manifest"]), 2, 160 * 32)[0]
    losses = _fixed_batch_losses(trainer, batch, 6, "loss")
    assert losses[-1] < 0.9 * losses[0]


def test_vocoder_training_step_lowers_loss(corpus):
    args = train_vocoder.build_parser().parse_args(
        ["--manifest", corpus["manifest"], "--out", "unused", "--lr", "2e-3", "--disc-width", "0.0625", *COMMON])
    torch.manual_seed(0)
    trainer = train_vocoder.VocoderTrainer(args, torch.device("cpu"))
    assert trainer.disc is not None
    batch = D.StepBatches(D.list_audio_files(manifest=corpus["manifest"]), 2, 160 * 32)[0]
    losses = _fixed_batch_losses(trainer, batch, 5, "mel_l1")
    assert losses[-1] < 0.9 * losses[0]


def _run(module, out, corpus, steps, extra=()):
    return module.main(["--manifest", corpus["manifest"], "--out", str(out), "--steps", str(steps),
                        *COMMON, *extra])


def _row(out, step):
    return [r for r in D.read_log(str(out / "log.csv")) if r["step"] == step][-1]


@pytest.mark.parametrize("module,extra,keys", [
    (train_vae, ["--lr", "1e-3", "--scale-batches", "2"], ["loss", "l1", "kl"]),
    (train_vocoder, ["--disc-width", "0.0625"], ["loss", "d_loss", "mel_l1", "fm"]),
    (train_vocoder, ["--arch", "vocos", "--no-gan", "--lr", "1e-3"], ["loss", "mel_l1", "stft"]),
])
def test_resume_gives_the_same_next_step(tmp_path, corpus, module, extra, keys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(module, straight, corpus, 3, extra)
    _run(module, resumed, corpus, 2, extra)
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    _run(module, resumed, corpus, 3, extra)  # resumes at step 2
    a, b = _row(straight, 3), _row(resumed, 3)
    for k in keys:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), k
    # and the weights after that step agree too
    from safetensors.torch import load_file

    wa = load_file(str(straight / "checkpoint" / "checkpoint.safetensors"))
    wb = load_file(str(resumed / "checkpoint" / "checkpoint.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7, msg=k)


def test_vae_export_has_measured_scale_factor(tmp_path, corpus):
    out = tmp_path / "vae"
    result = _run(train_vae, out, corpus, 2, ["--scale-batches", "2", "--export-dtype", "float16"])
    info = json.loads((out / "export" / "vae.json").read_text())
    assert info["dtype"] == "float16"
    assert info["scale_factor"] == pytest.approx(result["scale_factor"]) and result["scale_factor"] != 1.0
    vae = AutoencoderKL.from_pretrained(str(out / "export"))
    assert float(vae.scale_factor) == pytest.approx(result["scale_factor"], rel=1e-6)
    assert not any(p.suffix in (".pt", ".pth", ".ckpt", ".pkl") for p in out.rglob("*"))


def test_vae_decoder_fine_tune_keeps_the_latent_space(tmp_path, corpus):
    """--init + --freeze-encoder: the decoder moves, the encoder, quant_conv and scale factor stay
    bit for bit, so latents a generator was trained on still decode."""
    base = tmp_path / "vae"
    _run(train_vae, base, corpus, 2, ["--scale-batches", "2"])
    tuned = tmp_path / "tuned"
    result = _run(train_vae, tuned, corpus, 3, ["--init", str(base / "export"), "--freeze-encoder", "--lr", "1e-3"])
    a = AutoencoderKL.from_pretrained(str(base / "export"))
    b = AutoencoderKL.from_pretrained(str(tuned / "export"))
    assert result["scale_factor"] == float(a.scale_factor) == float(b.scale_factor)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        frozen = k.startswith(("encoder.", "quant_conv.")) or k == "scale_factor"
        assert torch.equal(sa[k], sb[k]) == frozen or not sa[k].is_floating_point(), k
    with pytest.raises(SystemExit):
        _run(train_vae, tmp_path / "bad", corpus, 1, ["--freeze-encoder"])


def test_vocoder_no_gan_mode_and_export(tmp_path, corpus):
    out = tmp_path / "voc"
    _run(train_vocoder, out, corpus, 2, ["--no-gan"])
    rows = D.read_log(str(out / "log.csv"))
    assert len(rows) == 2 and "stft" in rows[0] and "d_loss" not in rows[0]
    voc = HifiGan.from_pretrained(str(out / "export"))
    assert not voc.has_weight_norm
    with torch.no_grad():
        assert voc(torch.randn(1, 10, 64)).shape == (1, 1600)


def test_vocos_training_lowers_loss_and_exports(tmp_path, corpus, capsys):
    """--arch vocos: one step of the frame-rate vocoder lowers the mel loss on a fixed batch (with
    that batch's noise phases), and --export-only writes the export from a checkpoint."""
    args = train_vocoder.build_parser().parse_args(
        ["--manifest", corpus["manifest"], "--out", "unused", "--arch", "vocos", "--no-gan", "--lr", "3e-3", *COMMON])
    torch.manual_seed(0)
    trainer = train_vocoder.VocoderTrainer(args, torch.device("cpu"))
    assert isinstance(trainer.gen, Vocos) and trainer.disc is None
    batch = D.StepBatches(D.list_audio_files(manifest=corpus["manifest"]), 2, 160 * 32)[0]
    losses = [trainer.train_step(batch, 0)["mel_l1"] for _ in range(10)]
    assert losses[-1] < 0.92 * losses[0]

    out = tmp_path / "vocos"
    _run(train_vocoder, out, corpus, 2, ["--arch", "vocos", "--no-gan"])
    exported = Vocos.from_pretrained(str(out / "export"))
    (out / "export" / "vocoder.safetensors").unlink()
    result = train_vocoder.main(["--manifest", corpus["manifest"], "--out", str(out), "--arch", "vocos",
                                 "--export-only", *COMMON])
    assert result["step"] == 2
    again = Vocos.from_pretrained(str(out / "export"))
    for k, t in exported.state_dict().items():
        assert torch.equal(t, again.state_dict()[k]), k
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_vocoder.main(["--manifest", corpus["manifest"], "--out", str(tmp_path / "none"), "--arch", "vocos",
                            "--export-only", *COMMON])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("train_vocoder: error: no checkpoint")


def test_minutes_limit_stops_and_checkpoints(tmp_path, corpus):
    out = tmp_path / "timed"
    result = _run(train_vocoder, out, corpus, 1000, ["--no-gan", "--minutes", "0"])
    assert result["step"] == 1  # one step, then the time budget is spent
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1
