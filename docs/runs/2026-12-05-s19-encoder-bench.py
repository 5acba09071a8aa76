"""Encoder alone, shipped model, the 16 encode calls of one T=16 generation (batch 1, CFG):
cpu backend bf16 / fp32 (torch) against onnxruntime fp32."""
import time, sys, statistics, torch
from impact_rt.pipeline import Pipeline
calls = []
p = Pipeline.from_pretrained(backend="cpu", precision="bf16")
orig = p.backend.encode
def rec(*a):
    calls.append([x.clone() for x in a]); return orig(*a)
p.backend.encode = rec
p.generate("thunder", seed=0)
p.backend.encode = orig
print("calls", len(calls), "visible", [c[3].shape[1] for c in calls])
backs = {"cpu-bf16": p.backend,
         "cpu-fp32": Pipeline.from_pretrained(backend="cpu", precision="fp32").backend,
         "ort-fp32": Pipeline.from_pretrained(backend="onnxruntime").backend}
ref = None
for name, b in backs.items():
    with torch.inference_mode():
        for c in calls: b.encode(*c)
        ts = []
        for r in range(5):
            t = time.perf_counter()
            outs = [b.encode(*c) for c in calls]
            ts.append(time.perf_counter() - t)
    if ref is None: ref = outs
    err = max(float((o.float() - r_.float()).abs().max()) for o, r_ in zip(outs, ref))
    print(f"{name}: median {statistics.median(ts)*1e3:.1f} ms  min {min(ts)*1e3:.1f} ms  max|diff vs cpu-bf16| {err:.3g}", flush=True)
