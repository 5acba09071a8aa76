"""Session 27: token seams of a bundle's thunder clips (seeds 100-119, cpu backend, default decoding).
usage: python this.py BUNDLE [NAME]  -> one JSON line (impact_rt.evaluation.seams.token_seams)."""
import json
import sys

from impact_rt.evaluation.seams import token_seams
from impact_rt.pipeline import Pipeline

pipe = Pipeline.from_pretrained(sys.argv[1], backend="cpu")
g = pipe.generate(["thunder"] * 20, seed=list(range(100, 120)))
print(json.dumps({"model": sys.argv[2] if len(sys.argv) > 2 else sys.argv[1], **token_seams(g.latents, pipe.model.cfg.patch)}))
