"""evaluate_model's shuffled control: every clip judged against another prompt's classes."""
import pytest

from training.evaluate_model import derangement


def test_derangement_moves_every_prompt():
    items = [f"p{i}" for i in range(18)]
    for seed in range(5):
        out = derangement(items, seed)
        assert sorted(out) == sorted(items) and all(a != b for a, b in zip(items, out))
    assert derangement(["a", "b"]) == ["b", "a"]


def test_derangement_of_one_prompt_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="at least 2"):
        derangement(["thunder"])


def test_rescore_keeps_the_runs_settings_and_replaces_its_scores(tmp_path, monkeypatch):
    import json

    import training.evaluate_model as E
    clips = tmp_path / "clips"
    clips.mkdir()
    records = [{"file": "0000.wav", "prompt": "thunder", "seed": 0}, {"file": "0001.wav", "prompt": "footsteps", "seed": 0}]
    (clips / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"iterations": 16}, "backend": "cpu",
                                                       "adherence": 0.0, "generation_seconds_per_clip": 2.5,
                                                       "reference": "/ref"}))
    seen = {}

    def fake_score(c, recs, prompts, prompts_path, reference):
        seen.update(prompts=prompts, reference=reference, n=len(recs))
        return {"clips": []}, {"adherence": 0.5, "thunder": "1/1"}
    monkeypatch.setattr(E, "score", fake_score)
    out = E.rescore(tmp_path, tmp_path / "p.tsv", None)
    assert seen == {"prompts": ["thunder", "footsteps"], "reference": "/ref", "n": 2}
    assert out["adherence"] == 0.5 and out["thunder"] == "1/1" and out["rescored"] is True
    assert out["settings"] == {"iterations": 16} and out["generation_seconds_per_clip"] == 2.5
    assert json.loads((tmp_path / "summary.json").read_text()) == out


def test_rescore_without_an_earlier_run_is_a_one_line_error(tmp_path):
    import training.evaluate_model as E
    with pytest.raises(ValueError, match="--rescore"):
        E.rescore(tmp_path, tmp_path / "p.tsv", None)


def test_write_prompt_table_encodes_the_prompts_and_the_negative_with_the_bundles_encoder(tmp_path):
    import torch

    from helpers import save_bundle
    from impact_rt.pipeline import Pipeline
    from impact_rt.text_conditioner import PromptTable
    from training.evaluate_model import main
    src = Pipeline.random("test")
    d = save_bundle(src, tmp_path / "bundle")
    tsv = tmp_path / "p.tsv"
    tsv.write_text("prompt\texpected\nthunder\tThunder\nrain\tRain\n")
    out = tmp_path / "t.safetensors"
    assert main(["--model", str(d), "--prompts", str(tsv), "--negative-prompt", "silence",
                 "--write-prompt-table", str(out)]) == 0
    table = PromptTable(out)
    assert table.prompts == ["thunder", "rain", "silence"] and table.source == src.conditioner.spec()
    for got, want in zip(table.encode(["silence", "thunder"]), src.conditioner.encode(["silence", "thunder"])):
        assert torch.equal(got, want)
    with pytest.raises(SystemExit):                   # every other use needs --out
        main(["--model", str(d), "--prompts", str(tsv)])


def test_threads_sets_the_cpu_thread_count_and_refuses_zero(tmp_path, capsys):
    import torch

    from training.evaluate_model import main
    tsv = tmp_path / "p.tsv"
    tsv.write_text("prompt\texpected\nthunder\tThunder\n")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(SystemExit):             # --threads is applied before --out is checked
            main(["--threads", "1", "--prompts", str(tsv)])
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit):
            main(["--threads", "0", "--out", str(tmp_path / "o")])
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_a_run_records_its_backend_and_precision(tmp_path, monkeypatch):
    import json

    import training.evaluate_model as E
    from helpers import save_bundle
    from impact_rt import cpu_backend
    from impact_rt.pipeline import Pipeline
    if not cpu_backend.available()[0]:
        pytest.skip(cpu_backend.available()[1])
    d = save_bundle(Pipeline.random("test"), tmp_path / "bundle")
    tsv = tmp_path / "p.tsv"
    tsv.write_text("prompt\texpected\nthunder\tThunder\nrain\tRain\n")
    monkeypatch.setattr(E, "score", lambda *a: ({"clips": []}, {"adherence": 0.0}))
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert E.main(["--model", str(d), "--prompts", str(tsv), "--out", str(out), "--seeds", "1",
                       "--backend", "cpu", "--precision", precision, "--iterations", "1", "--diffusion-steps", "2"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["backend"] == "cpu" and summary["precision"] == precision and summary["clips"] == 2
        assert summary["token_seams"]["clips"] == 2 and summary["token_seams"]["time"] > 0
