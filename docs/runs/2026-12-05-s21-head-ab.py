"""Session 21: is the diffusion head what limits the generator? usage: head_ab.py NAME WIDTH GROW STEPS LR
From the shipped bundle, train only the head (encoder and text projection frozen) on latents-s17 and
report the EMA model's loss on a fixed set of validation batches (same rows, masks, t and noise for
every model) every 100 steps. A256: the shipped head (w 256) continued; B512: the head widened to
512 by training.grow (--grow head), which starts as the same function. One thread each, run side by side."""
import sys, time, torch, json
from pathlib import Path
from training.train_impact import Trainer, TrainConfig
from training.latent_store import LatentStore
from impact_rt.patchify import patchify


def val_loss(model, store, n_batches=8, bs=32, split='val'):
    """The loss on n_batches fixed validation batches (seeded: the same for every model)."""
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

name, width, grow, steps, lr = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
torch.set_num_threads(1)
store=LatentStore.load('/work/runs/latents-s17.safetensors')
cfg=TrainConfig(phase='text',batch_size=32,lr=lr,warmup_steps=20,trainable='head',head_width=width,
                grow=grow if grow!='-' else '',category_balance=0.5,kind_weights='scene_fg=0')
out=Path(f'/work/runs/s21/{name}')
tr=Trainer(cfg,store,out); tr.init_from(Path('impact_rt/models/default'))
res=[]
v=val_loss(tr.ema_model(),store); res.append((0,v)); print(name,0,v,flush=True)
t0=time.time(); acc=[]
while tr.step<steps:
    acc.append(tr.train_step())
    if tr.step%100==0:
        v=val_loss(tr.ema_model(),store); res.append((tr.step,v,sum(acc)/len(acc)))
        print(name,tr.step,v,sum(acc)/len(acc),f"{time.time()-t0:.0f}s",flush=True); acc=[]
        json.dump(res,open(out.with_suffix('.json'),'w'))
tr.save()

