"""Session 24: CFG applied only inside an interval of the head's diffusion time (Kynkäänniemi et al.
2024, "Applying guidance in a limited interval improves sample and distribution quality"), paired with
the baseline (same seeds, same order and head noise). Outside the interval the head runs the
conditional ε alone (guidance 1). The head loop is the reference one (impact_rt.sampler) with a
per-step guidance; the encoder is the cpu backend's.
Variant names: base | gi<lo>-<hi> with lo, hi fractions of the DDPM time (1 = pure noise), e.g. gi0.1-0.7
Usage: OUT A B variant[,variant...] prompt[|prompt...]"""
import json, sys, shutil
from pathlib import Path
import torch
from impact_rt import ddpm
from impact_rt.pipeline import Pipeline
from impact_rt.decoding import TorchNoise
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path


class IntervalGuidance:
    """Wraps a backend: the head's T̂-step loop with guidance β only where lo <= t/T < hi."""
    def __init__(self, inner, lo, hi):
        self.inner, self.lo, self.hi = inner, lo, hi
    def __getattr__(self, k):
        return getattr(self.inner, k)
    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        head, tab = self.inner.model.head, self.inner.schedule_tensors(schedule)
        steps, c, r = tab["timestep_map"].shape[0], head.token_dim, h_cond.shape[0]
        t_emb = head.time_embed(tab["timestep_map"])
        c_emb = head.cond_embed(torch.cat([h_cond, h_uncond]))
        frac = tab["timestep_map"].float() / 1000.0
        x = noise[0]
        for j, i in enumerate(reversed(range(steps))):
            out = head.step(torch.cat([x, x]), c_emb + t_emb[i])
            eps, v = out[:r, :c], out[:r, c:]
            if self.lo <= float(frac[i]) < self.hi:
                eps = out[r:, :c] + guidance * (eps - out[r:, :c])
            x = ddpm.p_sample_step(tab, x, i, eps, v, noise[j + 1] if i > 0 else None, temperature)
        return x


OUT = Path(sys.argv[1]); A, B = int(sys.argv[2]), int(sys.argv[3]); VARIANTS = sys.argv[4].split(",")
PROMPTS = sys.argv[5].split("|") if len(sys.argv) > 5 else ["thunder"]
pipe = Pipeline.from_pretrained(None, backend="cpu")
plain = pipe.backend
seeds = list(range(A, B))
summary = {}
for v in VARIANTS:
    lo, hi = (0.0, 2.0) if v == "base" else map(float, v[2:].split("-"))
    pipe.backend = IntervalGuidance(plain, lo, hi)
    d = OUT / v; shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    recs = []
    for p, prompt in enumerate(PROMPTS):
        for i in range(0, len(seeds), 10):
            chunk = seeds[i:i + 10]
            g = pipe.generate([prompt] * len(chunk), seed=chunk, noise=TorchNoise(chunk))
            for j, s in enumerate(chunk):
                name = f"p{p:02d}-s{s:05d}.wav"; g.save(d / name, index=j)
                recs.append({"file": name, "prompt": prompt, "seed": s})
    (d / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / "clips.jsonl")
    json.dump(rep, open(d / "report.json", "w"), indent=1, default=str)
    per = {}
    for c in rep["clips"]:
        k = per.setdefault(c["prompt"], [0, 0, 0.0]); k[0] += bool(c["hit"]); k[1] += 1; k[2] += c["silent_share"]
    summary[v] = {pr: f"{h}/{n} silent {s / n:.2f}" for pr, (h, n, s) in per.items()}
    print(v, json.dumps(summary[v]), flush=True)
json.dump(summary, open(OUT / "summary.json", "w"), indent=1)
