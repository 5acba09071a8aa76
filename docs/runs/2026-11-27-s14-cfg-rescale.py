"""CFG-rescale experiment on the thunder prompt (torch reference backend, patched sampler)."""
import sys, json, time
import numpy as np, torch
import impact_rt.sampler as S
from impact_rt import ddpm
from impact_rt.pipeline import Pipeline
from impact_rt.evaluation.yamnet import YamNet
from impact_rt.evaluation.adherence import load_prompts_tsv, normalise

prompt = sys.argv[1]; s0, ns = int(sys.argv[2]), int(sys.argv[3]); beta = float(sys.argv[4]); phi = float(sys.argv[5])
torch.set_num_threads(2)

def sample_head(head, tab, h_cond, h_uncond, noise, guidance, temperature):
    steps = tab["timestep_map"].shape[0]; c = head.token_dim; r = h_cond.shape[0]
    t_emb = head.time_embed(tab["timestep_map"])
    c_emb = head.cond_embed(h_cond if h_uncond is None else torch.cat([h_cond, h_uncond]))
    x = noise[0]
    for j, i in enumerate(reversed(range(steps))):
        xx = x if h_uncond is None else torch.cat([x, x])
        out = head.step(xx, c_emb + t_emb[i])
        eps, v = out[:r, :c], out[:r, c:]
        if h_uncond is not None:
            ec = eps
            g = out[r:, :c] + guidance * (ec - out[r:, :c])
            if phi > 0:
                rs = g * (ec.std(-1, keepdim=True) / g.std(-1, keepdim=True))
                g = phi * rs + (1 - phi) * g
            eps = g
        x = ddpm.p_sample_step(tab, x, i, eps, v, noise[j + 1] if i > 0 else None, temperature)
    return x

import impact_rt.reference as R
R.sample_head = sample_head
pipe = Pipeline.from_pretrained(backend="torch")
specs = load_prompts_tsv("/work/shared/eval/prompts.tsv")
net = YamNet(threads=2)
hits = []; tops = []
t0 = time.time()
for s in range(s0, s0 + ns, 5):
    seeds = list(range(s, min(s + 5, s0 + ns)))
    g = pipe.generate([prompt] * len(seeds), seed=seeds, guidance=beta)
    for i in range(len(seeds)):
        top = [c for c, _ in net.top_k(net(g.audio[i]).clip_scores, 5)]
        hits.append(any(c in specs[normalise(prompt)].expected for c in top)); tops.append(top[:3])
print(json.dumps({"prompt": prompt, "beta": beta, "phi": phi, "hits": sum(hits), "n": len(hits), "s": round(time.time() - t0),
                  "hit_list": [int(h) for h in hits]}), flush=True)
