"""Benchmark: the head's T̂-step sampling loop, eager reference vs the native fused sampler.

    python kernels/bench_native_sampler.py                      # small head, K ∈ {16, 64, 256}
    python kernels/bench_native_sampler.py --rows 16 --repeats 9 --json out.json

K cond rows + K uncond rows (CFG) per call, T̂ = 100, the `small` preset's head (w=256, d=3,
C=128, D=256) with random weights (speed does not depend on them). Every timed call is the full
contract: ``sampler.sample_head`` for the reference and ``NativeHeadSampler.sample`` (condition
and timestep embeddings in torch, the loop natively) for the native paths. Runs are interleaved
(reference, fp32, bf16, reference, ...) so that load on a shared machine hits all of them alike;
the table gives medians, the min–max spread and the speedup of medians measured in this run,
plus the median CPU time of the process (all threads: on a loaded machine, wall time well above
CPU time / threads means the threads waited for a core).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from impact_rt import ddpm
from impact_rt import native_sampler as ns
from impact_rt.config import preset
from impact_rt.diffusion_head import DiffusionHead
from impact_rt.model import randomize_
from impact_rt.sampler import sample_head


def cpu_name() -> str:
    from impact_rt.cpu_backend import cpuinfo
    return cpuinfo("model name") or platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 64, 256], help="K (cond rows; as many uncond)")
    ap.add_argument("--steps", type=int, default=100, help="T̂")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", default="auto", choices=list(ns.SPLITS), help="native thread split")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--no-reference", action="store_true", help="native paths only (no speedup column)")
    ap.add_argument("--json", help="also write the raw timings here")
    args = ap.parse_args(argv)

    ok, why = ns.available()
    if not ok:
        raise SystemExit(f"native sampler not available: {why}")
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    head = randomize_(DiffusionHead(cfg.token_dim, cfg.dim, cfg.head_width, cfg.head_depth), seed=0).eval()
    tab = ddpm.sampling_schedule(cfg.train_steps, args.steps).tensors()
    paths = {}
    if not args.no_reference:
        paths["reference (eager fp32)"] = None
    kernels = [("fp32", None), ("bf16", None)]
    kernels += [("bf16", k) for k in ("avx512-bf16",) if "amx-bf16" in ns.isas() and k in ns.isas()]
    for dtype, isa in kernels:   # the auto-picked kernel per dtype, plus vdpbf16ps when AMX hides it
        s = ns.NativeHeadSampler(head, dtype, threads=args.threads, split=args.split, isa=isa)
        paths[f"native {dtype} ({s.kernel})"] = s

    def run(name, hc, hu, noise):
        s = paths[name]
        with torch.inference_mode():
            if s is None:
                return sample_head(head, tab, hc, hu, noise, 3.0, 1.0)
            return s.sample(hc, hu, noise, 3.0, 1.0, tab)

    load0 = os.getloadavg()
    results, cpu_times = {}, {}
    for k in args.rows:
        g = torch.Generator().manual_seed(k)
        hc, hu = torch.randn(k, cfg.dim, generator=g), torch.randn(k, cfg.dim, generator=g)
        noise = torch.randn(args.steps, k, cfg.token_dim, generator=g)
        for name in paths:           # warm-up (packing caches, OpenMP pool, page faults)
            run(name, hc, hu, noise)
        times = {name: [] for name in paths}
        cpu = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name in paths:
                t0, c0 = time.perf_counter(), time.process_time()
                run(name, hc, hu, noise)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        results[k] = times
        cpu_times[k] = cpu
    load1 = os.getloadavg()

    flop_per_row_step = 2 * (cfg.token_dim * cfg.head_width + cfg.head_depth * 5 * cfg.head_width ** 2
                             + 2 * cfg.head_width ** 2 + 2 * cfg.token_dim * cfg.head_width)
    print(f"\nHead sampling loop, `{args.preset}` head (w={cfg.head_width}, d={cfg.head_depth}, "
          f"C={cfg.token_dim}), T̂={args.steps}, CFG (2K rows), {args.threads} threads, "
          f"{args.repeats} interleaved runs each")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after\n")
    print("| K | path | median ms | min–max ms | CPU ms (all threads) | GFLOP/s | speedup vs reference |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for k, times in results.items():
        ref = statistics.median(next(iter(times.values()))) if not args.no_reference else None
        flop = flop_per_row_step * 2 * k * args.steps
        for name, ts in times.items():
            med = statistics.median(ts)
            speed = f"{ref / med:.1f}x" if ref else "–"
            cpu_med = statistics.median(cpu_times[k][name])
            print(f"| {k} | {name} | {med * 1e3:.1f} | {min(ts) * 1e3:.1f}–{max(ts) * 1e3:.1f} | "
                  f"{cpu_med * 1e3:.0f} | {flop / med / 1e9:.0f} | {speed} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "threads": args.threads, "steps": args.steps, "load": [load0, load1],
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                       "times": {str(k): v for k, v in results.items()},
                       "cpu_times": {str(k): v for k, v in cpu_times.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
