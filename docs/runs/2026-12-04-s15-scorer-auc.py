"""Does the reranking scorer tell YAMNet's hits from misses among the shipped model's own clips?

    python docs/runs/2026-12-04-s15-scorer-auc.py SCORER_DIR LABELLED.safetensors[,MORE.safetensors] [K ...]

LABELLED: written by 2026-12-04-s15-gen-labelled.py. Per prompt: hits, AUC of the score for hit vs
miss, and the expected hit rate of best-of-K (the mean over every K-subset of the seeds).
"""
import sys, json
from math import comb
import numpy as np, torch
from safetensors import safe_open
from safetensors.torch import load_file
from impact_rt.rerank import Scorer
from impact_rt.text_conditioner import build_conditioner

scorer = Scorer.from_bundle(sys.argv[1]) if not sys.argv[1].endswith("ckpt") else None
if scorer is None:   # a training checkpoint folder
    from training.checkpoint import load_checkpoint
    from impact_rt.rerank import ScorerConfig
    t, meta = load_checkpoint(sys.argv[1])
    scorer = Scorer(ScorerConfig.from_dict(meta["scorer"]))
    scorer.load_state_dict({k[7:]: v for k, v in t.items() if k.startswith("scorer.")}, strict=False)
    scorer.eval()
parts = [load_file(f) for f in sys.argv[2].split(",")]        # several labelled files, comma-separated
d = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
with safe_open(sys.argv[2].split(",")[0], "pt") as f:
    prompts = json.loads(f.metadata()["prompts"])
Ks = [int(k) for k in sys.argv[3:]] or [2, 4, 8]
cond = build_conditioner({"kind": "minilm", "length": 78, "dim": 384})
st, mk = cond.encode(prompts)
with torch.no_grad():
    t = scorer.embed_text(st, mk)
    a = torch.cat([scorer.embed_audio(d["tokens"][i:i + 64].float()) for i in range(0, len(d["tokens"]), 64)])
sim = (a @ t.T).numpy()                      # [M, P]
import os
if os.environ.get("STORE"):   # zero-shot form: the prompt's share of a softmax over it and the store's captions
    from training.latent_store import LatentStore
    stt = LatentStore.load(os.environ["STORE"])
    with torch.no_grad():
        ref = torch.cat([scorer.embed_text(stt.text_states[i:i + 512].float(), stt.text_mask[i:i + 512].bool())
                         for i in range(0, len(stt.text_states), 512)])
    scale = float(os.environ.get("SCALE", scorer.log_scale.exp()))
    lr = torch.logsumexp(scale * (a @ ref.T), dim=1, keepdim=True).numpy()
    simt = scale * sim
    sim = simt - np.logaddexp(simt, lr)
hit = d["hit"].numpy().astype(bool); pr = d["prompt"].numpy()

def auc(s, y):
    if y.all() or (~y).all(): return float("nan")
    return float(np.mean([(x > z) + 0.5 * (x == z) for x in s[y] for z in s[~y]]))

def best_of(s, y, k):
    n = len(s); order = np.argsort(s)   # ascending: item at rank r beats r others
    return sum(comb(r, k - 1) * y[i] for r, i in enumerate(order)) / comb(n, k)

rows, tot = [], {k: 0.0 for k in [1] + Ks}
own = sim[np.arange(len(pr)), pr]
top1 = (sim.argmax(1) == pr).mean()
for j, p in enumerate(prompts):
    m = pr == j
    if not m.any(): continue
    s, y = own[m], hit[m]
    r = {"prompt": p, "hits": int(y.sum()), "n": int(m.sum()), "auc": round(auc(s, y), 3),
         **{f"best_of_{k}": round(float(best_of(s, y, k)), 3) for k in Ks}}
    rows.append(r)
    tot[1] += y.mean()
    for k in Ks: tot[k] += r[f"best_of_{k}"]
for r in rows: print(r)
n = len(rows)
print({"prompts": n, "clip→prompt top1": round(float(top1), 3), "adherence": round(float(tot[1]) / n, 3),
       **{f"best_of_{k}": round(float(tot[k]) / n, 3) for k in Ks}})
