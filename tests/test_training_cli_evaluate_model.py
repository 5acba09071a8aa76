"""evaluate_model's command line: one-line errors (exit 2) before any clip is made, and a finished
evaluation is replaced only with --force."""
import json

import pytest

import training.evaluate_model as E


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


def _status(argv):
    try:
        return E.main(argv)
    except SystemExit as e:
        return e.code


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("evaluate_model: error: "), err
    for w in words:
        assert w in err, err


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
        assert _status(ok + more) == 2, more
        _one_line_error(capsys, words)
        assert not out.exists(), more
    (tmp_path / "file").write_text("x")
    assert _status(["--model", bundle, "--prompts", tsv, "--out", str(tmp_path / "file")]) == 2
    _one_line_error(capsys, "is a file")
    assert _status(["--prompts", tsv, "--out", str(out), "--rescore"]) == 2                # was exit 1
    _one_line_error(capsys, "--rescore")


def test_a_finished_evaluation_is_replaced_only_with_force(tmp_path, capsys, bundle, tsv, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.json").write_text('{"adherence": 0.4}')
    argv = ["--model", bundle, "--prompts", tsv, "--out", str(out), "--seeds", "1", "--iterations", "1",
            "--diffusion-steps", "2", "--threads", "1"]
    assert _status(argv) == 2                                    # was overwritten, clips and all
    _one_line_error(capsys, "holds a finished evaluation (use --force")
    assert json.loads((out / "summary.json").read_text()) == {"adherence": 0.4}
    monkeypatch.setattr(E, "score", lambda *a: ({"clips": []}, {"adherence": 0.5}))
    assert _status(argv + ["--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["adherence"] == 0.5


def test_an_existing_prompt_table_is_replaced_only_with_force(tmp_path, capsys, bundle, tsv):
    table = tmp_path / "t.safetensors"
    table.write_bytes(b"earlier")
    argv = ["--model", bundle, "--prompts", tsv, "--write-prompt-table"]
    assert _status(argv + [str(table)]) == 2
    _one_line_error(capsys, "exists (use --force")
    assert table.read_bytes() == b"earlier"
    assert _status(argv + [str(tmp_path / "no" / "t.safetensors")]) == 2                    # was a traceback
    _one_line_error(capsys, "folder of --write-prompt-table does not exist")
    assert _status(argv + [str(table), "--force"]) == 0


def test_ctrl_c_is_one_line(tmp_path, capsys, bundle, tsv, monkeypatch):
    from impact_rt.pipeline import Pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(Pipeline, "from_pretrained", interrupted)
    assert _status(["--model", bundle, "--prompts", tsv, "--out", str(tmp_path / "eval")]) == 130
    assert capsys.readouterr().err == "evaluate_model: error: interrupted; no summary was written\n"
