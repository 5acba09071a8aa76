"""evaluate_model's command line: one-line errors (exit 2) before any clip is made, and a finished
evaluation is replaced only with --force."""
import json

import pytest

import training.evaluate_model as E
from helpers import exit_status, one_line_error


@pytest.fixture()
def bundle(tmp_path):
    from helpers import save_bundle
    from impact_rt.pipeline import Pipeline
    return str(save_bundle(Pipeline.random("test"), tmp_path / "bundle"))


@pytest.fixture()
def tsv(tmp_path):
    p = tmp_path / "p.tsv"
    p.write_text("prompt\texpected\nthunder\tThunder\nrain\tRain\n")
    return str(p)


def test_bad_inputs_are_one_line_errors_before_the_run_folder_is_made(tmp_path, capsys, bundle, tsv):
    out = tmp_path / "eval"
    ok = ["--model", bundle, "--prompts", tsv, "--out", str(out), "--seeds", "1", "--threads", "1"]
    cases = [(["--model", str(tmp_path / "nowhere")], "model bundle not found"),          # were tracebacks
             (["--prompts", str(tmp_path / "none.tsv")], "prompts file not found"),
             (["--iterations", "0"], "iterations must be an integer"),
             (["--guidance", "0.5"], "guidance must be a finite number >= 1"),
             (["--candidates", "4"], "need a reranking scorer"),
             (["--backend", "nosuch"], "unknown backend"),
             (["--prompt-table", str(tmp_path / "none.safetensors")], "prompt table not found"),
             (["--seeds", "0"], "--seeds must be at least 1"),                            # scoring's error late
             (["--batch-size", "0"], "--batch-size must be at least 1")]                   # range() traceback
    for more, words in cases:
        assert exit_status(E.main, ok + more) == 2, more
        one_line_error(capsys, "evaluate_model", words)
        assert not out.exists(), more
    (tmp_path / "file").write_text("x")
    assert exit_status(E.main, ["--model", bundle, "--prompts", tsv, "--out", str(tmp_path / "file")]) == 2
    one_line_error(capsys, "evaluate_model", "is a file")
    assert exit_status(E.main, ["--prompts", tsv, "--out", str(out), "--rescore"]) == 2                # was exit 1
    one_line_error(capsys, "evaluate_model", "--rescore")


def test_a_finished_evaluation_is_replaced_only_with_force(tmp_path, capsys, bundle, tsv, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.json").write_text('{"adherence": 0.4}')
    argv = ["--model", bundle, "--prompts", tsv, "--out", str(out), "--seeds", "1", "--iterations", "1",
            "--diffusion-steps", "2", "--threads", "1"]
    assert exit_status(E.main, argv) == 2                                    # was overwritten, clips and all
    one_line_error(capsys, "evaluate_model", "holds a finished evaluation (use --force")
    assert json.loads((out / "summary.json").read_text()) == {"adherence": 0.4}
    monkeypatch.setattr(E, "score", lambda *a: ({"clips": []}, {"adherence": 0.5}))
    assert exit_status(E.main, argv + ["--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["adherence"] == 0.5


def test_an_existing_prompt_table_is_replaced_only_with_force(tmp_path, capsys, bundle, tsv):
    table = tmp_path / "t.safetensors"
    table.write_bytes(b"earlier")
    argv = ["--model", bundle, "--prompts", tsv, "--write-prompt-table"]
    assert exit_status(E.main, argv + [str(table)]) == 2
    one_line_error(capsys, "evaluate_model", "exists (use --force")
    assert table.read_bytes() == b"earlier"
    assert exit_status(E.main, argv + [str(tmp_path / "no" / "t.safetensors")]) == 2                    # was a traceback
    one_line_error(capsys, "evaluate_model", "folder of --write-prompt-table does not exist")
    assert exit_status(E.main, argv + [str(table), "--force"]) == 0


def test_ctrl_c_is_one_line(tmp_path, capsys, bundle, tsv, monkeypatch):
    from impact_rt.pipeline import Pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(Pipeline, "from_pretrained", interrupted)
    assert exit_status(E.main, ["--model", bundle, "--prompts", tsv, "--out", str(tmp_path / "eval")]) == 130
    assert capsys.readouterr().err == "evaluate_model: error: interrupted; no summary was written\n"
