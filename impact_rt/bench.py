"""``impact-rt bench``: latency, real-time factor and peak memory on a grid, against the reference.

The grid is the paper's Table 8 shape: batch sizes × decoding iterations T × diffusion steps T̂
× backend. Each backend runs in its own worker process (so its peak resident memory is its
own); the eager PyTorch reference is measured in the same run, and every cell reports its
speed-up over the reference cell of the same shape. Warm-up runs are excluded; the latency is
the median of the repeats, with min and max.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLIP_SECONDS = 10.24
FIELDS = ("backend", "precision", "batch", "iterations", "diffusion_steps", "latency_s", "rtf", "peak_rss_mb",
          "speedup_vs_reference")
DEFAULT_PROMPTS = ["thunder", "a dog barking", "rain falling on a roof", "a piano playing",
                   "a man speaking", "birds singing", "a car engine running", "footsteps"]


def _audiocaps_prompts(n: int) -> list[str]:
    p = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audiocaps" / "val.csv"
    if p.is_file():
        import csv
        with open(p, newline="") as f:
            caps = [r["caption"] for r in csv.DictReader(f)]
        if caps:
            return caps[:n]
    return (DEFAULT_PROMPTS * (n // len(DEFAULT_PROMPTS) + 1))[:n]


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cells(model: str, backend: str, cells: list[dict], repeats: int, warmup: int, threads: int | None,
              precision: str | None = None) -> list[dict]:
    """Measure cells in this process (the worker side)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    from .pipeline import Pipeline
    if model.startswith("random:"):
        pipe = Pipeline.random(model.split(":", 1)[1], backend=backend, precision=precision)
    else:
        pipe = Pipeline.from_pretrained(None if model == "default" else model, backend=backend, precision=precision)
    out = []
    for cell in cells:
        prompts = _audiocaps_prompts(cell["batch"])
        # one candidate a clip: a bundle's best-of-K reranking multiplies the decoding by K on every
        # backend alike, so the cells measure the decoding itself (the model card gives s/clip with K)
        # and the refinement passes the cell names (0 unless --refine), whatever the bundle's default
        kw = dict(iterations=cell["iterations"], diffusion_steps=cell["diffusion_steps"], candidates=1,
                  refine=cell.get("refine", 0))
        for i in range(warmup):
            pipe.generate(prompts, seed=i, **kw)
        _reset_peak_rss()
        lat, parts = [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            g = pipe.generate(prompts, seed=1000 + i, **kw)
            lat.append(time.perf_counter() - t0)
            parts.append(g.timings)
        med = statistics.median(lat)
        out.append({"backend": backend, "precision": g.settings.get("precision", "fp32"), **cell, "latency_s": med, "latency_min_s": min(lat),
                    "latency_max_s": max(lat), "repeats": repeats,
                    "rtf": med / (cell["batch"] * CLIP_SECONDS), "peak_rss_mb": round(_peak_rss_mb(), 1),
                    "parts_s": {k: statistics.median(p[k] for p in parts) for k in parts[0]}})
    pipe.close()
    return out


def machine() -> dict:
    import torch
    from .cpu_backend import cpuinfo
    cpu = cpuinfo("model name") or platform.processor() or ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def bench(model: str, backends: list[str], batches: list[int], iterations: list[int], steps: list[int],
          repeats: int = 3, warmup: int = 1, threads: int | None = None, isolate: bool = True,
          refine: list[int] = (0,)) -> dict:
    cells = [{"batch": b, "iterations": t, "diffusion_steps": k, "refine": r}
             for b in batches for t in iterations for k in steps for r in refine]
    order = ["torch"] + [b for b in backends if b != "torch"]
    records = []
    for spec in order:
        be, _, precision = spec.partition(":")       # "cpu:bf16": a backend in a given precision
        precision = precision or None
        if isolate:
            payload = json.dumps({"model": model, "backend": be, "cells": cells, "repeats": repeats,
                                  "warmup": warmup, "threads": threads, "precision": precision})
            p = subprocess.run([sys.executable, "-m", "impact_rt.bench", "--worker", payload],
                               capture_output=True, text=True)
            if p.returncode != 0:
                err = (p.stderr.strip().splitlines() or ["worker failed"])[-1]
                raise RuntimeError(f"benchmark of backend {spec} failed: {err}")
            records += json.loads(p.stdout.strip().splitlines()[-1])
        else:
            records += run_cells(model, be, cells, repeats, warmup, threads, precision)
    def cell(r):
        return r["batch"], r["iterations"], r["diffusion_steps"], r.get("refine", 0)
    ref = {cell(r): r["latency_s"] for r in records if r["backend"] == "torch"}
    for r in records:
        r["speedup_vs_reference"] = ref[cell(r)] / r["latency_s"]
    return {"model": model, "machine": machine(), "repeats": repeats, "warmup": warmup, "records": records}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Model `{result['model']}`; {m['cpu']} ({m['cores']} cores){'; GPU ' + m['gpu'] if m['gpu'] else ''}; "
             f"torch {m['torch']}; median of {result['repeats']} runs after {result['warmup']} warm-up; "
             f"load average at the end {tuple(round(x, 2) for x in m['load_avg']) if m['load_avg'] else 'n/a'}.", "",
             "| backend | batch | T | T̂ | latency s (min–max) | RTF | peak RSS MB | vs reference | condition / decode / audio s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        p = r.get("parts_s", {})
        prec = f" ({r['precision']})" if r.get("precision") else ""
        passes = f" + {r['refine']} refine" if r.get("refine") else ""
        lines.append(f"| {r['backend']}{prec} | {r['batch']} | {r['iterations']}{passes} | {r['diffusion_steps']} | "
                     f"{r['latency_s']:.3f} ({r['latency_min_s']:.3f}–{r['latency_max_s']:.3f}) | {r['rtf']:.4f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['speedup_vs_reference']:.2f}x | "
                     f"{p.get('condition_s', 0):.3f} / {p.get('decode_s', 0):.3f} / {p.get('audio_s', 0):.3f} |")
    return "\n".join(lines)


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="default", help="bundle folder, 'default' (shipped) or random:PRESET")
    ap.add_argument("--backends", default="torch",
                    help="comma-separated, each NAME or NAME:PRECISION (e.g. cpu:fp32,cpu:bf16); "
                         "the torch reference always runs")
    ap.add_argument("--batch-sizes", type=_ints, default=[1])
    ap.add_argument("--iterations", type=_ints, default=[16])
    ap.add_argument("--diffusion-steps", type=_ints, default=[100])
    ap.add_argument("--refine", type=_ints, default=[0], help="re-masking passes after the decode (a grid axis)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", action="store_true",
                    help="print the result as JSON (machine, settings and a record per cell) instead of markdown")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file (an existing one needs --force)")
    ap.add_argument("--force", action="store_true", help="let --out overwrite an existing file")


def check_model(model: str) -> None:
    """--model: 'default', random:PRESET or a folder holding config.json (ConfigError otherwise)."""
    from .config import ConfigError, preset
    if model.startswith("random:"):
        preset(model.split(":", 1)[1])
    elif model != "default" and not (Path(model) / "config.json").is_file():
        raise ConfigError(f"--model {model}: not 'default', random:PRESET or a model bundle folder")


def run(args) -> int:
    """Every argument is checked before any cell runs (exit 2); a worker that fails is exit 1."""
    from .backends import BACKENDS, available, precisions
    from .config import ConfigError, DecodeConfig
    from .fileio import atomic_write_text, output_file_problem
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        name, _, precision = b.partition(":")
        if name not in BACKENDS or name == "auto":
            raise ConfigError(f"unknown backend {name!r} for bench (use {', '.join(x for x in BACKENDS if x != 'auto')})")
        ok, why = available(name)
        if not ok:
            raise ConfigError(f"backend {name} is not available here: {why}")
        if ":" in b and precision not in precisions(name):
            raise ConfigError(f"precision {precision!r} is not available for the {name} backend "
                              f"(use {', '.join(precisions(name))})")
    check_model(args.model)
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if not args.batch_sizes or any(not 1 <= v <= 1024 for v in args.batch_sizes):
        raise ConfigError(f"batch sizes must be in 1..1024, got {args.batch_sizes}")
    if not args.iterations or not args.diffusion_steps:
        raise ConfigError("--iterations and --diffusion-steps need at least one value each")
    if not args.refine:
        raise ConfigError("--refine needs at least one value")
    for t in args.iterations:          # the runtime's own rule (every bundle's latent grid has 256 tokens)
        for k in args.diffusion_steps:
            for r in args.refine:
                DecodeConfig(iterations=t, diffusion_steps=k, refine=r).validate(256)
    problem = output_file_problem(args.out, args.force) if args.out else None
    if problem:
        raise ConfigError(problem)
    result = bench(args.model, backends, args.batch_sizes, args.iterations, args.diffusion_steps,
                   args.repeats, args.warmup, args.threads, refine=args.refine)
    md = markdown(result)
    if args.out:
        atomic_write_text(Path(args.out), md + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(md)
    return 0


def _worker(payload: str) -> int:
    """One backend's cells in this process; a failure is one line on stderr (the parent reports it)."""
    import warnings
    warnings.simplefilter("ignore")
    a = json.loads(payload)
    try:
        recs = run_cells(a["model"], a["backend"], a["cells"], a["repeats"], a["warmup"], a["threads"],
                         a.get("precision"))
    except Exception as e:   # noqa: BLE001 - reported, not hidden: the parent exits 1 with this line
        print((str(e).splitlines() or [type(e).__name__])[0], file=sys.stderr)
        return 1
    print(json.dumps(recs))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    ap = argparse.ArgumentParser(prog="impact-rt bench")
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
