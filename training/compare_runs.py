"""Compare the prompt adherence of evaluation runs, with the noise of their clip counts.

    python -m training.compare_runs RUN_A RUN_B [RUN_C ...] [--json OUT.json]

Each RUN is an ``--out`` folder of ``training.evaluate_model`` (``report.json`` + ``clips/clips.jsonl``).
For every prompt and overall it prints each run's hits with a 95 % Wilson interval, and for each later
run against the first, on the clips the two share (same prompt and seed): the clips only A hits, the
clips only B hits, and the exact two-sided McNemar p-value (a binomial test on those discordant
pairs). Runs of the same seeds are paired; seeds that only one run has count in its own hits, not in
the paired test.

Why: a prompt's hit rate on 10 or 40 seeds is a coarse number (5/10 has a 95 % interval of 24–76 %),
and checkpoints of one run differ by more than that with SGD noise alone (docs/training.md, session
28). A gain counts when its interval or its paired test says so, and again on seeds it was not
chosen on.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from impact_rt.evaluation.adherence import wilson
from impact_rt.fileio import atomic_write_text

from .cli import Parser, check_out_file, fail


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: P(a split at least this uneven | discordant pairs split 50:50)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def load_run(folder: str | Path) -> dict[tuple[str, int], bool]:
    """{(prompt, seed): hit} of an evaluate_model output folder."""
    folder = Path(folder)
    report, records = folder / "report.json", folder / "clips" / "clips.jsonl"
    for p in (report, records):
        if not p.is_file():
            raise ValueError(f"{folder} is not an evaluate_model run: {p.name} is missing")
    try:
        hits = {c["file"]: bool(c["hit"]) for c in json.loads(report.read_text())["clips"]}
        rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: unreadable report or clips.jsonl ({e})") from None
    out: dict[tuple[str, int], bool] = {}
    for r in rows:
        if not isinstance(r, dict) or not {"file", "prompt"} <= set(r):
            raise ValueError(f"{folder}: clips.jsonl holds a line that is not a clip record ({str(r)[:60]})")
        if "seed" not in r:
            raise ValueError(f"{folder}: clips.jsonl has no seeds (a run older than training.evaluate_model's seeds)")
        if r["file"] not in hits:
            raise ValueError(f"{folder}: clip {r['file']} has no verdict in report.json")
        try:
            seed = int(r["seed"])
        except (TypeError, ValueError):
            raise ValueError(f"{folder}: clip {r['file']} has the seed {r['seed']!r}, not an integer") from None
        out[(r["prompt"], seed)] = hits[r["file"]]
    if not out:
        raise ValueError(f"{folder}: no clips")
    return out


def _counts(run: dict, prompt: str | None) -> tuple[int, int]:
    vals = [h for (p, _), h in run.items() if prompt is None or p == prompt]
    return sum(vals), len(vals)


def compare(runs: list[dict]) -> dict:
    """Per prompt (and "all"): each run's hits, clips and Wilson interval; each later run against the first
    on the shared (prompt, seed) clips: only_first, only_this, p_mcnemar."""
    prompts = list(dict.fromkeys(p for r in runs for p, _ in r))     # in the order the runs list them
    out = {}
    for prompt in prompts + [None]:
        row = {"runs": []}
        for r in runs:
            h, n = _counts(r, prompt)
            lo, hi = wilson(h, n)
            row["runs"].append({"hits": h, "clips": n, "wilson95": [round(lo, 3), round(hi, 3)]})
        row["paired"] = []
        for r in runs[1:]:
            shared = [k for k in runs[0] if k in r and (prompt is None or k[0] == prompt)]
            a = sum(runs[0][k] and not r[k] for k in shared)
            b = sum(r[k] and not runs[0][k] for k in shared)
            row["paired"].append({"shared": len(shared), "only_first": a, "only_this": b,
                                  "p_mcnemar": round(mcnemar_exact(a, b), 4)})
        out["all" if prompt is None else prompt] = row
    return out


def table(result: dict, names: list[str]) -> str:
    head = "| prompt | " + " | ".join(names) + " |" + "".join(f" {n} vs {names[0]}: only first / only it, p |"
                                                            for n in names[1:])
    lines = [head, "|---" * (1 + len(names) + len(names) - 1) + "|"]
    for prompt, row in result.items():
        cells = [f"{r['hits']}/{r['clips']} ({100 * r['wilson95'][0]:.0f}–{100 * r['wilson95'][1]:.0f} %)"
                 for r in row["runs"]]
        cells += [f"{p['only_first']} / {p['only_this']}, p {p['p_mcnemar']:.3g}" if p["shared"] else "no shared seeds"
                  for p in row["paired"]]
        lines.append(f"| {'**all**' if prompt == 'all' else prompt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="compare_runs")
    ap.add_argument("runs", nargs="+", help="evaluate_model output folders (the first is the baseline)")
    ap.add_argument("--json", default=None, help="also write the comparison here")
    ap.add_argument("--force", action="store_true", help="replace an existing --json")
    a = ap.parse_args(argv)
    if a.json:
        check_out_file(ap, a.json, a.force, "--json")
    try:
        runs = [load_run(r) for r in a.runs]
    except ValueError as e:
        return fail("compare_runs", e)
    names = [Path(r).name or str(r) for r in a.runs]
    result = compare(runs)
    print(table(result, names))
    if a.json:
        try:
            atomic_write_text(a.json, json.dumps({"runs": list(a.runs), "prompts": result}, indent=1))
        except OSError as e:
            return fail("compare_runs", f"cannot write {a.json}: {e.strerror}", 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
