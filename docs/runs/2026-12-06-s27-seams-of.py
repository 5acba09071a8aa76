"""Session 27: token seams of a bundle's thunder clips (cpu backend, default decoding).
usage: python this.py BUNDLE [NAME]  -> one JSON line per guidance (impact_rt.evaluation.seams.token_seams)
  GUIDANCE="1 3 5"    guidance values (default: the bundle's)
  SEEDS=20            clips, seeds 100 .. 100+SEEDS-1
  HITS=report.json    an evaluate_model report of the same clips (same seeds, default decoding): the seams of
                      YAMNet's hits and of its misses apart
(session 27 ran it on the shipped bundle with GUIDANCE="1 3 5", with SEEDS=40 HITS=<shipped thunder report of
seeds 100-139>, and on the session-4 bundle, the soup and runs t and u with the defaults.)"""
import json
import os
import sys

from impact_rt.evaluation.seams import token_seams
from impact_rt.pipeline import Pipeline

pipe = Pipeline.from_pretrained(sys.argv[1], backend="cpu")
name = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
seeds = list(range(100, 100 + int(os.environ.get("SEEDS", "20"))))
patch = pipe.model.cfg.patch
for g in [float(x) for x in os.environ.get("GUIDANCE", "").split()] or [None]:
    lat = pipe.generate(["thunder"] * len(seeds), seed=seeds, guidance=g).latents
    print(json.dumps({"model": name, "guidance": g, **token_seams(lat, patch)}))
    if os.environ.get("HITS"):
        hit = [c["hit"] for c in json.load(open(os.environ["HITS"]))["clips"]]
        assert len(hit) == len(seeds), "HITS must judge the same seeds"
        for label, keep in (("hits", hit), ("misses", [not h for h in hit])):
            print(json.dumps({"model": name, "guidance": g, "subset": label,
                              **token_seams(lat[[i for i, k in enumerate(keep) if k]], patch)}))
