"""Session 20: seconds a clip by stage (encoder, head, audio) at batch 1, 2, 4, 8, cpu backend, shipped model, best of 3."""
import time, torch
from impact_rt.pipeline import Pipeline
p = Pipeline.from_pretrained(backend="cpu")
b = p.backend
T = {"encode": 0.0, "sample": 0.0, "audio": 0.0}
for name in T:
    f = getattr(b, name)
    def wrap(*a, _f=f, _n=name, **k):
        t = time.perf_counter(); r = _f(*a, **k); T[_n] += time.perf_counter() - t; return r
    setattr(b, name, wrap)
best = {}
for rep in range(3):
    for B in (1, 2, 4, 8):
        for k in T: T[k] = 0.0
        t = time.perf_counter(); p.generate(["thunder"] * B, seed=1); tot = time.perf_counter() - t
        cur = {"total": tot / B, **{k: v / B for k, v in T.items()}}
        best[B] = {k: min(v, best.get(B, cur)[k]) for k, v in cur.items()}
for B, d in best.items():
    print(B, " ".join(f"{k} {v:.3f}" for k, v in d.items()), "(s a clip, best of 3)")
