"""Session 23: decoding variants on "thunder", paired with the baseline (same seeds, same head noise).
Variants: head temperature τ, and structured decoding orders derived from each seed's random order:
The decoding loop takes the order from its END (MaskPlan.predicted_slice(0) = the last tokens), so
  band    - band-sorted ascending: the highest frequency band decoded first
  bandhi  - band-sorted descending: the lowest band decoded first
  strat   - time-stratified: the first 64 tokens cover all 64 time patches once, etc.
  column  - whole time patches: the 4 bands of a time patch one after the other
  hguide  - guidance on the encoder's output: h = h_u + β(h_c − h_u), one head pass per row (β from
            the usual schedule), in place of CFG on the head's ε at every DDPM step
  onset   - one of the first 5 decoded tokens in the clip's first 4 time patches (one swap)
Usage: OUT A B variant[,variant...]   (variant = base | tau0.7 | band | bandhi | strat | ...)"""
import json, sys, shutil
from pathlib import Path
import torch
from impact_rt.pipeline import Pipeline
from impact_rt.decoding import TorchNoise
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path

def restructure(order, policy):
    time, band = order // 4, order % 4
    pos = torch.arange(order.numel())
    if policy == "band":
        key = band * 1000 + pos
    elif policy == "bandhi":
        key = (3 - band) * 1000 + pos
    elif policy == "strat":
        rank = torch.zeros_like(order)           # rank of each token among its time patch's tokens, in order
        seen = {}
        for i, t in enumerate(time.tolist()):
            rank[i] = seen.get(t, 0); seen[t] = rank[i].item() + 1
        key = rank * 1000 + pos
    elif policy == "column":               # whole time patches (all 4 bands) in the order their first token came
        first = {}
        for i, t in enumerate(time.tolist()):
            first.setdefault(t, i)
        key = torch.tensor([first[t] for t in time.tolist()]) * 1000 + pos
    elif policy == "onset":                # one of the first 5 decoded tokens in time patches 0-3 (the
        dec = order.flip(0)                  # clip's first 0.64 s): else the earliest-decoded such token
        early = (dec // 4) < 4               # swaps places with the second token decoded
        if bool(early[:5].any()):
            return order
        j = int(early.nonzero()[0])
        dec = dec.clone(); dec[[1, j]] = dec[[j, 1]]
        return dec.flip(0)
    else:
        raise ValueError(policy)
    return order[torch.argsort(key)]

class PolicyNoise(TorchNoise):
    def __init__(self, seeds, policy):
        super().__init__(seeds); self.policy = policy
    def order(self, b, n):
        o = super().order(b, n)
        return o if self.policy is None else torch.stack([restructure(r, self.policy) for r in o])

class FeatureGuidance:
    """Wraps a backend: CFG applied to the head's condition h instead of to its ε."""
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, k):
        return getattr(self.inner, k)
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        if h_uncond is not None:
            h_cond = h_uncond + guidance * (h_cond - h_uncond)
        return self.inner.sample(h_cond, None, noise, 1.0, temperature, schedule)

OUT = Path(sys.argv[1]); A, B = int(sys.argv[2]), int(sys.argv[3]); VARIANTS = sys.argv[4].split(",")
PROMPT = sys.argv[5] if len(sys.argv) > 5 else "thunder"
pipe = Pipeline.from_pretrained(None, backend="cpu")
plain = pipe.backend
seeds = list(range(A, B))
for v in VARIANTS:
    tau = float(v[3:]) if v.startswith("tau") else None
    policy = None if tau is not None or v in ("base", "hguide") else v
    pipe.backend = FeatureGuidance(plain) if v == "hguide" else plain
    d = OUT / v; shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    recs = []
    for i in range(0, len(seeds), 10):
        chunk = seeds[i:i + 10]
        g = pipe.generate([PROMPT] * len(chunk), seed=chunk, temperature=tau, noise=PolicyNoise(chunk, policy))
        for j, s in enumerate(chunk):
            name = f"s{s:05d}.wav"; g.save(d / name, index=j)
            recs.append({"file": name, "prompt": PROMPT, "seed": s})
    (d / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / "clips.jsonl")
    json.dump(rep, open(d / "report.json", "w"), indent=1, default=str)
    hits = sum(bool(c["hit"]) for c in rep["clips"])
    print(v, "hits", hits, "/", len(seeds), "silent", round(rep["metrics"]["silent_share"], 3), flush=True)
