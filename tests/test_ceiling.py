"""The ceiling picks honest examples: the prompt's category, whole clips, test split first."""
import csv

from training.ceiling import PROMPT_CATEGORIES, pick_clips


def test_pick_clips_prefers_test_and_skips_scenes(tmp_path):
    rows = [("a", "train", "thunder", "event"), ("b", "test", "thunder", "crop"), ("c", "val", "thunder", "event"),
            ("d", "test", "thunder;rain", "scene"), ("e", "test", "thunder", "scene"), ("f", "test", "dog", "event")]
    p = tmp_path / "manifest.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "file", "caption", "split", "category", "kind"])
        for i, sp, cat, kind in rows:
            w.writerow([i, f"clips/{sp}/{i}.flac", "x", sp, cat, kind])
    got = pick_clips(p, 2)
    assert [(pr, f.name) for pr, f in got if pr == "thunder"] == [("thunder", "b.flac"), ("thunder", "c.flac")]
    assert [(pr, f.name) for pr, f in got if pr == "a dog barking"] == [("a dog barking", "f.flac")]


def test_every_evaluation_prompt_has_categories():
    import pytest

    from impact_rt.evaluation.adherence import default_prompts_path, load_prompts_tsv
    if not default_prompts_path().is_file():
        pytest.skip(f"no {default_prompts_path()} beside this checkout")
    prompts = {s.prompt for s in load_prompts_tsv(default_prompts_path()).values()}
    assert prompts == set(PROMPT_CATEGORIES)


def test_cli_bad_input_is_one_line_before_the_out_folder_is_made(tmp_path, capsys):
    from training.ceiling import main

    def status(argv):
        try:
            return main(argv)
        except SystemExit as e:
            return e.code
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    cases = [([], "no manifest.csv in the corpus folder"),                                   # were tracebacks
             (["--per-prompt", "0"], "--per-prompt must be at least 1")]
    for more, words in cases:
        assert status(["--corpus", str(corpus), "--out", str(out), *more]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ceiling: error: ") and err.count("\n") == 1 and words in err, err
    (corpus / "manifest.csv").write_text("id,file,caption,split,category,kind\n"
                                         "a,clips/a.wav,x,test,thunder,event\nb,clips/b.wav,x,test,cello,event\n")
    assert status(["--corpus", str(corpus), "--out", str(out)]) == 2                          # missed mid-run
    assert "1 clips of the manifest are not on disk" in capsys.readouterr().err
    (corpus / "manifest.csv").write_text("id,file,caption,split,category,kind\nb,clips/b.wav,x,test,cello,event\n")
    assert status(["--corpus", str(corpus), "--out", str(out)]) == 2      # the scorer's "no audio files" late
    assert "no whole clip of any evaluation prompt's categories" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert status(["--corpus", str(corpus), "--out", str(out)]) == 2
    assert "holds a finished measurement (use --force" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert status(["--corpus", str(corpus), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
