"""Session 22: are the generator's thunder latents shaped like real thunder latents?
Statistics of generated latents (prompt "thunder", seeds 10-29, guidance 5 and 1) against the latent
store's train rows whose caption names thunder, by kind: overall std, per-channel std, frame-to-frame
change along time, and the spread of per-frame energy."""
import json, collections, csv
import torch
from safetensors import safe_open
from impact_rt.pipeline import Pipeline
from impact_rt.patchify import unpatchify

def stats(lat):                                 # lat [B, C, T, F]
    e = lat.pow(2).mean(dim=(1, 3))             # per-frame energy [B, T]
    d = (lat[:, :, 1:] - lat[:, :, :-1]).pow(2).mean().sqrt()
    df = (lat[..., 1:] - lat[..., :-1]).pow(2).mean().sqrt()
    return {"std": round(lat.std().item(), 3), "mean": round(lat.mean().item(), 3),
            "chan_std": [round(x, 2) for x in lat.transpose(0, 1).reshape(lat.shape[1], -1).std(1).tolist()],
            "dt_rms": round(d.item(), 3), "df_rms": round(df.item(), 3),
            "frame_energy_cv": round((e.std(1) / e.mean(1)).mean().item(), 3),
            "kurtosis": round(((lat - lat.mean()) ** 4).mean().item() / lat.var().item() ** 2, 2)}

meta = json.load(open('/work/runs/latents-s17.json'))
f = safe_open('/work/runs/latents-s17.safetensors', 'pt')
cid, clip, split = f.get_tensor('caption_id'), f.get_tensor('clip'), f.get_tensor('split')
rows = {r['id']: r for r in csv.DictReader(open(meta['manifest']))}
ids, caps = meta['clip_ids'], meta['captions']
lat = f.get_slice('latents')
by = collections.defaultdict(list)
for j in range(len(cid)):
    c = int(cid[j])
    if c < 0 or split[j] != 0 or 'thunder' not in caps[c]:
        continue
    by[rows[ids[int(clip[j])]]['kind']].append(j)
out = {}
for kind, js in by.items():
    x = torch.stack([lat[j:j + 1].float()[0] for j in js[:40]])
    out[f"real {kind} ({len(js[:40])})"] = stats(x)
pipe = Pipeline.from_pretrained(None, backend="torch")
cfg = pipe.model.cfg
cap = []
orig = pipe.backend.audio
pipe.backend.audio = lambda t: (cap.append(t.float().clone()), orig(t))[1]
for g in (5.0, 1.0):
    cap.clear()
    pipe.generate(["thunder"] * 20, seed=list(range(10, 30)), guidance=g)
    toks = torch.cat(cap)
    out[f"generated, guidance {g}"] = stats(unpatchify(toks, cfg.patch, cfg.latent_channels, cfg.latent_time, cfg.latent_freq))
for k, v in out.items():
    print(k, json.dumps(v))
json.dump(out, open('/work/runs/s22/latent-stats.json', 'w'), indent=1)
