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
import itertools
import json
import sys
import time

import torch


def _env() -> dict:
    import triton
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sm_count": p.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda}


def _base_model(dtype=torch.float32):
    from impact_rt.config import preset
    from impact_rt.model import IMPACT, randomize_
    torch.manual_seed(0)
    return randomize_(IMPACT(preset("base")), seed=0, scale=0.5).eval().cuda().to(dtype)


def _kernel_inputs(model, rows: int, steps: int, dtype):
    from impact_rt import ddpm
    from kernels.fused_sampler import head_tables, pack_head
    head = model.head
    tab = ddpm.Schedule.cosine(1000).respace(steps).tensors(device="cuda")
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


def sweep(rows_list, steps=100, dtype=torch.float16) -> list[dict]:
    from triton.testing import do_bench

    from impact_rt.config import ConfigError
    from impact_rt.cuda_graphs import FusedConfig, choose_config
    from kernels.fused_sampler import fused_sample
    model = _base_model()
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    g, t = torch.full((1,), 3.0, device="cuda"), torch.ones(1, device="cuda")
    results = []
    for rows in rows_list:
        x = _kernel_inputs(model, rows, steps, dtype)
        seeds = torch.arange(rows, dtype=torch.int64, device="cuda")
        best, default = None, choose_config(rows, 1024, 128, sm)
        for br, bn, bk, split, nw, ns in itertools.product((16, 32, 64), (32, 64, 128), (32, 64, 128),
                                                           (1, 2, 4, 8, 16, 32), (4, 8), (2, 3)):
            cfg = FusedConfig(br, bn, bk, 32, split, nw, ns)
            try:
                cfg.validate(1024, 128)
            except ConfigError:
                continue
            if split > 1 and cfg.programs(rows) > sm:
                continue
            try:
                ms = do_bench(lambda: fused_sample(x["w"], x["cc"], x["cu"], x["t_emb"], x["coefs"], seeds, g, t,
                                                   rows_per_seed=1, config=cfg), warmup=2, rep=10)
            except Exception as e:  # out of resources etc.
                print(f"rows {rows} {cfg}: {type(e).__name__}", file=sys.stderr)
                continue
            if best is None or ms < best[1]:
                best = (cfg, ms)
        d_ms = do_bench(lambda: fused_sample(x["w"], x["cc"], x["cu"], x["t_emb"], x["coefs"], seeds, g, t,
                                             rows_per_seed=1, config=default), warmup=2, rep=10)
        rec = {"rows": rows, "best": best[0].__dict__ if best else None, "best_ms": best[1] if best else None,
               "default": default.__dict__, "default_ms": d_ms}
        results.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    return results


def bench_decode(precision="fp16", eager_reference=True) -> dict:
    from impact_rt.config import DecodeConfig, preset
    from impact_rt.cuda_backend import CudaBackend
    from impact_rt.decoding import DecodeTables, TorchNoise, decode
    from impact_rt.reference import TorchBackend
    from impact_rt.text_conditioner import HashConditioner
    cfg = preset("base")
    model = _base_model()
    be = CudaBackend(model, device="cuda", precision=precision)
    cond_enc = HashConditioner(cfg.text_len, cfg.text_dim)
    res = {"precision": precision, "targets": {}}

    def inputs(b):
        states, mask = cond_enc.encode([f"prompt {i}" for i in range(b)])
        c, m = be.project(states, mask)
        nc, nm = be.null(b)
        order = TorchNoise(list(range(b)), "cuda").order(b, cfg.num_tokens)
        return c, m, nc, nm, order

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

    for b, t_iters in ((1, 64), (1, 8), (64, 4)):
        dc = DecodeConfig(iterations=t_iters, diffusion_steps=100, guidance=5.0)
        tables = DecodeTables.build(cfg, dc)
        c, m, nc, nm, order = inputs(b)
        seeds = list(range(b))
        with torch.inference_mode():
            t0 = time.perf_counter()
            be.decode_all(cfg, dc, c, m, nc, nm, seeds, order, tables)
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            best, med = timed(lambda: be.decode_all(cfg, dc, c, m, nc, nm, seeds, order, tables), 5)
        res[f"b{b}_T{t_iters}"] = {"first_call_with_capture_s": first, "best_s": best, "median_s": med,
                                   "clips_per_s": b / med}
        print(json.dumps({f"b{b}_T{t_iters}": res[f"b{b}_T{t_iters}"]}), file=sys.stderr, flush=True)
    if eager_reference:
        dc = DecodeConfig(iterations=64, diffusion_steps=100, guidance=5.0)
        tables = DecodeTables.build(cfg, dc)
        ref_be = TorchBackend(model)
        with torch.inference_mode():
            states, mask = cond_enc.encode(["prompt 0"])
            c, m = model.project_condition(states.cuda(), mask.cuda())
            nc, nm = model.null(1)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            decode(ref_be, cfg, dc, c, m, nc, nm, TorchNoise([0], "cuda"), tables)
            torch.cuda.synchronize()
            res["eager_fp32_b1_T64_s"] = time.perf_counter() - t0
    tg = res["targets"]
    tg["b1_T64_le_0.25s"] = res["b1_T64"]["median_s"] <= 0.25
    tg["b1_T8_le_60ms"] = res["b1_T8"]["median_s"] <= 0.060
    tg["b64_T4_ge_100_clips_per_s"] = res["b64_T4"]["clips_per_s"] >= 100
    if eager_reference:
        res["speedup_b1_T64_vs_eager"] = res["eager_fp32_b1_T64_s"] / res["b1_T64"]["median_s"]
        tg["b1_T64_ge_10x_eager"] = res["speedup_b1_T64_vs_eager"] >= 10
    res["graph_cache"] = be.stats
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
            report["decode"] = bench_decode(a.dtype, eager_reference=not a.no_eager)
    text = json.dumps(report, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
