"""train_scorer's command line: one-line errors (exit 2) before any output; resume and export refuse
what does not fit."""
import csv

import pytest
import torch

from training.latent_store import LatentStore
from training.train_scorer import main
from helpers import exit_status, one_line_error


def _store(tmp_path, text_dim=16, name="lat.safetensors"):
    g = torch.Generator().manual_seed(0)
    man = tmp_path / "manifest.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "category"])
        w.writerows([f"c{i}", "ab"[i % 2]] for i in range(6))
    st = LatentStore(latents=torch.randn(6, 8, 256, 16, generator=g).half(), clip=torch.arange(6),
                     caption_id=torch.tensor([0, 1, 0, 1, 0, 1]), split=torch.zeros(6, dtype=torch.long),
                     text_states=torch.randn(2, 5, text_dim, generator=g).half(),
                     text_mask=torch.ones(2, 5, dtype=torch.bool),
                     meta={"manifest": str(man), "clip_ids": [f"c{i}" for i in range(6)]})
    st.save(tmp_path / name)
    return str(tmp_path / name)


def _args(store, out, *more):
    return ["--latents", store, "--out", str(out), "--steps", "1", "--batch-size", "4", "--threads", "1", *more]


@pytest.mark.parametrize("more, words", [
    (["--batch-size", "0"], ["--batch-size must be at least 1"]),     # was a traceback after making --out
    (["--threads", "0"], ["--threads must be at least 1"]),           # was silently ignored
    (["--noise-max", "-1"], ["--noise-max must be at least 0"]),
])
def test_bad_numbers_are_refused_before_the_run_folder_is_made(tmp_path, capsys, more, words):
    out = tmp_path / "run"
    assert exit_status(main, _args(_store(tmp_path), out, *more)) == 2
    one_line_error(capsys, "train_scorer", *words)
    assert not out.exists()


def test_a_missing_or_corrupt_store_or_checkpoint_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(str(tmp_path / "none.safetensors"), out)) == 2
    one_line_error(capsys, "train_scorer", "latent store not found")
    assert not out.exists()
    store = _store(tmp_path)
    (tmp_path / "file").write_text("x")
    assert exit_status(main, _args(store, tmp_path / "file")) == 2
    one_line_error(capsys, "train_scorer", "is a file")
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    (out / "ckpt" / "state.safetensors").write_bytes(b"xx")
    assert main(_args(store, out, "--steps", "2")) == 2
    one_line_error(capsys, "train_scorer", "state.safetensors is corrupt")


def test_resume_refuses_another_recipe_or_scorer_shape_but_export_needs_only_the_shape(tmp_path, capsys):
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    before = (out / "ckpt" / "state.safetensors").read_bytes()
    assert main(_args(store, out, "--steps", "2", "--batch-size", "6")) == 2
    one_line_error(capsys, "train_scorer", "holds a run trained with other options", "batch_size (4 in the checkpoint, 6 now)")
    wide = _store(tmp_path, text_dim=32, name="wide.safetensors")
    assert main(_args(wide, out, "--steps", "2")) == 2                  # was a load_state_dict traceback
    one_line_error(capsys, "train_scorer", "the scorer (text_dim 16 in the checkpoint, 32 now)")
    assert (out / "ckpt" / "state.safetensors").read_bytes() == before
    assert main(_args(store, out, "--steps", "2", "--lr", "1e-4")) == 0   # the lr may change


def test_export_needs_a_model_bundle_and_force_to_replace_its_scorer(tmp_path, capsys):
    from helpers import save_bundle
    from impact_rt.pipeline import Pipeline
    store, out = _store(tmp_path), tmp_path / "run"
    assert main(_args(store, out)) == 0
    capsys.readouterr()
    export = ["--latents", store, "--out", str(out), "--export"]
    assert main(export + [str(tmp_path / "nowhere")]) == 2      # used to write a scorer into a new folder
    one_line_error(capsys, "train_scorer", "--export: model bundle not found")
    assert not (tmp_path / "nowhere").exists()
    d = save_bundle(Pipeline.random("test"), tmp_path / "bundle")
    assert main(export + [str(d), "--batch-size", "8"]) == 0     # training options do not matter to an export
    capsys.readouterr()
    scorer = (d / "scorer.safetensors").read_bytes()
    assert main(export + [str(d)]) == 2
    one_line_error(capsys, "train_scorer", "already has a scorer (use --force")
    assert (d / "scorer.safetensors").read_bytes() == scorer
    assert main(export + [str(d), "--force"]) == 0


def test_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    from training.train_scorer import ScorerTrainer

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(ScorerTrainer, "train_step", interrupted)
    assert main(_args(_store(tmp_path), tmp_path / "run")) == 130   # was a KeyboardInterrupt traceback
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("train_scorer: error: interrupted at step 0")
