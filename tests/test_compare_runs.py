"""training.compare_runs: Wilson intervals, the exact McNemar test and the pairing of two evaluation runs."""
import json

import pytest

from impact_rt.evaluation.adherence import wilson
from training.compare_runs import compare, load_run, main, mcnemar_exact


def _run(tmp_path, name, clips):
    """An evaluate_model-shaped folder from [(prompt, seed, hit)]."""
    d = tmp_path / name
    (d / "clips").mkdir(parents=True)
    (d / "clips" / "clips.jsonl").write_text("".join(
        json.dumps({"file": f"{i:04d}.wav", "prompt": p, "seed": s}) + "\n" for i, (p, s, _) in enumerate(clips)))
    (d / "report.json").write_text(json.dumps({"clips": [{"file": f"{i:04d}.wav", "hit": h}
                                                         for i, (_, _, h) in enumerate(clips)]}))
    return d


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)


def test_runs_are_paired_by_prompt_and_seed(tmp_path, capsys):
    a = _run(tmp_path, "a", [("thunder", s, s < 5) for s in range(10)] + [("rain", 0, True)])
    b = _run(tmp_path, "b", [("thunder", s, s >= 3) for s in range(12)])        # two more seeds, no rain
    res = compare([load_run(a), load_run(b)])
    t = res["thunder"]
    assert [r["hits"] for r in t["runs"]] == [5, 9] and [r["clips"] for r in t["runs"]] == [10, 12]
    assert t["paired"][0] == {"shared": 10, "only_first": 3, "only_this": 5, "p_mcnemar": round(mcnemar_exact(3, 5), 4)}
    assert res["rain"]["paired"][0]["shared"] == 0 and res["rain"]["runs"][1]["clips"] == 0
    assert res["all"]["runs"][0]["hits"] == 6 and res["all"]["paired"][0]["shared"] == 10
    assert main([str(a), str(b), "--json", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert "| thunder | 5/10 (24–76 %) | 9/12" in out and "no shared seeds" in out
    assert json.loads((tmp_path / "cmp.json").read_text())["prompts"]["thunder"]["runs"][1]["hits"] == 9


def test_bad_runs_are_one_line_errors(tmp_path, capsys):
    good = _run(tmp_path, "good", [("thunder", 0, True)])
    (tmp_path / "empty").mkdir()
    assert main([str(good), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "report.json is missing" in err and err.count("\n") == 1
    noseed = _run(tmp_path, "noseed", [("thunder", 0, True)])
    (noseed / "clips" / "clips.jsonl").write_text(json.dumps({"file": "0000.wav", "prompt": "thunder"}) + "\n")
    assert main([str(good), str(noseed)]) == 2
    assert "no seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:            # refused before the runs are read, not after
        main([str(good), str(good), "--json", str(tmp_path / "no" / "dir" / "x.json")])
    assert e.value.code == 2 and "folder of --json does not exist" in capsys.readouterr().err


def test_an_existing_json_is_replaced_only_with_force_and_odd_records_are_named(tmp_path, capsys):
    good = _run(tmp_path, "good", [("thunder", 0, True)])
    (tmp_path / "cmp.json").write_text("an earlier comparison")
    with pytest.raises(SystemExit) as e:
        main([str(good), str(good), "--json", str(tmp_path / "cmp.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("compare_runs: error: ") and "exists (use --force" in err
    assert (tmp_path / "cmp.json").read_text() == "an earlier comparison"
    assert main([str(good), str(good), "--json", str(tmp_path / "cmp.json"), "--force"]) == 0
    assert json.loads((tmp_path / "cmp.json").read_text())["runs"] == [str(good), str(good)]
    capsys.readouterr()
    odd = _run(tmp_path, "odd", [("thunder", 0, True)])
    (odd / "clips" / "clips.jsonl").write_text(json.dumps({"file": "0000.wav", "prompt": "thunder", "seed": "x"}))
    assert main([str(good), str(odd)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "odd: clip 0000.wav has the seed 'x'" in err, err    # no folder named before
    (odd / "clips" / "clips.jsonl").write_text('"a string"\n')
    assert main([str(good), str(odd)]) == 2
    assert "not a clip record" in capsys.readouterr().err
