"""AudioCaps-style manifest (CSV) and the count report (JSON + a printed table)."""
from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from impact_rt.fileio import atomic_write_text

from .audio import CLIP_SAMPLES, SR
from .captions import BY_NAME
from .clips import clip_relpath
from .plan import SPLITS, ClipSpec
from .sources import Item

FIELDS = ("id", "file", "caption", "split", "category", "kind", "source_package", "source_file",
          "license", "source_group", "duration", "sample_rate")
CLIP_HOURS = CLIP_SAMPLES / SR / 3600

EVAL_PROMPTS = ("thunder", "rain falling on a roof", "strong wind blowing", "a stream of water flowing",
                "a dog barking", "a rooster crowing", "a cow mooing", "birds singing", "an owl hooting",
                "a fire crackling", "an explosion", "a car engine running", "footsteps", "a bell ringing",
                "a man speaking", "a cello playing a slow melody", "a drum kit playing a beat",
                "a piano playing")
# an extra caption test for prompts whose category is broader than the prompt
EVAL_CAPTION_FILTER = {"a man speaking": re.compile(r"\b(man|male)\b")}


def eval_prompt_of(category: str, extra: dict[str, str]) -> str:
    if category in BY_NAME:
        return BY_NAME[category].eval_prompt
    return extra.get(category, "")


def manifest_rows(specs: list[ClipSpec], items: dict[str, Item], groups: dict[str, str],
                  fmt: str = "flac") -> list[dict]:
    rows = []
    for s in sorted(specs, key=lambda s: (SPLITS.index(s.split), s.id)):
        keys = list(dict.fromkeys(l.key for l in s.layers))
        its = [items[k] for k in keys]
        rows.append({
            "id": s.id, "file": clip_relpath(s, fmt), "caption": s.caption, "split": s.split,
            "category": ";".join(s.categories), "kind": s.kind,
            "source_package": ";".join(dict.fromkeys(i.package for i in its)),
            "source_file": ";".join(i.key for i in its),
            "license": ";".join(dict.fromkeys(i.license for i in its)),
            "source_group": ";".join(dict.fromkeys(groups.get(i.key, "") for i in its)),
            "duration": f"{CLIP_SAMPLES / SR:.2f}", "sample_rate": SR,
        })
    return rows


def write_manifest(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_report(rows: list[dict], items: dict[str, Item], extra_prompts: dict[str, str],
                 n_rejected: int, licenses: dict[str, str]) -> dict:
    def blank():
        return {"clips": 0, "hours": 0.0, **{s: 0 for s in SPLITS}}

    def add(d, split):
        d["clips"] += 1
        d[split] += 1
        d["hours"] = round(d["clips"] * CLIP_HOURS, 3)

    total, by_pkg, by_cat, by_kind = blank(), defaultdict(blank), defaultdict(blank), defaultdict(blank)
    by_prompt = {p: blank() for p in EVAL_PROMPTS}
    captioned = 0
    for r in rows:
        split = r["split"]
        add(total, split)
        add(by_kind[r["kind"]], split)
        captioned += bool(r["caption"])
        for pkg in r["source_package"].split(";"):
            add(by_pkg[pkg], split)
        cats = [c for c in r["category"].split(";") if c] or ["(uncaptioned)"]
        for c in cats:
            add(by_cat[c], split)
        prompts = {eval_prompt_of(c, extra_prompts) for c in cats} - {""}
        for p in prompts:
            filt = EVAL_CAPTION_FILTER.get(p)
            if filt is None or filt.search(r["caption"]):
                add(by_prompt[p], split)
    files, seconds = Counter(), Counter()
    for it in items.values():
        files[it.package] += 1
        seconds[it.package] += it.duration
    sources = {p: {"files": files[p], "hours": round(seconds[p] / 3600, 3)} for p in files}
    return {
        "clip_seconds": CLIP_SAMPLES / SR, "sample_rate": SR,
        "total": total, "captioned_clips": captioned, "uncaptioned_clips": total["clips"] - captioned,
        "rejected_silent": n_rejected,
        "by_source_package": dict(sorted(by_pkg.items())),
        "by_category": dict(sorted(by_cat.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "eval_prompts": by_prompt,
        "source_files": dict(sorted(sources.items())),
        "licenses": licenses,
        "notes": "A clip counts once for every source package and every category it contains; "
                 "eval_prompts counts clips holding a category that serves the prompt "
                 "('a man speaking': captions naming a man or a male voice).",
    }


def format_report(rep: dict) -> str:
    lines = [f"total: {rep['total']['clips']} clips, {rep['total']['hours']:.2f} h "
             f"(train {rep['total']['train']}, val {rep['total']['val']}, test {rep['total']['test']}); "
             f"captioned {rep['captioned_clips']}, uncaptioned {rep['uncaptioned_clips']}, "
             f"rejected as silent {rep['rejected_silent']}"]

    def table(title, d):
        lines.append(f"\n{title}")
        lines.append(f"  {'':34s} {'clips':>6s} {'hours':>7s} {'train':>6s} {'val':>5s} {'test':>5s}")
        for k, v in d.items():
            lines.append(f"  {k:34.34s} {v['clips']:6d} {v['hours']:7.2f} {v['train']:6d} {v['val']:5d} {v['test']:5d}")

    table("per source package", rep["by_source_package"])
    table("per eval prompt", rep["eval_prompts"])
    table("per caption category", rep["by_category"])
    table("per clip kind", rep["by_kind"])
    return "\n".join(lines)


def write_report(rep: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(rep, indent=1, sort_keys=False) + "\n")


def caption_counts(rows: list[dict]) -> Counter:
    return Counter(r["caption"] for r in rows if r["caption"])
