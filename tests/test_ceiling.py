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
