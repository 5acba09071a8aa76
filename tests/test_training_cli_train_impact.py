"""train_impact's command line: bad arguments and input are one-line errors (exit 2), before any output."""
import pytest
import torch

from training.latent_store import LatentStore
from training.train_impact import main
from helpers import exit_status, one_line_error


def _store(tmp_path, text_dim=16):
    g = torch.Generator().manual_seed(0)
    st = LatentStore(latents=torch.randn(4, 8, 256, 16, generator=g).half(), clip=torch.arange(4),
                     caption_id=torch.tensor([0, 1, 0, -1]), split=torch.zeros(4, dtype=torch.long),
                     text_states=torch.randn(2, 78, text_dim, generator=g).half(),
                     text_mask=torch.ones(2, 78, dtype=torch.bool), meta={"captions": ["a", "b"]})
    st.save(tmp_path / "lat.safetensors")
    return str(tmp_path / "lat.safetensors")


def _args(store, out, *more):
    return ["--latents", str(store), "--out", str(out), "--steps", "1", "--preset", "test", "--batch-size", "2",
            "--no-bf16", "--threads", "1", *more]


def test_a_missing_folder_or_corrupt_store_is_a_one_line_error_and_makes_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    good = _store(tmp_path)
    (tmp_path / "short.safetensors").write_bytes((tmp_path / "lat.safetensors").read_bytes()[:500])
    for store, words in ((tmp_path / "none.safetensors", ["not found"]), (tmp_path, ["is a folder"]),
                         (tmp_path / "bad.safetensors", ["not a readable safetensors file"]),
                         (tmp_path / "short.safetensors", ["not a readable safetensors file"])):
        assert main(_args(store, out)) == 2
        one_line_error(capsys, "train_impact", *words)
        assert not out.exists()
    assert main(_args(good, out, "--preset", "nosuch")) == 2
    one_line_error(capsys, "train_impact", "unknown preset")
    assert not out.exists()


@pytest.mark.parametrize("flag, value, words", [
    ("--batch-size", "0", ["--batch-size must be at least 1"]),
    ("--batch-size", "-1", ["--batch-size must be at least 1"]),
    ("--threads", "-2", ["--threads must be at least 1"]),
    ("--steps", "-3", ["--steps must be at least 0"]),
    ("--minutes", "-1", ["--minutes must be at least 0"]),
    ("--caption-drop", "2", ["--caption-drop must be in [0, 1]"]),
    ("--mask-ratio-min", "1.5", ["--mask-ratio-min must be in [0, 1]"]),      # used to hang in mask_ratio
    ("--diffusion-batch-mul", "0", ["--diffusion-batch-mul must be at least 1"]),   # used to train on NaN
    ("--device", "bogus", ["not a device"]),
])
def test_bad_numbers_and_devices_are_refused_before_anything_is_written(tmp_path, capsys, flag, value, words):
    out = tmp_path / "run"
    assert exit_status(main, _args(_store(tmp_path), out, flag, value)) == 2
    one_line_error(capsys, "train_impact", *words)
    assert not out.exists()


def test_argparse_errors_are_one_line_too(tmp_path, capsys):
    assert exit_status(main, ["--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    one_line_error(capsys, "train_impact", "--latents")


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    assert exit_status(main, _args(_store(tmp_path), tmp_path / "file")) == 2
    one_line_error(capsys, "train_impact", "is a file")
    assert (tmp_path / "file").read_text() == "keep"


def test_a_corrupt_checkpoint_or_a_missing_init_is_a_one_line_error(tmp_path, capsys):
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    state = out / "ckpt" / "state.safetensors"
    good = state.read_bytes()
    state.write_bytes(good[:300])
    assert main(_args(store, out, "--steps", "2")) == 2
    one_line_error(capsys, "train_impact", "state.safetensors is corrupt")
    state.write_bytes(good)
    (out / "ckpt" / "state.json").write_text("{bad")
    assert main(_args(store, out, "--steps", "2")) == 2
    one_line_error(capsys, "train_impact", "unreadable state.json")
    assert main(_args(store, tmp_path / "other", "--init", str(tmp_path / "nowhere"))) == 2
    one_line_error(capsys, "train_impact", "no checkpoint or model bundle at")
    assert not (tmp_path / "other").exists()


def test_resuming_a_run_of_another_preset_is_refused_in_one_line(tmp_path, capsys):
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    before = (out / "ckpt" / "state.safetensors").read_bytes()
    assert main(_args(store, out, "--steps", "2", "--preset", "small")) == 2
    one_line_error(capsys, "train_impact", "holds a run trained with other options", "the model (")
    assert (out / "ckpt" / "state.safetensors").read_bytes() == before


def test_ctrl_c_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from training.train_impact import Trainer
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    before = (out / "ckpt" / "state.safetensors").read_bytes()

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(_args(store, out, "--steps", "5")) == 130          # was a KeyboardInterrupt traceback
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "train_impact: error: interrupted at step 1; the last checkpoint stands (rerun the same command to resume)"
    assert (out / "ckpt" / "state.safetensors").read_bytes() == before


def test_resume_trims_the_log_to_the_checkpoint(tmp_path, capsys):
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    log = out / "log.csv"
    header = log.read_text()
    assert header.startswith("step,phase,loss") and header.count("\n") == 1    # rows every 20 steps
    log.write_text(header + "20,text,0.5,1e-4,10.0,3\n40,text,0.4")         # a crash after step 20's save
    assert main(_args(store, out, "--steps", "2")) == 0                     # resumes at step 1
    assert log.read_text() == header
