"""Prompt adherence: share of clips whose YAMNet top-k holds one of the prompt's expected classes.

Inputs:
- a prompts TSV (header line, then `prompt<TAB>class;class;...`, classes as YAMNet display names);
  default `../shared/eval/prompts.tsv` from the repository root;
- a sidecar in the generated folder naming each clip's prompt: `clips.jsonl` (one JSON object per
  line with keys "file" and "prompt"; other keys ignored) or `manifest.csv` (header with columns
  `file` and `prompt`). "file" is the clip's file name inside that folder.
Prompts are matched case-insensitively with runs of white space collapsed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import EvalError, UsageError

SIDECAR_NAMES = ("clips.jsonl", "manifest.csv")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_prompts_path() -> Path:
    """`../shared/eval/prompts.tsv` relative to the repository root."""
    return (repo_root() / ".." / "shared" / "eval" / "prompts.tsv").resolve()


def read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark (Excel, Notepad) dropped; one-line errors."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror or exc}") from None


def normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    expected: tuple[str, ...]


def load_prompts_tsv(path: str | Path, class_names: list[str] | None = None) -> dict[str, PromptSpec]:
    """{normalised prompt: PromptSpec}; with `class_names`, every expected class must be one of them."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"prompts file not found: {path} (pass one with --prompts)")
    known = set(class_names) if class_names is not None else None
    specs: dict[str, PromptSpec] = {}
    lines = read_text(path).splitlines()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise UsageError(f"{path}:{lineno}: expected 'prompt<TAB>class;class;...'")
        expected = tuple(c.strip() for c in cols[1].split(";") if c.strip())
        if known is not None:
            unknown = [c for c in expected if c not in known]
            if unknown:
                raise UsageError(f"{path}:{lineno}: not YAMNet class names: {', '.join(map(repr, unknown))}")
        specs[normalise(cols[0])] = PromptSpec(cols[0].strip(), expected)
    if not specs:
        raise UsageError(f"no prompts in {path}")
    return specs


def find_sidecar(folder: str | Path) -> Path | None:
    for name in SIDECAR_NAMES:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def load_sidecar(path: str | Path) -> dict[str, str]:
    """{file name: prompt} from a clips.jsonl or manifest.csv (format chosen by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"manifest not found: {path}")
    rows: list[tuple[int, object]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        try:
            if not {"file", "prompt"} <= set(reader.fieldnames or ()):
                raise UsageError(f"{path}: the CSV header must name the columns 'file' and 'prompt'")
            rows = [(i, r) for i, r in enumerate(reader, start=2)]
        except csv.Error as exc:
            raise UsageError(f"{path}: malformed CSV: {exc}") from None
    else:
        # lines end at "\n" only: splitlines() would also split at U+2028, which JSON allows inside a string
        for i, line in enumerate(read_text(path).split("\n"), start=1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{i}: not JSON: {exc.msg}") from None
    out: dict[str, str] = {}
    for i, r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("file"), str) or not isinstance(r.get("prompt"), str):
            raise UsageError(f"{path}:{i}: each entry needs string fields 'file' and 'prompt'")
        name = Path(r["file"]).name
        if name in out and out[name] != r["prompt"]:
            raise UsageError(f"{path}:{i}: {name} is listed twice with different prompts")
        out[name] = r["prompt"]
    return out


def wilson(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion hits/n ((0, 1) for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= hits <= n:
        raise ValueError(f"hits {hits} out of range for {n} clips")
    p = hits / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (0.0 if hits == 0 else max(0.0, mid - half)), (1.0 if hits == n else min(1.0, mid + half))


def score_adherence(
    top: dict[str, list[str]],
    file_prompts: dict[str, str],
    specs: dict[str, PromptSpec],
) -> dict:
    """`top`: {file name: top-k class names}. Returns counts overall and per prompt, in TSV order."""
    missing = sorted(set(file_prompts) - set(top))
    if missing:
        raise UsageError(f"the manifest lists files that are not among the clips: {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    per = {key: {"prompt": s.prompt, "expected": list(s.expected), "clips": 0, "hits": 0} for key, s in specs.items()}
    hits = {}
    not_in_tsv: set[str] = set()
    for name in sorted(top):
        prompt = file_prompts.get(name)
        if prompt is None:
            continue
        spec = specs.get(normalise(prompt))
        if spec is None:
            not_in_tsv.add(prompt)
            continue
        hit = any(c in spec.expected for c in top[name])
        hits[name] = hit
        row = per[normalise(prompt)]
        row["clips"] += 1
        row["hits"] += int(hit)
    n, k = len(hits), sum(hits.values())
    for r in per.values():
        r["wilson95"] = [round(x, 4) for x in wilson(r["hits"], r["clips"])]
    return {
        "clips": n,
        "hits": k,
        "rate": (k / n) if n else None,
        "wilson95": [round(x, 4) for x in wilson(k, n)],   # 95 % interval of the rate: how coarse n clips are
        "per_prompt": [r for r in per.values() if r["clips"]],
        "clip_hits": hits,
        "prompts_not_in_tsv": sorted(not_in_tsv),
        "clips_without_prompt": sorted(set(top) - set(file_prompts)),
    }
