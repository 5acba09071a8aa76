"""Session 23 (AVX2-only CPU): the fp32 cpu backend's encoder and audio stage against onnxruntime's.
The 16 encode calls of one T=16 generation (batch 1, CFG) recorded from the cpu backend, replayed
on each backend; then the audio stage (VAE decoder + vocoder) of 2 clips. Medians of 5."""
import time, statistics, torch
from impact_rt.pipeline import Pipeline
calls = []
cpu = Pipeline.from_pretrained(backend="cpu", precision="fp32")
ort = Pipeline.from_pretrained(backend="onnxruntime")
orig = cpu.backend.encode
def rec(*a):
    calls.append([x.clone() for x in a]); return orig(*a)
cpu.backend.encode = rec
cpu.generate(["thunder", "rain"], seed=0)
cpu.backend.encode = orig
tokens = torch.randn(2, 256, 128)
def bench(fn, n=5):
    fn(); ts = []
    for _ in range(n):
        t = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts), out
res = {}
for name, b in (("cpu-fp32", cpu.backend), ("ort-fp32", ort.backend)):
    with torch.inference_mode():
        enc = bench(lambda: [b.encode(*c) for c in calls])
        aud = bench(lambda: b.audio(tokens))
    res[name] = (enc, aud)
    print(f"{name}: encoder x16 median {enc[0]*1e3:.0f} ms (min {enc[1]*1e3:.0f}); audio 2 clips median {aud[0]*1e3:.0f} ms (min {aud[1]*1e3:.0f})", flush=True)
e = max(float((a - b).abs().max()) for a, b in zip(res["cpu-fp32"][0][2], res["ort-fp32"][0][2]))
print("encoder max|diff|", e)
