import json

from impact_rt import bench
from impact_rt.cli import main


def test_bench_one_tiny_cell_json_fields(capsys):
    rc = main(["bench", "--model", "random:test", "--iterations", "1", "--diffusion-steps", "2",
               "--repeats", "1", "--warmup", "0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    recs = result["records"]
    assert len(recs) == 1
    r = recs[0]
    for f in bench.FIELDS:
        assert f in r, f
    assert r["backend"] == "torch" and r["precision"] == "fp32" and r["batch"] == 1 and r["iterations"] == 1 and r["diffusion_steps"] == 2
    assert r["latency_s"] > 0 and r["peak_rss_mb"] > 0
    assert r["speedup_vs_reference"] == 1.0  # the reference against itself
    assert abs(r["rtf"] - r["latency_s"] / 10.24) < 1e-12
    assert "| torch (fp32) | 1 | 1 | 2 |" in bench.markdown(result)


def test_bench_rejects_bad_grid(capsys):
    assert main(["bench", "--model", "random:test", "--iterations", "0"]) == 2
    assert "iterations" in capsys.readouterr().err
    assert main(["bench", "--model", "random:test", "--backends", "vulkan"]) == 2


def test_bench_checks_every_argument_before_any_cell_runs(tmp_path, capsys, monkeypatch):
    """Bad arguments are exit 2 with one line, before the reference runs (bench() is never reached)."""
    import torch
    monkeypatch.setattr(bench, "bench", lambda *a, **k: (_ for _ in ()).throw(AssertionError("cells ran")))
    (tmp_path / "old.md").write_text("keep")
    cases = [(["--backends", "torch:bf16"], "not available for the torch backend"),
             (["--model", str(tmp_path / "nonexist")], "not 'default', random:PRESET or a model bundle"),
             (["--model", "random:huge"], "unknown preset 'huge'"),
             (["--threads", "0"], "--threads must be at least 1"),
             (["--diffusion-steps", "995"], "diffusion steps must be an integer in 1..993"),
             (["--refine", "9"], "refine must be an integer in 0..8"),
             (["--out", str(tmp_path / "old.md")], "exists (use --force"),
             (["--out", str(tmp_path / "no" / "x.md")], "folder of --out does not exist")]
    if not torch.cuda.is_available():
        cases.append((["--backends", "cuda"], "backend cuda is not available here"))
    for args, needle in cases:
        assert main(["bench", "--model", "random:test", *args]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Error:" not in err, (args, err)
    assert (tmp_path / "old.md").read_text() == "keep"


def test_bench_worker_failure_is_one_line_without_the_exception_class(monkeypatch):
    import pytest

    def boom(*a, **k):
        from impact_rt.config import ConfigError
        raise ConfigError("the cells cannot run\nsecond line")
    monkeypatch.setattr(bench, "run_cells", boom)
    assert bench._worker(json.dumps({"model": "random:test", "backend": "torch", "cells": [], "repeats": 1,
                                     "warmup": 0, "threads": None})) == 1
    with pytest.raises(RuntimeError, match="^benchmark of backend torch failed: unknown preset 'huge'"):
        bench.bench("random:huge", [], [1], [1], [2], 1, 0)      # the worker's line, not its exception class


def test_bench_runs_a_backend_in_a_named_precision(capsys):
    import pytest

    from impact_rt import cpu_backend
    if not cpu_backend.available()[0]:
        pytest.skip(cpu_backend.available()[1])
    rc = main(["bench", "--model", "random:test", "--backends", "cpu:fp32,cpu:bf16", "--iterations", "1",
               "--diffusion-steps", "2", "--repeats", "1", "--warmup", "0", "--json"])
    assert rc == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert [(r["backend"], r["precision"]) for r in recs] == [("torch", "fp32"), ("cpu", "fp32"), ("cpu", "bf16")]
    assert main(["bench", "--model", "random:test", "--backends", "cpu:int4"]) == 2
    assert "precision 'int4' is not available for the cpu backend" in capsys.readouterr().err


def test_bench_times_refinement_as_its_own_cell(capsys):
    rc = main(["bench", "--model", "random:test", "--iterations", "2", "--diffusion-steps", "2", "--refine", "0,1",
               "--repeats", "1", "--warmup", "0", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["refine"] for r in result["records"]] == [0, 1]
    assert all(r["speedup_vs_reference"] == 1.0 for r in result["records"])   # each against its own cell
    md = bench.markdown(result)
    assert "| torch (fp32) | 1 | 2 | 2 |" in md and "| torch (fp32) | 1 | 2 + 1 refine | 2 |" in md
