"""Session 31: re-masking refinement after a full decode (an SDEdit-like second pass for masked models).

After the usual decode (T = 16, the paper's cosine mask schedule), a fresh random order re-masks a
share r of the finished clip's tokens, and the tail of the same schedule decodes them again from the
iteration t0 where at most r·N tokens are still masked (with that iteration's β and the same head).
The first decode is the same as shipped (same seeds, same order, same head noise), so each refined
clip is paired with its baseline. The refinement's order and head noise come from seed + 1,000,003.
Variants: base | rm0.7 | rm0.9 (r), optionally x2 (two refinement passes, e.g. rm0.7x2).
Usage: OUT A B variant[,variant...] [prompt | ALL (every prompt of the eval table)]"""
import json, shutil, sys
from pathlib import Path

import torch

import impact_rt.pipeline as pipeline_module
from impact_rt.decoding import DecodeTables, TorchNoise, decode as plain_decode
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
from impact_rt.pipeline import Pipeline

OFFSET = 1_000_003


def refine(backend, model_cfg, dc, cond, cond_mask, null_cond, null_mask, tokens, seeds, share, passes):
    tables = DecodeTables.build(model_cfg, dc)
    plan = tables.plan
    t0 = next(t for t in range(plan.iterations) if plan.masked[t] <= share * plan.num_tokens)
    b, n, c, steps = cond.shape[0], model_cfg.num_tokens, model_cfg.token_dim, dc.diffusion_steps
    cond2, mask2 = torch.cat([cond, null_cond]), torch.cat([cond_mask, null_mask])
    for p in range(passes):
        noise = TorchNoise([s + OFFSET * (p + 1) for s in seeds])
        order = noise.order(b, n)
        for t in range(t0):                       # keep the head noise stream aligned with a full decode's
            noise.head(t, b, plan.counts(t)[1], steps, c)
        for t in range(t0, plan.iterations):
            visible, predicted = order[:, plan.visible_slice(t)], order[:, plan.predicted_slice(t)]
            k = predicted.shape[1]
            h = backend.encode(torch.cat([tokens, tokens]), cond2, mask2,
                               torch.cat([visible, visible]), torch.cat([predicted, predicted]))
            z = backend.sample(h[:b].reshape(b * k, -1), h[b:].reshape(b * k, -1), noise.head(t, b, k, steps, c),
                               tables.guidance[t], dc.temperature, tables.schedule)
            tokens = tokens.scatter(1, predicted[..., None].expand(-1, -1, c), z.reshape(b, k, c).float())
    return tokens


OUT = Path(sys.argv[1]); A, B = int(sys.argv[2]), int(sys.argv[3]); VARIANTS = sys.argv[4].split(",")
PROMPT = sys.argv[5] if len(sys.argv) > 5 else "thunder"
PROMPTS = [line.split("\t")[0] for line in default_prompts_path().read_text().splitlines()[1:] if line.strip()] \
    if PROMPT == "ALL" else [PROMPT]
pipe = Pipeline.from_pretrained(None, backend="cpu")
seeds = list(range(A, B))
state = {}


def patched(backend, model_cfg, dc, cond, cond_mask, null_c, null_m, noise, tables=None, on_iteration=None):
    tokens = plain_decode(backend, model_cfg, dc, cond, cond_mask, null_c, null_m, noise, tables, on_iteration)
    if state["share"] is None:
        return tokens
    return refine(backend, model_cfg, dc, cond, cond_mask, null_c, null_m, tokens, state["seeds"],
                  state["share"], state["passes"])


pipeline_module.decode = patched
summary = {}
for v in VARIANTS:
    state["share"], state["passes"] = None, 1
    if v.startswith("rm"):
        share, _, passes = v[2:].partition("x")
        state["share"], state["passes"] = float(share), int(passes or 1)
    d = OUT / v; shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    recs = []
    for pi, prompt in enumerate(PROMPTS):
        for i in range(0, len(seeds), 10):
            chunk = seeds[i:i + 10]
            state["seeds"] = chunk
            g = pipe.generate([prompt] * len(chunk), seed=chunk)
            for j, s in enumerate(chunk):
                name = f"p{pi:02d}-s{s:05d}.wav" if len(PROMPTS) > 1 else f"s{s:05d}.wav"
                g.save(d / name, index=j)
                recs.append({"file": name, "prompt": prompt, "seed": s})
    (d / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / "clips.jsonl")
    json.dump(rep, open(d / "report.json", "w"), indent=1, default=str)
    hits = [int(bool(c["hit"])) for c in rep["clips"]]
    summary[v] = {"hits": sum(hits), "of": len(hits), "silent": round(rep["metrics"]["silent_share"], 3),
                  "per_seed": hits}
    if len(PROMPTS) > 1:
        summary[v]["per_prompt"] = {q: sum(int(bool(c["hit"])) for c in rep["clips"] if c["prompt"] == q)
                                    for q in PROMPTS}
    print(v, "hits", sum(hits), "/", len(hits), "silent", summary[v]["silent"], flush=True)
json.dump(summary, open(OUT / f"summary-{PROMPT.replace(' ', '_')}-{A}-{B}.json", "w"), indent=1)
