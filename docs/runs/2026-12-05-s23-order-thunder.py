"""Session 23: which properties of the decoding order go with a thunder hit?
Generates "thunder" for seeds [A, B) with the shipped model (cpu backend), judges every clip with the
evaluator's YAMNet adherence, and stores each seed's decoding order (drawn by the runtime's own
TorchNoise.order, as generate drew it) next to the per-clip result, for s23-order-features.py."""
import json, sys, shutil
from pathlib import Path
import numpy as np
from impact_rt.decoding import TorchNoise
from impact_rt.pipeline import Pipeline
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path

OUT = Path(sys.argv[1]); A, B = int(sys.argv[2]), int(sys.argv[3]); PROMPT = sys.argv[4] if len(sys.argv) > 4 else "thunder"
shutil.rmtree(OUT, ignore_errors=True); OUT.mkdir(parents=True)
pipe = Pipeline.from_pretrained(None, backend="cpu")
n = pipe.model.cfg.num_tokens
recs = []
seeds = list(range(A, B))
for i in range(0, len(seeds), 10):
    chunk = seeds[i:i + 10]
    g = pipe.generate([PROMPT] * len(chunk), seed=chunk)
    for j, s in enumerate(chunk):
        name = f"s{s:05d}.wav"; g.save(OUT / name, index=j)
        recs.append({"file": name, "prompt": PROMPT, "seed": s})
    print("done", chunk[-1], flush=True)
(OUT / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
rep = evaluate(OUT, None, default_prompts_path(), OUT / "clips.jsonl")
orders = TorchNoise(seeds).order(len(seeds), n).numpy()
hits = np.array([c["hit"] for c in sorted(rep["clips"], key=lambda c: c["file"])], dtype=bool)
np.savez(OUT / "orders.npz", seeds=np.array(seeds), orders=orders, hits=hits)
json.dump(rep, open(OUT / "report.json", "w"), indent=1, default=str)
print("hits", int(hits.sum()), "/", len(hits))
