"""Session 20: weight-space averages ("model soups", Wortsman et al. 2022) of fine-tunes that all start
from the shipped bundle. usage: python soup.py OUT BUNDLE[:WEIGHT] BUNDLE[:WEIGHT] ...
The generator's tensors are averaged in fp32 with the given weights (normalised) and stored in the
first bundle's dtype; config, VAE and anything else are copied from the first bundle."""
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

out = Path(sys.argv[1])
parts = [(p.rsplit(":", 1) + ["1"])[:2] if ":" in p else [p, "1"] for p in sys.argv[2:]]
weights = torch.tensor([float(w) for _, w in parts])
weights = weights / weights.sum()
states = [load_file(str(Path(p) / "impact.safetensors")) for p, _ in parts]
assert all(s.keys() == states[0].keys() for s in states), "bundles differ in their tensors"
soup = {}
for k, t in states[0].items():
    if t.is_floating_point():
        soup[k] = sum(w * s[k].float() for w, s in zip(weights.tolist(), states)).to(t.dtype)
    else:
        assert all(torch.equal(s[k], t) for s in states), k
        soup[k] = t
shutil.copytree(parts[0][0], out)
save_file(soup, str(out / "impact.safetensors"))
print(out, [(p, round(w, 3)) for (p, _), w in zip(parts, weights.tolist())])
