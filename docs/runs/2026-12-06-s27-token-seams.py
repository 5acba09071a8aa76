"""Session 27: do generated latents jump at token (patch) boundaries more than real latents do?
A token is a 4 x 4 (time x frequency) patch of the [8, 256, 16] latent. For each latent, the RMS
change between neighbouring frames (and bins) is split by whether the pair straddles a patch
boundary (t = 4k+3 -> 4k+4) or lies inside a patch; the ratio boundary / inside is ~1 for a
signal that does not know the patch grid. Real: the latent store's captioned train rows (thunder
rows, and 200 random rows); generated: the shipped model (torch reference), prompt "thunder"
seeds 100-119 and every evaluation prompt at seeds 100-101."""
import json, random, sys
import torch
from safetensors import safe_open
from impact_rt.pipeline import Pipeline
from impact_rt.patchify import unpatchify

P = 4

def seam(lat):                                   # lat [B, C, T, F]
    dt = (lat[:, :, 1:] - lat[:, :, :-1]).pow(2).mean(dim=(1, 3))       # [B, T-1]
    df = (lat[..., 1:] - lat[..., :-1]).pow(2).mean(dim=(1, 2))         # [B, F-1]
    bt = torch.tensor([(i % P) == P - 1 for i in range(dt.shape[1])])
    bf = torch.tensor([(i % P) == P - 1 for i in range(df.shape[1])])
    # loud pairs only for time (silence has no seams to see): frames above the clip's median energy
    e = lat.pow(2).mean(dim=(1, 3))
    loud = (e[:, 1:] > e.median(dim=1, keepdim=True).values) | (e[:, :-1] > e.median(dim=1, keepdim=True).values)
    r_t = (dt[:, bt] .sqrt().mean() / dt[:, ~bt].sqrt().mean()).item()
    r_t_loud = ((dt.sqrt() * (loud & bt)).sum() / (loud & bt).sum() / ((dt.sqrt() * (loud & ~bt)).sum() / (loud & ~bt).sum())).item()
    r_f = (df[:, bf].sqrt().mean() / df[:, ~bf].sqrt().mean()).item()
    return {"n": lat.shape[0], "time_boundary_over_inside": round(r_t, 3),
            "time_loud_boundary_over_inside": round(r_t_loud, 3), "freq_boundary_over_inside": round(r_f, 3)}

store = sys.argv[1] if len(sys.argv) > 1 else "/work/runs/latents-s24.safetensors"
meta = json.load(open(store.replace(".safetensors", ".json")))
f = safe_open(store, "pt")
cid, split = f.get_tensor("caption_id"), f.get_tensor("split")
caps = meta["captions"]
lat = f.get_slice("latents")
train = [j for j in range(len(cid)) if int(cid[j]) >= 0 and int(split[j]) == 0]
thunder = [j for j in train if "thunder" in caps[int(cid[j])]]
random.seed(0)
out = {}
for name, js in (("real, thunder captions", thunder[:120]), ("real, 200 random captioned", random.sample(train, 200))):
    out[name] = seam(torch.stack([lat[j:j + 1].float()[0] for j in js]))
pipe = Pipeline.from_pretrained(None, backend="torch")
cfg = pipe.model.cfg
cap = []
orig = pipe.backend.audio
pipe.backend.audio = lambda t: (cap.append(t.float().clone()), orig(t))[1]
prompts = [l.split("\t")[0] for l in open("../shared/eval/prompts.tsv").read().splitlines()[1:] if l.strip()]
for name, ps, seeds in (("generated, thunder seeds 100-119", ["thunder"] * 20, list(range(100, 120))),
                        ("generated, every prompt seeds 100-101", [p for p in prompts for _ in (0, 1)], [100, 101] * len(prompts))):
    cap.clear()
    pipe.generate(ps, seed=seeds)
    toks = torch.cat(cap)
    out[name] = seam(unpatchify(toks, cfg.patch, cfg.latent_channels, cfg.latent_time, cfg.latent_freq))
for k, v in out.items():
    print(k, json.dumps(v))
json.dump(out, open("/work/runs/s27/token-seams.json", "w"), indent=1)
