"""Session 25: python docs/runs/2026-12-06-s25-loss-vs-mask-ratio.py MODEL_OR_CKPT /work/runs/latents-s24.safetensors val

Loss of a generator on held-out captioned rows as a function of the mask ratio (same rows, order draws,
timesteps and noise for every ratio). Training draws ratios in [0.7, 1]; decoding visits every ratio."""
import json, sys, torch
from pathlib import Path
from training.latent_store import LatentStore
from training.text_probe import load_generator
from impact_rt.patchify import patchify
torch.set_num_threads(2)
model = load_generator(Path(sys.argv[1])); store = LatentStore.load(sys.argv[2])
split = sys.argv[3] if len(sys.argv) > 3 else "val"
ratios = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0]
g0 = torch.Generator().manual_seed(0)
idx = store.rows("text", split); idx = idx[torch.randperm(len(idx), generator=g0)[:256]]
out = {}
with torch.no_grad():
    for q in ratios:
        tot = 0.0; nb = 0
        for s in range(0, len(idx), 32):
            i = idx[s:s+32]
            tok = patchify(store.latents[i].float(), model.cfg.patch)
            cap = store.caption_id[i]
            g = torch.Generator().manual_seed(1000 + s)
            tot += float(model.loss(tok, store.text_states[cap].float(), store.text_mask[cap].bool(), mask_ratio=q, generator=g)); nb += 1
        out[q] = tot / nb; print(q, round(out[q], 5), flush=True)
print(json.dumps(out))
