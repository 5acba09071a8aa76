"""Session 25: python docs/runs/2026-12-06-s25-data-silence.py /work/corpus/manifest.csv OUT.json

Silent-frame share (the evaluator's: 32 ms frames below -50 dBFS, after the training's peak-0.5
normalisation) of real train clips, by evaluation prompt: rows whose caption is exactly the prompt,
and the prompt's category split by kind (row counts in full, silence on the first 40 rows of each kind)."""
import csv, json, sys
from collections import Counter, defaultdict
import numpy as np, soundfile as sf
from impact_rt.audio import normalize_waveform
from impact_rt.evaluation.evaluator import silent_share
man = sys.argv[1]; root = "/work/corpus/"
prompts = [l.split("\t")[0] for l in open("/work/main/../shared/eval/prompts.tsv").read().splitlines()[1:]]
rows = [r for r in csv.DictReader(open(man)) if r["split"] == "train" and r["caption"]]
cache = {}
def sil(r):
    if r["id"] not in cache:
        cache[r["id"]] = silent_share(normalize_waveform(sf.read(root + r["file"], dtype="float32")[0]))
    return cache[r["id"]]
from training.data.captions import TABLE as CATEGORIES
cat_of = {c.eval_prompt: c.name for c in CATEGORIES if getattr(c, "eval_prompt", None)}
out = {}
for p in prompts:
    exact = [r for r in rows if r["caption"].strip().lower() == p]
    cat = cat_of.get(p)
    bykind = defaultdict(list)
    if cat:
        for r in rows:
            if cat in r["category"].split(";"):
                bykind[r["kind"]].append(r)
    rec = {"exact_n": len(exact), "exact_silent": round(float(np.mean([sil(r) for r in exact])), 3) if exact else None,
           "exact_kinds": dict(Counter(r["kind"] for r in exact)),
           "category": cat,
           "by_kind": {k: [len(v), round(float(np.mean([sil(r) for r in v[:40]])), 3)] for k, v in bykind.items()}}
    out[p] = rec; print(p, json.dumps(rec), flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
