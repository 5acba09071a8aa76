"""Session 23: the "onset" decoding order (s23-decode-variants.py) on every evaluation prompt, against the
random order, paired (same seeds and head noise): adherence, thunder, FD against the corpus's test clips.
Usage: OUT SEED_A SEED_B [variant ...]"""
import json, sys, shutil, importlib.util
from pathlib import Path
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path

spec = importlib.util.spec_from_file_location("dv", Path(__file__).with_name("2026-12-05-s23-decode-variants.py"))
src = Path(spec.origin).read_text().split("OUT = Path")[0]
dv = {}; exec(compile(src, spec.origin, "exec"), dv)
from impact_rt.pipeline import Pipeline
OUT = Path(sys.argv[1]); A, B = int(sys.argv[2]), int(sys.argv[3]); VARIANTS = sys.argv[4:] or ["base", "onset"]
prompts = [l.split("\t")[0] for l in Path(default_prompts_path()).read_text().splitlines()[1:] if l.strip()]
pipe = Pipeline.from_pretrained(None, backend="cpu")
seeds = list(range(A, B))
summary = {}
for v in VARIANTS:
    d = OUT / v; shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    recs = []
    for pi, p in enumerate(prompts):
        g = pipe.generate([p] * len(seeds), seed=seeds, noise=dv["PolicyNoise"](seeds, None if v == "base" else v))
        for j, s in enumerate(seeds):
            name = f"p{pi:02d}-s{s:04d}.wav"; g.save(d / name, index=j)
            recs.append({"file": name, "prompt": p, "seed": s})
    (d / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = evaluate(d, "/work/corpus/clips/test", default_prompts_path(), d / "clips.jsonl")
    json.dump(rep, open(d / "report.json", "w"), indent=1, default=str)
    hits = {c["file"]: bool(c["hit"]) for c in rep["clips"]}
    summary[v] = {"adherence": round(sum(hits.values()) / len(hits), 4), "clips": len(hits),
                  "thunder": sum(h for f, h in hits.items() if f.startswith("p00-")),
                  "fd": round(rep["metrics"]["fd"], 2), "silent": round(rep["metrics"]["silent_share"], 3),
                  "per_prompt": {p: sum(h for f, h in hits.items() if f.startswith(f"p{i:02d}-")) for i, p in enumerate(prompts)}}
    print(v, json.dumps(summary[v]), flush=True)
json.dump(summary, open(OUT / "summary.json", "w"), indent=1)
