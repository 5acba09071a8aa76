"""Session 24 (AVX2-only CPU): the cpu backend's fp32 latent encoder against a copy with its Linear
layers quantised to int8 by torch's dynamic quantisation (fbgemm). The 16 encode calls of one
T=16 generation (batch 1, CFG) recorded, then replayed on each; medians of 7, two rounds; the
int8 outputs' error against fp32."""
import time, statistics, torch, warnings
warnings.filterwarnings("ignore")
from impact_rt.pipeline import Pipeline
calls = []
cpu = Pipeline.from_pretrained(backend="cpu", precision="fp32")
b = cpu.backend
orig = b.encode
def rec(*a):
    calls.append([x.clone() for x in a]); return orig(*a)
b.encode = rec
cpu.generate(["thunder"], seed=0)
b.encode = orig
enc = b.encoder
q = torch.ao.quantization.quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)
def bench(m, n=7):
    f = lambda: [m(*c).float() for c in calls]
    with torch.inference_mode():
        f(); ts=[]
        for _ in range(n):
            t=time.perf_counter(); out=f(); ts.append(time.perf_counter()-t)
    return statistics.median(ts), out
for r in range(2):
    a = bench(enc); c = bench(q)
    print(f"fp32 {a[0]*1e3:.0f} ms  int8-dyn {c[0]*1e3:.0f} ms")
err = max(float((x-y).abs().max()) for x,y in zip(a[1],c[1])); ref=max(float(x.abs().max()) for x in a[1])
rel = max(float((x-y).norm()/x.norm()) for x,y in zip(a[1],c[1]))
print("max abs err", err, "max |h|", ref, "rel", rel)
