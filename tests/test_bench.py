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
    assert "unknown precision 'int4'" in capsys.readouterr().err
