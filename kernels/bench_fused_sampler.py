"""Benchmark of the fused sampler and of CUDA-graph decoding (GPU only; issue 6 targets).

    python -m kernels.bench_fused_sampler                 # kernel + decode targets, JSON to stdout
    python -m kernels.bench_fused_sampler --sweep         # tune FusedConfig per row count
    python -m kernels.bench_fused_sampler --only kernel   # or: decode
    python -m kernels.bench_fused_sampler --out bench.json

Kernel: one decoding iteration's T̂-step head sampling (fused, one launch, Philox noise) against
the eager reference ``impact_rt.sampler.sample_head`` (fp32 and the same dtype), timed with
``triton.testing.do_bench`` on the ``base`` head (w 1024, d 3) with random weights.

Decode: ``CudaBackend.decode_all`` (captured graphs, replayed; the first call that captures is
reported separately) for the issue-6 targets on the ``base`` preset with random weights, 10.24 s
clips (N = 256 tokens), T̂ = 100, against the eager torch backend at batch 1, T = 64:

    batch 1, T = 64  ≤ 0.25 s        batch 1, T = 8  ≤ 60 ms
    batch 64, T = 4  ≥ 100 clips/s   ≥ 10x the eager reference at batch 1, T = 64

The decode time covers conditions → latent tokens (the part issue 6 speeds up); the text encoder,
VAE decoder and vocoder are not included.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from impact_rt.cuda_graphs import FusedConfig


def _env() -> dict:
    import triton
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sm_count": p.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda}


def mild_schedule(steps: int):
    """A schedule with ᾱ_T ≈ 0.6 (β 1e-5..1e-3 over 1000 steps), respaced to ``steps``.

    Random weights under the cosine schedule amplify the state by ~1/sqrt(ᾱ) per step (to ~1e5 and,
    in fp16, past the format's range): errors would compare overflow with overflow. The kernel's work
    and time do not depend on the schedule's values, so the timings are those of the real schedule."""
    import numpy as np

    from impact_rt import ddpm
    return ddpm.Schedule(np.linspace(1e-5, 1e-3, 1000), np.arange(1000)).respace(steps)


def _base_model(dtype=torch.float32):
    from impact_rt.config import preset
    from impact_rt.model import IMPACT, randomize_
    torch.manual_seed(0)
    return randomize_(IMPACT(preset("base")), seed=0, scale=0.5).eval().cuda().to(dtype)


def _kernel_inputs(model, rows: int, steps: int, dtype):
    from kernels.fused_sampler import head_tables, pack_head
    head = model.head
    tab = mild_schedule(steps).tensors(device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    d = head.cond_embed.in_features
    hc = torch.randn(rows, d, device="cuda", generator=g)
    hu = torch.randn(rows, d, device="cuda", generator=g)
    with torch.inference_mode():
        w = pack_head(head, dtype)
        t_emb, coefs = head_tables(head, tab)
        cc, cu = head.cond_embed(hc), head.cond_embed(hu)
    noise = torch.randn(steps, rows, head.token_dim, device="cuda", generator=g)
    return dict(head=head, tab=tab, hc=hc, hu=hu, w=w, t_emb=t_emb, coefs=coefs, cc=cc, cu=cu, noise=noise)


def bench_kernel(rows_list, steps=100, dtype=torch.float16, check=True) -> list[dict]:
    import copy

    from triton.testing import do_bench

    from impact_rt.sampler import sample_head
    from kernels.fused_sampler import fused_sample
    model = _base_model()
    out = []
    g, t = torch.full((1,), 3.0, device="cuda"), torch.ones(1, device="cuda")
    head_d = copy.deepcopy(model.head).to(dtype)
    for rows in rows_list:
        x = _kernel_inputs(model, rows, steps, dtype)
        seeds = torch.arange(rows, dtype=torch.int64, device="cuda")
        fused = lambda: fused_sample(x["w"], x["cc"], x["cu"], x["t_emb"], x["coefs"], seeds, g, t,  # noqa: E731
                                     rows_per_seed=1)
        with torch.inference_mode():
            rec = {"rows": rows, "steps": steps, "dtype": str(dtype).split(".")[-1]}
            if check:
                a = fused_sample(x["w"], x["cc"], x["cu"], x["t_emb"], x["coefs"], x["noise"], 3.0, 1.0)
                ref = sample_head(x["head"], x["tab"], x["hc"], x["hu"], x["noise"], 3.0, 1.0)
                rec["rel_err_vs_fp32"] = float((a - ref).abs().max() / ref.abs().max())
            rec["fused_ms"] = do_bench(fused, warmup=5, rep=50)
            rec["eager_fp32_ms"] = do_bench(lambda: sample_head(x["head"], x["tab"], x["hc"], x["hu"], x["noise"],
                                                                3.0, 1.0), warmup=1, rep=10)
            rec["eager_same_dtype_ms"] = do_bench(lambda: sample_head(
                head_d, x["tab"], x["hc"].to(dtype), x["hu"].to(dtype), x["noise"].to(dtype), 3.0, 1.0),
                warmup=1, rep=10)
            rec["speedup_vs_eager_same_dtype"] = rec["eager_same_dtype_ms"] / rec["fused_ms"]
        out.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    return out


# The sweep's grid: few rows (batch 1) are bound by the latency of streaming the weights through a
# few SMs, so the grid trades columns per program (block_n, split) against the bytes in flight per
# loop trip (block_k, num_stages). Many rows: larger row blocks, no split.
FEW_ROWS_GRID = [FusedConfig(16, bn, bk, 32, split, 4, ns)
                 for bn, split in ((32, 32), (64, 16), (128, 8)) for bk in (64, 128, 256) for ns in (2, 3, 4)]
MANY_ROWS_GRID = [FusedConfig(br, bn, bk, 32, 1, nw, ns)
                  for br in (32, 64) for bn in (64, 128) for bk in (64, 128) for nw in (4, 8) for ns in (2, 3)]


def _head_inputs(rows: int, steps: int, dtype):
    """The base head with random weights and kernel inputs (mild schedule), without the encoder."""
    from impact_rt.config import preset
    from impact_rt.diffusion_head import DiffusionHead
    from impact_rt.model import randomize_
    from kernels.fused_sampler import head_tables, pack_head
    cfg = preset("base")
    torch.manual_seed(0)
    head = randomize_(DiffusionHead(cfg.token_dim, cfg.dim, cfg.head_width, cfg.head_depth), seed=0,
                      scale=0.5).eval().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.inference_mode():
        w = pack_head(head, dtype)
        t_emb, coefs = head_tables(head, mild_schedule(steps).tensors(device="cuda"))
        cc = head.cond_embed(torch.randn(rows, cfg.dim, device="cuda", generator=g))
        cu = head.cond_embed(torch.randn(rows, cfg.dim, device="cuda", generator=g))
    return w, cc, cu, t_emb, coefs


def _compile_configs(job):
    """Worker of the parallel warm-up: launch each config once so that Triton's on-disk cache holds it."""
    rows, steps, dtype_name, cfgs = job
    from kernels.fused_sampler import fused_sample
    dtype = getattr(torch, dtype_name)
    w, cc, cu, t_emb, coefs = _head_inputs(rows, steps, dtype)
    seeds = torch.arange(rows, dtype=torch.int64, device="cuda")
    ok = []
    for c in cfgs:
        cfg = FusedConfig(*c)
        try:
            with torch.inference_mode():
                fused_sample(w, cc, cu, t_emb, coefs, seeds, 3.0, 1.0, rows_per_seed=1, config=cfg)
            torch.cuda.synchronize()
            ok.append(c)
        except Exception as e:  # out of resources etc.: reported, skipped
            print(f"rows {rows} {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    return ok


def sweep(rows_list, steps=100, dtype=torch.float16, workers=12) -> list[dict]:
    """Time every valid config of the grid for each row count (compiles first, in parallel processes)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from triton.testing import do_bench

    from impact_rt.config import ConfigError
    from impact_rt.cuda_graphs import choose_config
    from kernels.fused_sampler import fused_sample
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    dtype_name = str(dtype).split(".")[-1]
    results = []
    for rows in rows_list:
        default = choose_config(rows, 1024, 128, sm)
        grid = [default] + (FEW_ROWS_GRID if rows <= 64 else MANY_ROWS_GRID)
        cands = []
        for cfg in grid:
            try:
                cfg.validate(1024, 128)
            except ConfigError:
                continue
            if cfg.split > 1 and cfg.programs(rows) > sm:
                continue
            t = tuple(cfg.__dict__.values())
            if t not in cands:
                cands.append(t)
        n = max(1, min(workers, len(cands)))
        jobs = [(rows, steps, dtype_name, cands[i::n]) for i in range(n)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as ex:
            compiled = {c for part in ex.map(_compile_configs, jobs) for c in part}
        print(f"rows {rows}: {len(compiled)}/{len(cands)} configs compiled in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
        w, cc, cu, t_emb, coefs = _head_inputs(rows, steps, dtype)
        seeds = torch.arange(rows, dtype=torch.int64, device="cuda")
        g, t = torch.full((1,), 3.0, device="cuda"), torch.ones(1, device="cuda")
        timed = []
        for c in cands:
            if c not in compiled:
                continue
            cfg = FusedConfig(*c)
            with torch.inference_mode():
                ms = do_bench(lambda: fused_sample(w, cc, cu, t_emb, coefs, seeds, g, t, rows_per_seed=1,
                                                   config=cfg), warmup=3, rep=15, return_mode="median")
            timed.append({"config": cfg.__dict__, "ms": ms})
        timed.sort(key=lambda r: r["ms"])
        table_ms = None
        if timed and FusedConfig(**timed[0]["config"]).split > 1:   # the best with the precomputed adaLN table
            cfg = FusedConfig(**timed[0]["config"])
            with torch.inference_mode():
                table_ms = do_bench(lambda: fused_sample(w, cc, cu, t_emb, coefs, seeds, g, t, rows_per_seed=1,
                                                         config=cfg, adaln_table=True),
                                    warmup=3, rep=15, return_mode="median")
            print(f"rows {rows}: best config with the adaLN table: {table_ms:.2f} ms "
                  f"(without: {timed[0]['ms']:.2f})", file=sys.stderr, flush=True)
        d = next((r["ms"] for r in timed if r["config"] == default.__dict__), None)
        rec = {"rows": rows, "steps": steps, "dtype": dtype_name, "default": default.__dict__, "default_ms": d,
               "best_with_adaln_table_ms": table_ms,
               "best": timed[0]["config"] if timed else None, "best_ms": timed[0]["ms"] if timed else None,
               "all": timed}
        results.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "all"}), file=sys.stderr, flush=True)
    return results


DECODE_PATHS = ("default", "tuned", "no_table", "fused", "gemm", "gemm_compiled", "gemm_compiled_max", "gemm_no_table",
                "steps", "steps_partials", "steps_pdl", "steps_pdl_partials", "steps_pdl_noprefetch_partials",
                "steps_partials_splitk4", "encoder_compiled", "steps_partials_splitk4_encoder_compiled")


def _hopper() -> bool:
    """Whether programmatic dependent launch runs here (``step_kernels.pdl_unavailable``)."""
    from kernels.step_kernels import pdl_unavailable
    return torch.cuda.is_available() and pdl_unavailable("cuda") is None


def bench_decode(precision="fp16", eager_reference=True, cells=((1, 64), (1, 8), (64, 4)),
                 few_rows_config: FusedConfig | None = None, paths=DECODE_PATHS) -> dict:
    from impact_rt.config import DecodeConfig, preset
    from impact_rt.cuda_backend import CudaBackend
    from impact_rt.decoding import DecodeTables, TorchNoise, decode
    from impact_rt.reference import TorchBackend
    from impact_rt.text_conditioner import HashConditioner
    cfg = preset("base")
    model = _base_model()
    unknown = set(paths) - set(DECODE_PATHS)
    if unknown:
        raise ValueError(f"unknown decode paths {sorted(unknown)}; known: {', '.join(DECODE_PATHS)}")
    options = {
        "default": {},
        # the sweep's winner for few rows, for the batch-1 cells
        "tuned": {"config": few_rows_config} if few_rows_config is not None else None,
        "no_table": {"config": few_rows_config},
        # every cell through each head path, for the crossover (the default picks by gemm_rows)
        "fused": {"gemm_rows": 1 << 30},
        "gemm": {"gemm_rows": 1},
        "gemm_compiled": {"gemm_rows": 1, "compile_head": "inductor"},
        "gemm_compiled_max": {"gemm_rows": 1, "compile_head": "inductor:max-autotune-no-cudagraphs"},
        # batch 1 only: the GEMM path with the adaLN modulation computed inside every step (session 6
        # made the precomputed table the default below its byte cap)
        "gemm_no_table": {"gemm_rows": 1, "adaln_table": False},
        # batch 1 only: the head as 2 + 2d Triton launches a step (kernels/step_kernels.py), with
        # LayerNorm partials and/or programmatic dependent launch (the latter on sm_90+ only)
        "steps": {"step_kernels": "on"},
        "steps_partials": {"step_kernels": "partials"},
        "steps_pdl": {"step_kernels": "pdl"},
        "steps_pdl_partials": {"step_kernels": "pdl,partials"},
        "steps_pdl_noprefetch_partials": {"step_kernels": "pdl,noprefetch,partials"},
        "steps_partials_splitk4": {"step_kernels": "partials,splitk4"},
        # the latent encoder through inductor too (CudaBackend(compile_encoder=...)): every cell
        "encoder_compiled": {"compile_encoder": "inductor"},
        "steps_partials_splitk4_encoder_compiled": {"step_kernels": "partials,splitk4", "compile_encoder": "inductor"},
    }
    if not _hopper():
        for name in ("steps_pdl", "steps_pdl_partials", "steps_pdl_noprefetch_partials"):
            options[name] = None
    # "default" always runs: the shipped configuration, beside whichever paths were asked for
    backends = {name: CudaBackend(model, device="cuda", precision=precision, **kw) for name, kw in options.items()
                if kw is not None and (name == "default" or name in paths)}
    cond_enc = HashConditioner(cfg.text_len, cfg.text_dim)
    res = {"precision": precision, "schedule": "mild (values only; timings as cosine)", "targets": {},
           "few_rows_config": few_rows_config.__dict__ if few_rows_config else None}

    def tables_for(dc):
        return dataclasses.replace(DecodeTables.build(cfg, dc), schedule=mild_schedule(dc.diffusion_steps))

    def timed(fn, reps):
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return min(ts), sorted(ts)[len(ts) // 2]

    for b, t_iters in cells:
        dc = DecodeConfig(iterations=t_iters, diffusion_steps=100, guidance=5.0)
        tables = tables_for(dc)
        for name, be in backends.items():
            if b > 1 and name not in ("default", "fused", "gemm", "gemm_compiled", "gemm_compiled_max",
                                      "encoder_compiled"):
                continue
            if b == 1 and name == "fused":   # the default at batch 1
                continue
            # "no_table": the adaLN modulation computed inside the loop, not precomputed for every
            # step (the default since session 5); read when the graphs are captured
            os.environ["IMPACT_RT_ADALN_TABLE"] = "0" if name == "no_table" else "1"
            states, mask = cond_enc.encode([f"prompt {i}" for i in range(b)])
            c, m = be.project(states, mask)
            nc, nm = be.null(b)
            order = TorchNoise(list(range(b)), "cuda").order(b, cfg.num_tokens)
            seeds = list(range(b))
            run = lambda: be.decode_all(cfg, dc, c, m, nc, nm, seeds, order, tables)  # noqa: E731
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = run()
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                best, med = timed(run, 5)
            key = f"b{b}_T{t_iters}" + ("" if name == "default" else f"_{name}")
            res[key] = {"first_call_with_capture_s": first, "best_s": best, "median_s": med, "clips_per_s": b / med,
                        "finite": bool(torch.isfinite(out).all())}
            print(json.dumps({key: res[key]}), file=sys.stderr, flush=True)
    if eager_reference:
        dc = DecodeConfig(iterations=64, diffusion_steps=100, guidance=5.0)
        tables = tables_for(dc)
        ref_be = TorchBackend(model)
        with torch.inference_mode():
            states, mask = cond_enc.encode(["prompt 0"])
            c, m = model.project_condition(states.cuda(), mask.cuda())
            nc, nm = model.null(1)
            short = DecodeConfig(iterations=2, diffusion_steps=100, guidance=5.0)   # warm-up (cuBLAS, allocator)
            decode(ref_be, cfg, short, c, m, nc, nm, TorchNoise([0], "cuda"), tables_for(short))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            decode(ref_be, cfg, dc, c, m, nc, nm, TorchNoise([0], "cuda"), tables)
            torch.cuda.synchronize()
            res["eager_fp32_b1_T64_s"] = time.perf_counter() - t0
    tg = res["targets"]

    def best_of(key):
        keys = [key] + [f"{key}_{name}" for name in backends if name != "default"]
        got = [k for k in keys if k in res]
        if not got:
            return None
        best = min(got, key=lambda k: res[k]["median_s"])
        res.setdefault("best_path", {})[key] = best    # the targets are read from the fastest path
        return res[best]["median_s"]

    b1_t64, b1_t8, b64_t4 = best_of("b1_T64"), best_of("b1_T8"), best_of("b64_T4")
    if b1_t64 is not None:
        tg["b1_T64_le_0.25s"] = b1_t64 <= 0.25
        if eager_reference:
            res["speedup_b1_T64_vs_eager"] = res["eager_fp32_b1_T64_s"] / b1_t64
            tg["b1_T64_ge_10x_eager"] = res["speedup_b1_T64_vs_eager"] >= 10
    if b1_t8 is not None:
        tg["b1_T8_le_60ms"] = b1_t8 <= 0.060
    if b64_t4 is not None:
        tg["b64_T4_ge_100_clips_per_s"] = 64 / b64_t4 >= 100
    res["graph_cache"] = {k: be.stats for k, be in backends.items()}
    res["paths"] = sorted(backends)
    for be in backends.values():
        be.close()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("kernel", "decode"))
    ap.add_argument("--sweep", action="store_true", help="tune FusedConfig for --rows")
    ap.add_argument("--rows", type=int, nargs="*", default=[4, 8, 32, 128, 1024, 6208])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    ap.add_argument("--no-eager", action="store_true", help="skip the slow eager decode reference")
    ap.add_argument("--cells", nargs="*", default=["1x64", "1x8", "64x4"], help="decode cells BATCHxT")
    ap.add_argument("--paths", nargs="*", default=list(DECODE_PATHS), choices=DECODE_PATHS,
                    help="head paths the decode cells run ('default' always runs)")
    ap.add_argument("--tuned-from", help="a --sweep JSON: its best config for the fewest rows runs the batch-1 cells")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fused_sampler needs a CUDA GPU (nothing measured)", file=sys.stderr)
        return 2
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    report = {"env": _env()}
    if a.sweep:
        report["sweep"] = sweep(a.rows, a.steps, dtype)
    else:
        if a.only in (None, "kernel"):
            report["kernel"] = bench_kernel(a.rows, a.steps, dtype)
        if a.only in (None, "decode"):
            few = None
            if a.tuned_from:
                with open(a.tuned_from) as f:
                    sw = min(json.load(f)["sweep"], key=lambda r: r["rows"])
                few = FusedConfig(**sw["best"]) if sw.get("best") else None
            cells = [tuple(int(v) for v in c.split("x")) for c in a.cells]
            report["decode"] = bench_decode(a.dtype, eager_reference=not a.no_eager, cells=cells,
                                            few_rows_config=few, paths=a.paths)
    text = json.dumps(report, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
