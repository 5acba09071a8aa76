"""Session 22: is a thunder clip's hit or miss set in the first decoding iterations?
For base seeds 10-29, decode "thunder" with the base seed's order and head noise up to iteration k, then
with fresh head noise (4 forks) from k on; k = 0 keeps only the order. Judged by the evaluator's YAMNet
adherence; prints the hit rate of the forks split by the base clip's outcome, per k."""
import json, sys, shutil
from pathlib import Path
import numpy as np, torch
from impact_rt.pipeline import Pipeline
from impact_rt.decoding import TorchNoise
from impact_rt.mask_schedule import MaskPlan
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
from impact_rt.evaluation.evaluator import silent_share

class ForkNoise:
    def __init__(self, base, fork, k):
        self.base, self.fork, self.k = TorchNoise(base), TorchNoise(fork), k
    def order(self, b, n):
        return self.base.order(b, n)
    def head(self, t, b, rows, steps, dim):
        x = self.base.head(t, b, rows, steps, dim)   # always drawn, so the base stream stays aligned
        return x if t < self.k else self.fork.head(t, b, rows, steps, dim)

OUT = Path(sys.argv[1]); KS = [int(x) for x in sys.argv[2].split(",")]; FORKS = 4
BASE = list(range(10, 30))
pipe = Pipeline.from_pretrained(None, backend="cpu")
plan = MaskPlan.build(pipe.model.cfg.num_tokens, 16)
print("tokens decoded before iteration k:", {k: len(range(256)[plan.visible_slice(k)]) for k in KS}, flush=True)
shutil.rmtree(OUT, ignore_errors=True); OUT.mkdir(parents=True)
recs = []
def run(tag, seeds, noise):
    g = pipe.generate(["thunder"] * len(seeds), seed=seeds, noise=noise)
    for i, s in enumerate(seeds):
        name = f"{tag}-{i:02d}.wav"; g.save(OUT / name, index=i)
        recs.append({"file": name, "prompt": "thunder", "tag": tag, "base": BASE[i % len(BASE)]})
run("base", BASE, None)
for k in KS:
    for f in range(FORKS):
        fork = [100000 + 1000 * f + s for s in BASE]
        run(f"k{k}-f{f}", BASE, ForkNoise(BASE, fork, k))
    print("done k", k, flush=True)
(OUT / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
rep = evaluate(OUT, None, default_prompts_path(), OUT / "clips.jsonl")
json.dump(rep, open(OUT / "report.json", "w"), indent=1, default=str)
