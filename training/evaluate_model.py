"""Evaluate a model bundle the way the model card reports it.

    python -m training.evaluate_model --model impact_rt/models/default --out runs/eval/t16 \
        [--seeds 10] [--iterations 16] [--guidance 5] [--reference /work/corpus/clips/test]

Generates ``--seeds`` clips for every prompt of ``../shared/eval/prompts.tsv`` (seeds
``--first-seed`` .. ``--first-seed``+n−1; the model card reports seeds 0..9, so tune decoding
settings on others),
then scores them with ``impact_rt.evaluation`` (YAMNet FD / KL / IS against the reference
folder, prompt adherence), and once more against *shuffled* prompts (each clip judged by the
expected classes of another prompt: a derangement) — the adherence a model ignoring its text
would get. The summary also carries ``token_seams`` (``impact_rt.evaluation.seams``): how much
the generated latents jump at the generator's patch grid, a measure that needs no classifier.
Writes ``summary.json`` and ``report.json`` in ``--out``.

Where the bundle's text encoder is absent (a lent GPU machine: the MiniLM package is 88 MB),
write the prompts' encodings here and evaluate there with them:

    python -m training.evaluate_model --prompts P.tsv --write-prompt-table T.safetensors
    python -m training.evaluate_model --prompts P.tsv --prompt-table T.safetensors --backend cuda --out ...
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from impact_rt.config import PRECISIONS
from impact_rt.evaluation.adherence import default_prompts_path, load_prompts_tsv
from impact_rt.fileio import atomic_write_text

from .cli import Parser, at_least, check_out_file, check_run_folder, fail


def derangement(items: list[str], seed: int = 0) -> list[str]:
    """A shuffle of ``items`` that moves every item (needs at least two)."""
    if len(items) < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {len(items)}")
    rng = random.Random(seed)
    while True:
        out = items[:]
        rng.shuffle(out)
        if all(a != b for a, b in zip(items, out)):
            return out


def score(clips: Path, records: list[dict], prompts: list[str], prompts_path: Path, reference) -> tuple[dict, dict]:
    """YAMNet report of the clips, and the summary's scoring fields: adherence, the shuffled
    control (each clip judged by another prompt's classes), hits and silent frames per prompt."""
    from impact_rt.evaluation import evaluate
    report = evaluate(clips, reference, prompts_path, clips / "clips.jsonl")
    shuffled_rate = None            # the shuffled control needs two prompts or more
    if len(prompts) >= 2:
        shuffled_map = dict(zip(prompts, derangement(prompts)))
        shuf = clips.parent / "shuffled.jsonl"
        shuf.write_text("".join(json.dumps({"file": r["file"], "prompt": shuffled_map[r["prompt"]]}) + "\n"
                                for r in records))
        shuffled_rate = evaluate(clips, None, prompts_path, shuf)["adherence"]["rate"]
    per = {r["prompt"]: f"{r['hits']}/{r['clips']}" for r in report["adherence"]["per_prompt"]}
    by_file = {c["file"]: c["silent_share"] for c in report["clips"]}
    silent = {p: round(sum(by_file[r["file"]] for r in records if r["prompt"] == p)
                       / sum(r["prompt"] == p for r in records), 3) for p in prompts}
    return report, {"adherence": report["adherence"]["rate"], "adherence_shuffled_prompts": shuffled_rate,
                    "thunder": per.get("thunder"), "per_prompt": per, "silent_share_per_prompt": silent,
                    "metrics": report["metrics"]}


def rescore(out: Path, prompts_path: Path, reference) -> dict:
    """Score the clips of an earlier run (OUT/clips, clips.jsonl) again, e.g. after a fix of the
    evaluator; its settings and generation time are kept from OUT/summary.json."""
    clips = out / "clips"
    try:
        records = [json.loads(line) for line in (clips / "clips.jsonl").read_text().splitlines() if line.strip()]
        old = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--rescore {out}: {e}") from None
    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    report, scores = score(clips, records, prompts, prompts_path, reference or old.get("reference"))
    summary = {**old, **scores, "reference": reference or old.get("reference"), "rescored": True}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="evaluate_model")
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped one)")
    ap.add_argument("--out", help="run folder (clips, report.json, summary.json); not needed with --write-prompt-table")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--diffusion-steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--refine", type=int, default=None, help="re-masking passes after the decode (default: the bundle's)")
    ap.add_argument("--negative-prompt", default=None, help="one negative prompt for every clip")
    ap.add_argument("--candidates", type=int, default=None, metavar="K",
                    help="best of K by the bundle's reranking scorer (default: the bundle's; 1 = none)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--precision", default=None, choices=PRECISIONS,
                    help="the backend's compute precision (default: the backend's own)")
    ap.add_argument("--reference", default=None, help="folder of real clips for FD")
    ap.add_argument("--prompts", default=None)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for generation and scoring (torch's and the native sampler's; default: torch's)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the clips already in OUT again (no generation; settings kept from OUT/summary.json)")
    ap.add_argument("--prompt-table", default=None,
                    help="encodings of the prompts written by --write-prompt-table, used instead of the text encoder")
    ap.add_argument("--write-prompt-table", default=None, metavar="FILE",
                    help="write the encodings of the prompts (and the negative prompt) with the bundle's text "
                         "encoder to FILE, then stop")
    ap.add_argument("--force", action="store_true",
                    help="replace a finished evaluation in OUT (its summary.json), or an existing --write-prompt-table")
    a = ap.parse_args(argv)
    at_least(ap, a, 1, "--threads", "--seeds", "--batch-size")
    if a.threads is not None:
        import torch
        torch.set_num_threads(a.threads)
    prompts_path = Path(a.prompts) if a.prompts else default_prompts_path()
    if not a.out and not a.write_prompt_table:
        ap.error("--out is required")
    if a.write_prompt_table:
        check_out_file(ap, a.write_prompt_table, a.force, "--write-prompt-table")
    else:
        check_run_folder(ap, a.out)
        if not a.rescore and (Path(a.out) / "summary.json").exists() and not a.force:
            ap.error(f"{a.out} holds a finished evaluation (use --force to replace it, or --rescore)")
    from impact_rt.bundle import BundleError
    from impact_rt.evaluation.errors import EvalError
    try:
        return _run(a, prompts_path)
    except (ValueError, BundleError) as e:      # a missing bundle, prompts file or table; bad decode settings
        return fail("evaluate_model", e)
    except EvalError as e:                      # the scoring's own one-line errors
        return fail("evaluate_model", e, e.exit_code)
    except OSError as e:
        return fail("evaluate_model", e, 1)
    except KeyboardInterrupt:
        return fail("evaluate_model", "interrupted; no summary was written", 130)


def _run(a, prompts_path: Path) -> int:
    if a.write_prompt_table:
        from impact_rt import bundle as B
        from impact_rt.text_conditioner import build_conditioner, write_prompt_table
        cfg = B.read_config(a.model or B.DEFAULT_BUNDLE)
        wanted = [s.prompt for s in load_prompts_tsv(prompts_path).values()]
        wanted += [a.negative_prompt] if a.negative_prompt else []
        path = write_prompt_table(build_conditioner(cfg.conditioner), wanted, a.write_prompt_table)
        print(json.dumps({"prompt_table": str(path), "prompts": len(set(wanted))}))
        return 0
    if a.rescore:
        summary = rescore(Path(a.out), prompts_path, a.reference)
        print(json.dumps(summary, indent=1))
        return 0

    import numpy as np

    from impact_rt import ddpm
    from impact_rt.evaluation.seams import seam_changes, seams_of_changes
    from impact_rt.pipeline import Pipeline

    prompts = [s.prompt for s in load_prompts_tsv(prompts_path).values()]
    out = Path(a.out)
    clips = out / "clips"
    pipe = Pipeline.from_pretrained(a.model, backend=a.backend, precision=a.precision, prompt_table=a.prompt_table)
    settings = dict(iterations=a.iterations, diffusion_steps=a.diffusion_steps, guidance=a.guidance,
                    temperature=a.temperature, refine=a.refine)
    pipe.decode_config(**settings)      # the runtime's rules for the settings, before any clip
    pipe.candidates(a.candidates)
    clips.mkdir(parents=True, exist_ok=True)
    records, changes, t0, n_gen = [], [], time.perf_counter(), 0
    from tqdm import tqdm
    jobs = [(p, s) for p in prompts for s in range(a.first_seed, a.first_seed + a.seeds)]
    for i in tqdm(range(0, len(jobs), a.batch_size), unit="batch", file=sys.stderr):
        batch = jobs[i:i + a.batch_size]
        g = pipe.generate([p for p, _ in batch], seed=[s for _, s in batch], negative_prompt=a.negative_prompt,
                          candidates=a.candidates, **settings)
        n_gen += len(batch)
        changes.append(seam_changes(g.latents, pipe.model.cfg.patch))   # not the latents: 1 KB a clip
        for j, (p, s) in enumerate(batch):
            name = f"{i + j:04d}.wav"
            g.save(clips / name, index=j, force=True)
            records.append({"file": name, "prompt": p, "seed": s,
                            **({"candidate": g.settings["chosen"][j]} if "chosen" in g.settings else {})})
    gen_seconds = time.perf_counter() - t0
    atomic_write_text(clips / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    report, scores = score(clips, records, prompts, prompts_path, a.reference)
    dc = pipe.decode_config(**settings)
    summary = {
        "model": a.model or "default",
        "settings": {**dc.__dict__,   # + the step the DDPM loop started from (T̂ = 1 starts at t = 0)
                     "sampling_start": int(ddpm.sampling_schedule(pipe.model.cfg.train_steps,
                                                                  dc.diffusion_steps).timestep_map[-1])},
        "negative_prompt": a.negative_prompt, "candidates": pipe.candidates(a.candidates), "backend": a.backend,
        "precision": getattr(pipe.backend, "precision", "fp32"), "clips": len(records), "seeds_per_prompt": a.seeds, "first_seed": a.first_seed,
        **scores, "generation_seconds_per_clip": gen_seconds / max(1, n_gen), "reference": a.reference,
        # judge-free: how much the latents jump at the generator's patch grid (real latents ~0.9 / 0.7)
        "token_seams": seams_of_changes(*(np.concatenate(c) for c in zip(*changes)), pipe.model.cfg.patch),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
