"""training.latents's command line: one-line errors (exit 2) before hours of encoding, and an existing
store is replaced only with --force."""
import numpy as np
import pytest
import soundfile as sf
import torch

from impact_rt.vae import PRESETS, AutoencoderKL
from training import latents
from helpers import exit_status, one_line_error


@pytest.fixture()
def inputs(tmp_path):
    sf.write(tmp_path / "c0.wav", (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32), 16000)
    (tmp_path / "m.csv").write_text("id,file,caption,split\nid0,c0.wav,a dog barking,train\n")
    torch.manual_seed(0)
    AutoencoderKL(PRESETS["test"]).save_pretrained(str(tmp_path / "vae"))
    return ["--manifest", str(tmp_path / "m.csv"), "--vae", str(tmp_path / "vae"), "--variants", "1", "--threads", "1"]


def test_an_existing_store_is_not_replaced_without_force(tmp_path, capsys, inputs):
    out = tmp_path / "lat.safetensors"
    out.write_bytes(b"hours of encoding")
    assert exit_status(latents.main, [*inputs, "--out", str(out)]) == 2                  # was overwritten at the end
    one_line_error(capsys, "latents", "exists (use --force to overwrite)")
    assert out.read_bytes() == b"hours of encoding"


@pytest.mark.parametrize("out, words", [("nowhere/lat.safetensors", "folder of --out does not exist"),
                                        (".", "is a folder")])
def test_an_out_that_cannot_be_written_is_refused_before_encoding(tmp_path, capsys, inputs, out, words):
    assert exit_status(latents.main, [*inputs, "--out", str(tmp_path / out)]) == 2       # was a traceback after encoding
    one_line_error(capsys, "latents", words)
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_manifests_vaes_and_numbers_are_one_line_errors(tmp_path, capsys, inputs):
    out = tmp_path / "lat.safetensors"
    (tmp_path / "nonutf.csv").write_bytes(b"file\n\xff.wav\n")
    for i, words in ((["--manifest", str(tmp_path / "none.csv")], "manifest not found"),
                     (["--manifest", str(tmp_path)], "is a folder"),
                     (["--manifest", str(tmp_path / "nonutf.csv")], "not a UTF-8 text file"),
                     (["--vae", str(tmp_path / "nowhere")], "--vae not found"),
                     (["--vae", str(tmp_path)], "--vae"),
                     (["--variants", "0"], "--variants must be at least 1"),
                     (["--splits", "tran"], "--splits: tran is not one of"),
                     (["--splits", "val"], "no rows of the splits val")):
        assert exit_status(latents.main, [*inputs, *i, "--out", str(out)]) == 2, i
        one_line_error(capsys, "latents", words)
        assert not out.exists()


def test_ctrl_c_is_one_line_and_writes_nothing(tmp_path, capsys, inputs, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(latents, "MiniLMConditioner", interrupted)
    out = tmp_path / "lat.safetensors"
    assert exit_status(latents.main, [*inputs, "--out", str(out)]) == 130             # was a KeyboardInterrupt traceback
    assert capsys.readouterr().err == f"latents: error: interrupted; {out} was not written\n"
    assert not out.exists()
