"""export_bundle's command line: it never deletes a folder that is not a bundle, replaces a bundle only
with --force, and checks every input before writing anything."""
import pytest
import torch

from impact_rt import bundle as B
from impact_rt.config import ModelConfig, preset
from impact_rt.model import IMPACT
from impact_rt.vae import PRESETS, AutoencoderKL
from training.checkpoint import prefixed, save_checkpoint
from training.export_bundle import main
from helpers import exit_status, one_line_error


@pytest.fixture()
def inputs(tmp_path):
    """A generator checkpoint (test preset, MiniLM's text width) and a VAE export."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**preset("test").to_dict(), "text_dim": 384})
    save_checkpoint(tmp_path / "ckpt", prefixed("ema", IMPACT(cfg).state_dict()), {"step": 1, "model": cfg.to_dict()})
    narrow = preset("test")
    save_checkpoint(tmp_path / "ckpt16", prefixed("ema", IMPACT(narrow).state_dict()),
                    {"step": 1, "model": narrow.to_dict()})
    AutoencoderKL(PRESETS["test"]).save_pretrained(str(tmp_path / "vae"))
    return {"ckpt": str(tmp_path / "ckpt"), "ckpt16": str(tmp_path / "ckpt16"), "vae": str(tmp_path / "vae")}


def test_a_folder_that_is_not_a_bundle_is_never_deleted(tmp_path, capsys, inputs):
    keep = tmp_path / "runs"
    keep.mkdir()
    (keep / "weeks-of-work.txt").write_text("keep")
    args = ["--ckpt", inputs["ckpt"], "--vae", inputs["vae"], "--out", str(keep)]
    assert exit_status(main, args) == 2                              # was shutil.rmtree(out) without a word
    one_line_error(capsys, "export_bundle", "exists (use --force")
    assert exit_status(main, args + ["--force"]) == 2
    one_line_error(capsys, "export_bundle", "holds no model bundle")
    assert (keep / "weeks-of-work.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()                           # an empty folder takes the bundle as it is
    assert main(["--ckpt", inputs["ckpt"], "--vae", inputs["vae"], "--out", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "config.json").is_file()


def test_a_bundle_is_replaced_only_with_force_and_its_card_is_kept(tmp_path, capsys, inputs):
    out = tmp_path / "bundle"
    args = ["--ckpt", inputs["ckpt"], "--vae", inputs["vae"], "--out", str(out)]
    assert main(args) == 0
    assert B.read_config(out).model.text_dim == 384
    (out / "MODEL_CARD.md").write_text("card")
    before = (out / "impact.safetensors").read_bytes()
    capsys.readouterr()
    assert exit_status(main, args) == 2
    one_line_error(capsys, "export_bundle", "exists (use --force")
    assert (out / "impact.safetensors").read_bytes() == before
    assert main(args + ["--force", "--fp32"]) == 0
    assert (out / "MODEL_CARD.md").read_text() == "card" and not (tmp_path / "bundle.tmp").exists()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert exit_status(main, ["--ckpt", inputs["ckpt"], "--vae", inputs["vae"], "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys, "export_bundle", "is a file")


def test_bad_or_mismatched_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys, inputs):
    out = tmp_path / "bundle"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{}")
    (tmp_path / "broken" / "state.safetensors").write_bytes(b"xx")
    cases = [(["--ckpt", str(tmp_path / "nowhere")], "no checkpoint at"),
             (["--ckpt", str(tmp_path / "broken")], "state.safetensors is corrupt"),             # was a traceback
             (["--ckpt", inputs["ckpt16"]], "the minilm conditioner gives [78, 384]"),          # was written, unloadable
             (["--vae", str(tmp_path / "nowhere")], "--vae not found"),                         # left OUT.tmp
             (["--vocoder", str(tmp_path / "nowhere")], "--vocoder not found"),                 # left OUT.tmp
             (["--iterations", "0"], "iterations must be an integer in 1..256"),                # was written
             (["--guidance", "0.5"], "guidance must be a finite number >= 1"),
             (["--griffin-lim", "-3"], "--griffin-lim must be at least 0")]                    # left OUT.tmp
    for more, words in cases:
        argv = ["--ckpt", inputs["ckpt"], "--vae", inputs["vae"], "--out", str(out), *more]
        assert exit_status(main, argv) == 2, more
        one_line_error(capsys, "export_bundle", words)
        assert not out.exists() and not (tmp_path / "bundle.tmp").exists(), more
