"""train_vae's and train_vocoder's command lines: one-line errors (exit 2) before any output, and a
resume that refuses a checkpoint of another configuration."""
import numpy as np
import pytest
import soundfile as sf

from training import train_vae, train_vocoder
from helpers import exit_status, one_line_error

COMMON = ["--preset", "test", "--batch-size", "2", "--crop-frames", "32", "--warmup", "0", "--quiet",
          "--threads", "1"]


@pytest.fixture()
def manifest(tmp_path):
    t = np.arange(8000) / 16000
    for i in range(2):
        sf.write(tmp_path / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 16000)
    m = tmp_path / "m.csv"
    m.write_text("file,caption\nc0.wav,a\nc1.wav,b\n")
    return str(m)


@pytest.mark.parametrize("module, who", [(train_vae, "train_vae"), (train_vocoder, "train_vocoder")])
def test_bad_data_sources_are_one_line_errors_and_make_no_run_folder(tmp_path, capsys, manifest, module, who):
    out = tmp_path / "run"
    (tmp_path / "nonutf.csv").write_bytes(b"file\n\xff\xfe.wav\n")
    (tmp_path / "missing.csv").write_text("file\nc0.wav\nnot-there.wav\n")
    (tmp_path / "nofile.csv").write_text("path\nc0.wav\n")
    (tmp_path / "empty").mkdir()
    cases = [(["--manifest", str(tmp_path / "none.csv")], "manifest not found"),
             (["--manifest", str(tmp_path)], "is a folder"),
             (["--manifest", str(tmp_path / "nonutf.csv")], "not a UTF-8 text file"),
             (["--manifest", str(tmp_path / "missing.csv")], "1 audio files that do not exist"),  # failed mid-run
             (["--manifest", str(tmp_path / "nofile.csv")], "no 'file' column"),
             (["--folder", str(tmp_path / "nowhere")], "audio folder not found"),
             (["--folder", str(tmp_path / "empty")], "no audio files found"),
             ([], "give --manifest or --folder")]
    for source, words in cases:
        assert exit_status(module.main, [*source, "--out", str(out), "--steps", "1", *COMMON]) == 2, source
        one_line_error(capsys, who, words)
        assert not out.exists()


@pytest.mark.parametrize("module, who", [(train_vae, "train_vae"), (train_vocoder, "train_vocoder")])
@pytest.mark.parametrize("more, words", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--crop-frames", "0"], "--crop-frames must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--steps", "-1"], "--steps must be at least 0"),
    (["--preset", "nosuch"], "--preset nosuch: choose one of"),       # was a KeyError traceback
    (["--device", "bogus"], "not a device"),
])
def test_bad_numbers_and_names_are_refused(tmp_path, capsys, manifest, module, who, more, words):
    out = tmp_path / "run"
    assert exit_status(module.main, ["--manifest", manifest, "--out", str(out), "--steps", "1", *COMMON, *more]) == 2
    one_line_error(capsys, who, words)
    assert not out.exists()


def test_vae_refuses_crops_its_encoder_cannot_halve_and_a_missing_init(tmp_path, capsys, manifest):
    out = tmp_path / "run"
    argv = ["--manifest", manifest, "--out", str(out), "--steps", "1", *COMMON]
    assert exit_status(train_vae.main, [*argv, "--crop-frames", "30"]) == 2     # was a shape traceback mid-step
    one_line_error(capsys, "train_vae", "multiple of 4")
    assert exit_status(train_vae.main, [*argv, "--init", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "train_vae", "--init not found")
    assert exit_status(train_vae.main, [*argv, "--scale-batches", "0"]) == 2
    one_line_error(capsys, "train_vae", "--scale-batches must be at least 1")
    assert not out.exists()
    (tmp_path / "file").write_text("keep")
    assert exit_status(train_vae.main, ["--manifest", manifest, "--out", str(tmp_path / "file"), "--steps", "1", *COMMON]) == 2
    one_line_error(capsys, "train_vae", "is a file")
    assert (tmp_path / "file").read_text() == "keep"


def test_resume_refuses_another_preset_modules_or_trained_parameters(tmp_path, capsys, manifest):
    out = tmp_path / "vae"
    argv = ["--manifest", manifest, "--out", str(out), *COMMON]
    assert exit_status(train_vae.main, [*argv, "--steps", "1"]) == 0
    capsys.readouterr()
    ckpt = (out / "checkpoint" / "checkpoint.safetensors").read_bytes()
    # a crash after the step-1 save leaves rows past it and a partial line: the resumed run drops them
    log = out / "log.csv"
    lines = log.read_text().splitlines()
    assert [r.split(",")[0] for r in lines] == ["step", "1"]
    log.write_text(log.read_text() + "2," + lines[1].split(",", 1)[1] + "\n3,0.1")
    assert exit_status(train_vae.main, [*argv, "--steps", "2"]) == 0
    capsys.readouterr()
    assert [r.split(",")[0] for r in log.read_text().splitlines()] == ["step", "1", "2"]
    assert log.read_text().endswith("\n")
    ckpt = (out / "checkpoint" / "checkpoint.safetensors").read_bytes()
    # another preset: was a load_state_dict traceback
    assert exit_status(train_vae.main, [*argv, "--steps", "2", "--preset", "small"]) == 2
    one_line_error(capsys, "train_vae", "holds a run of another configuration", "config (ch 8 in the checkpoint, 32 now")
    # another set of trained parameters (the decoder alone)
    assert exit_status(train_vae.main, [*argv, "--steps", "2", "--freeze-encoder", "--init", str(out / "export")]) == 2
    one_line_error(capsys, "train_vae", "the trained parameters of vae")
    # a vocoder run in the VAE's folder
    assert exit_status(train_vocoder.main, [*argv, "--steps", "2", "--no-gan"]) == 2
    one_line_error(capsys, "train_vocoder", "kind ('vae' in the checkpoint, 'vocoder' now)")
    assert (out / "checkpoint" / "checkpoint.safetensors").read_bytes() == ckpt
    # and a corrupt checkpoint
    (out / "checkpoint" / "checkpoint.safetensors").write_bytes(ckpt[:100])
    assert exit_status(train_vae.main, [*argv, "--steps", "2"]) == 2
    one_line_error(capsys, "train_vae", "checkpoint.safetensors is missing or corrupt")


def test_vocoder_resume_refuses_discriminators_switched_on(tmp_path, capsys, manifest):
    out = tmp_path / "voc"
    argv = ["--manifest", manifest, "--out", str(out), *COMMON]
    assert exit_status(train_vocoder.main, [*argv, "--steps", "1", "--no-gan"]) == 0
    capsys.readouterr()
    assert exit_status(train_vocoder.main, [*argv, "--steps", "2"]) == 2        # was a load_state_dict traceback
    one_line_error(capsys, "train_vocoder", "modules (generator in the checkpoint, discriminators, generator now)")
    assert exit_status(train_vocoder.main, [*argv, "--steps", "2", "--no-gan", "--arch", "vocos"]) == 2
    one_line_error(capsys, "train_vocoder", "arch ('hifigan' in the checkpoint, 'vocos' now)")
    assert exit_status(train_vocoder.main, ["--out", str(tmp_path / "nowhere"), "--export-only"]) == 2
    one_line_error(capsys, "train_vocoder", "no checkpoint in")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_unreadable_audio_file_is_one_line_naming_it(tmp_path, capsys, workers):
    (tmp_path / "bad.wav").write_text("not audio")
    (tmp_path / "m.csv").write_text("file\nbad.wav\n")
    argv = ["--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run"), "--steps", "1", "--no-gan",
            "--workers", workers, *COMMON]
    assert exit_status(train_vocoder.main, argv) == 2      # was soundfile's traceback (a worker's: 'Caught ... in worker')
    one_line_error(capsys, "train_vocoder", "cannot read audio", "bad.wav")
