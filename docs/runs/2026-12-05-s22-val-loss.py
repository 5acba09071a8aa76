"""Session 22: the generator's loss on 8 fixed validation batches of latents-s17 (the same rows, masks,
t and noise for every model: session 21's val_loss, repeated here because session 21's script trains
when imported), for each bundle given. usage: val_loss.py BUNDLE..."""
import sys, torch
from pathlib import Path
from training.latent_store import LatentStore
from training.text_probe import load_generator
from impact_rt.patchify import patchify


def val_loss(model, store, n_batches=8, bs=32, split='val'):
    rows = store.rows('text', split)
    g = torch.Generator().manual_seed(123)
    sched = model.train_schedule()
    tot = 0
    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        for _ in range(n_batches):
            idx = rows[torch.randint(0, len(rows), (bs,), generator=g)]
            tok = patchify(store.latents[idx].float(), model.cfg.patch)
            cap = store.caption_id[idx]
            tot += model.loss(tok, store.text_states[cap].float(), store.text_mask[cap].bool(), mask_ratio=0.8,
                              generator=g, schedule=sched).item()
    return tot / n_batches


store = LatentStore.load('/work/runs/latents-s17.safetensors')
for d in sys.argv[1:]:
    model = load_generator(Path(d))
    print(d, round(val_loss(model, store), 5), flush=True)
