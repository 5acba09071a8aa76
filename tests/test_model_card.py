"""The model card is computed from measured files; its acceptance checks follow the numbers."""
import json

from training.model_card import checks, main, training_summary


def _summary(adh, shuf, thunder, fd, t=16, g=5.0):
    return {"settings": {"iterations": t, "diffusion_steps": 100, "guidance": g}, "backend": "cpu", "clips": 180,
            "adherence": adh, "adherence_shuffled_prompts": shuf, "thunder": thunder,
            "per_prompt": {"thunder": thunder}, "metrics": {"fd": fd, "kl_softmax": 1.0, "is_mean": 2.0},
            "generation_seconds_per_clip": 1.5}


def test_training_summary_adds_up_resumed_invocations(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,seconds,loss\n1,10,2.0\n2,20,1.0\n3,5,0.5\n4,15,0.5\n")   # resumed after step 2
    s = training_summary(p)
    assert s["steps"] == 4 and abs(s["hours"] * 3600 - 35) < 1e-9 and s["loss_last_100"] == 0.5 and s["loss_first_100"] == 2.0


def test_checks_pass_and_fail_with_the_numbers():
    good = {"main": _summary(0.5, 0.1, "8/10", 10.0), "T=1": _summary(0.3, 0.1, "5/10", 20.0, t=1),
            "β_max=1": _summary(0.4, 0.1, "6/10", 12.0, g=1.0)}
    assert all(ok for _, ok, _ in checks(good))
    bad = {"main": _summary(0.2, 0.19, "3/10", 30.0), "T=1": _summary(0.3, 0.1, "5/10", 20.0, t=1),
           "β_max=1": _summary(0.4, 0.1, "6/10", 12.0, g=1.0)}
    assert not any(ok for _, ok, _ in checks(bad))
    measured = {name: m for name, _, m in checks(bad)}
    assert measured["“thunder” hits an expected class in ≥ 7 of 10"] == "3/10 (95 % interval 11–60 %)"
    assert measured["overall adherence ≥ 40 %"] == "20.0 % (95 % interval 15–26 %)"   # 36 of 180 clips


def test_a_missing_shuffled_control_fails_its_check_without_crashing():
    one = {"main": _summary(0.5, None, "8/10", 10.0)}     # a one-prompt evaluation has no control
    row = [c for c in checks(one) if "shuffled" in c[0]][0]
    assert row[1] is False and row[2].endswith("vs —")


def test_card_renders_from_files(tmp_path):
    from impact_rt.config import preset
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"model": preset("small").__dict__, "conditioner": {"kind": "minilm"},
                                                    "vocoder": {"kind": "griffinlim"}, "decode": {"iterations": 16}}))
    ev = tmp_path / "ev"
    ev.mkdir()
    summ = _summary(0.45, 0.1, "7/10", 9.5)
    summ["settings"].update(refine=1, refine_share=0.9)
    summ["metrics"].update(silent_share=0.62, silent_share_reference=0.14)
    summ["silent_share_per_prompt"] = {"thunder": 0.7}
    (ev / "summary.json").write_text(json.dumps(summ))
    old = tmp_path / "old-summary.json"               # from before the silent share, kept as a bare file
    old.write_text(json.dumps(_summary(0.3, 0.1, "2/10", 20.0)))
    log = tmp_path / "log.csv"
    log.write_text("step,seconds,loss\n1,1,2.0\n2,2,1.0\n")
    assert main(["--bundle", str(bundle), "--train-log", f"text={log}", "--eval", f"main={ev}",
                 "--eval", f"older={old}"]) == 0
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "preset `small`" in card and "45.0 %" in card and "| generator, text | 2 |" in card
    assert "| 62 % (14 %) |" in card and "| thunder | 7/10 | 70 % |" in card
    older = next(line for line in card.splitlines() if line.startswith("| older |"))
    assert older.count("| — |") >= 1 and older.startswith("| older | cpu | 16 | 100 |")
    assert next(line for line in card.splitlines() if line.startswith("| main |")).startswith("| main | cpu | 16 + 1 refine | 100 |")


def test_training_summary_reads_the_generator_log_format(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,phase,loss,lr,samples_per_s,wall_s\n50,text,0.2,1e-4,12,100\n100,text,0.1,1e-4,12,200\n")
    s = training_summary(p)
    assert s["steps"] == 100 and abs(s["hours"] * 3600 - 200) < 1e-9
    empty = tmp_path / "empty.csv"
    empty.write_text("step,phase,loss,lr,samples_per_s,wall_s\n")
    assert training_summary(empty) == {"steps": 0}


def test_card_shows_the_text_probe_and_the_ceiling(tmp_path):
    from impact_rt.config import preset
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"model": preset("small").__dict__, "vocoder": {"kind": "griffinlim"}}))
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"right": 0.1, "shuffled": 0.11, "null": 0.12, "gain_vs_shuffled": 0.01,
                                 "gain_vs_null": 0.02, "rows": 64, "batches": 12}))
    ceil = tmp_path / "ceiling"
    ceil.mkdir()
    (ceil / "summary.json").write_text(json.dumps({
        "per_prompt": 5, "recorded": {"adherence": 0.6, "per_prompt": {"thunder": "4/5"}},
        "vocoder": {"adherence": 0.4, "per_prompt": {"thunder": "1/5"}},
        "vae+vocoder": {"adherence": 0.45, "per_prompt": {"thunder": "3/5"}}}))
    assert main(["--bundle", str(bundle), "--probe", f"shipped={probe}", "--ceiling", str(ceil)]) == 0
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "| shipped | 64 | 0.1000 | 0.1100 | 0.1200 | +0.0100 (+10.0 %) | +0.0200 |" in card
    assert "| thunder | 4/5 | 1/5 | 3/5 |" in card and "**45.0 %**" in card


def test_a_new_card_keeps_the_previous_cards_rows_marked(tmp_path):
    from impact_rt.config import preset
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"model": preset("small").__dict__, "vocoder": {"kind": "griffinlim"}}))
    ev = tmp_path / "summary.json"
    ev.write_text(json.dumps(_summary(0.45, 0.1, "7/10", 9.5)))
    log = tmp_path / "log.csv"
    log.write_text("step,seconds,loss\n1,1,2.0\n2,2,1.0\n")
    prev = tmp_path / "OLD.md"
    prev.write_text("# old\n\n## Training\n\n| stage | steps | hours | loss |\n|---|---|---|---|\n"
                    "| VAE (L1 on log-mel) | 10 | 1.00 | 2.0 → 1.0 |\n"
                    "| older stage (previous card) | 5 | 0.50 | 3.0 → 2.0 |\n\n## Evaluation\n\n"
                    "| run | backend | T |\n|---|---|---|\n| main | cpu | 16 |\n\nHits per prompt\n\n"
                    "| prompt | hits |\n|---|---|\n| thunder | 5/10 |\n\n## Data\n\nBuilt from 7 clips.\n\n"
                    "## Notes\n\n- an old note\n")
    assert main(["--bundle", str(bundle), "--train-log", f"text={log}", "--eval", f"main={ev}",
                 "--previous", str(prev), "--note", "a new note"]) == 0
    lines = (bundle / "MODEL_CARD.md").read_text().splitlines()
    vae = lines.index("| VAE (L1 on log-mel) (previous card) | 10 | 1.00 | 2.0 → 1.0 |")
    assert lines[vae + 1] == "| older stage (previous card) | 5 | 0.50 | 3.0 → 2.0 |"   # marked once, not twice
    assert lines[vae + 2].startswith("| generator, text | 2 |")          # history first, then this stage
    new_main = next(i for i, ln in enumerate(lines) if ln.startswith("| main | cpu | 16 | 100 |"))
    assert lines[new_main + 1] == "| main (previous card) | cpu | 16 |"   # the old main row, marked
    assert "| thunder | 5/10 |" not in lines                              # only these tables travel
    assert lines[lines.index("## Data") + 2] == "Built from 7 clips."     # no --corpus: the old data section
    notes = lines.index("## Notes")
    assert lines[notes + 2:notes + 4] == ["- a new note", "- an old note"]


def test_rows_of_cards_before_the_candidate_column_get_k_1_and_the_scorer_is_named(tmp_path):
    from impact_rt.config import preset
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"model": preset("small").__dict__, "vocoder": {"kind": "griffinlim"},
                                                    "rerank": {"candidates": 8}}))
    (bundle / "scorer.json").write_text(json.dumps({"dim": 192, "depth": 2, "references": 3175}))
    ev = tmp_path / "summary.json"
    ev.write_text(json.dumps({**_summary(0.45, 0.1, "7/10", 9.5), "candidates": 8}))
    old_row = "| main | cpu | 16 | 100 | 992 | 5.0 | 180 | 40.6 % | 7.2 % | 5/10 | 25.48 | — | 3.71 | 37 % | 2.88 |"
    prev = tmp_path / "OLD.md"
    prev.write_text("## Evaluation\n\n| run | backend |\n|---|---|\n" + old_row + "\n")
    log = tmp_path / "log.csv"
    log.write_text("step,loss,lr,val_top1,wall_s\n100,2.0,1e-4,0.3,100\n200,1.0,1e-4,0.4,200\n")
    assert main(["--bundle", str(bundle), "--eval", f"main={ev}", "--previous", str(prev),
                 "--train-log", f"=reranking scorer={log}"]) == 0
    card = (bundle / "MODEL_CARD.md").read_text()
    lines = card.splitlines()
    assert any(ln.startswith("| main | cpu | 16 | 100 | 999 | 5.0 | 8 | 180 | 45.0 % |") for ln in lines)
    assert "| main (previous card) | cpu | 16 | 100 | 992 | 5.0 | 1 | 180 | 40.6 % |" in card
    assert "best of 8 candidates" in card and "3,175 reference captions" in card
    assert "| reranking scorer | 200 |" in card


def test_cli_bad_input_is_one_line_and_the_card_is_left_alone(tmp_path, capsys):
    import pytest
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"model": {}, "vocoder": {"kind": "griffinlim"}}))
    (bundle / "MODEL_CARD.md").write_text("the card")
    (tmp_path / "nonutf.md").write_bytes(b"\xff\xfe")
    (tmp_path / "s.json").write_text("{}")
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "m.csv").write_text("file,caption\nx.wav,a\n")
    cases = [(["--vae-log", str(tmp_path / "none.csv")], "cannot read"),                          # tracebacks before
             (["--vae-log", str(tmp_path / "m.csv")], "is not a training log"),
             (["--train-log", str(tmp_path / "m.csv")], "expected NAME=PATH"),                      # was exit 1
             (["--eval", f"main={tmp_path / 'nowhere'}"], "cannot read"),
             (["--eval", f"main={tmp_path / 's.json'}"], "is not an evaluate_model summary"),        # KeyError
             (["--probe", f"p={tmp_path / 'bad.json'}"], "is not a JSON file"),
             (["--probe", f"p={tmp_path / 's.json'}"], "an input file lacks what the card needs"),
             (["--previous", str(tmp_path / "nonutf.md")], "not a UTF-8 text file"),
             (["--corpus", str(tmp_path / "nowhere")], "cannot read"),
             (["--out", str(tmp_path / "no" / "card.md")], "folder of --out does not exist"),
             (["--out", str(tmp_path)], "is a folder")]
    for more, words in cases:
        try:
            code = main(["--bundle", str(bundle), *more])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("model_card: error: ") and err.count("\n") == 1 and words in err, (more, err)
        assert (bundle / "MODEL_CARD.md").read_text() == "the card"
    with pytest.raises(SystemExit) as e:
        main(["--bundle", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "is not a model bundle" in capsys.readouterr().err
