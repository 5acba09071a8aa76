"""Session 23: order features of hits vs misses (reads orders.npz of s23-order-thunder.py).
Token index = time patch * 4 + frequency band (patchify: [H'=64 time, W'=4 band])."""
import sys
import numpy as np
d = np.load(sys.argv[1] + "/orders.npz"); orders, hits = d["orders"], d["hits"]
rng = np.random.default_rng(0)
print(f"{hits.sum()}/{len(hits)} hits")
def report(name, f):
    diff = f[hits].mean() - f[~hits].mean()
    null = np.array([(lambda h: f[h].mean() - f[~h].mean())(rng.permutation(hits)) for _ in range(2000)])
    p = float(np.mean(np.abs(null) >= abs(diff)))
    print(f"{name:28s} hit {f[hits].mean():7.3f}  miss {f[~hits].mean():7.3f}  p={p:.3f}")
orders = orders[:, ::-1]     # the decoding loop takes the order from its end (MaskPlan: predicted_slice(0) is the last tokens)
time, band = orders // 4, orders % 4
for m in (1, 2, 5, 11, 20, 40, 75):
    for b in range(4):
        report(f"first {m}: share band {b}", (band[:, :m] == b).mean(1))
    report(f"first {m}: mean time", time[:, :m].mean(1))
    report(f"first {m}: time spread (std)", time[:, :m].std(1) if m > 1 else time[:, :m].mean(1) * 0)
    report(f"first {m}: min time", time[:, :m].min(1))
