"""Session 23: paired summary of the decoding variants against the baseline (seeds 100-159, "thunder")."""
import json, sys
from pathlib import Path
import numpy as np
R = Path(sys.argv[1])
base = json.load(open(R / "order-thunder/report.json"))
bhit = {c["file"]: bool(c["hit"]) for c in base["clips"]}
bsil = {c["file"]: c["silent_share"] for c in base["clips"]}
files = sorted(f for f in bhit if 100 <= int(f[1:6]) < 160)
out = {"baseline": {"hits": sum(bhit[f] for f in files), "n": len(files),
                    "silent": round(float(np.mean([bsil[f] for f in files])), 3),
                    "hits_seeds_100_259": sum(bhit.values()), "n_100_259": len(bhit)}}
for v in sorted(p.name for p in (R / "variants").iterdir() if (p / "report.json").exists()):
    rep = json.load(open(R / "variants" / v / "report.json"))
    h = {c["file"]: bool(c["hit"]) for c in rep["clips"]}
    out[v] = {"hits": sum(h[f] for f in files), "n": len(files),
              "silent": round(rep["metrics"]["silent_share"], 3),
              "gained": sum(h[f] and not bhit[f] for f in files), "lost": sum(bhit[f] and not h[f] for f in files)}
print(json.dumps(out, indent=1))
