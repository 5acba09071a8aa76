"""Self-reranking experiment: does the generator's own conditional-likelihood gain tell thunder hits from misses?"""
import sys, json, time, math
import numpy as np, torch
from impact_rt.pipeline import Pipeline, check_prompts
from impact_rt.decoding import decode, TorchNoise
from impact_rt import ddpm
from impact_rt.evaluation.yamnet import YamNet
from impact_rt.evaluation.adherence import load_prompts_tsv, normalise

prompt = sys.argv[1]; s0, ns = int(sys.argv[2]), int(sys.argv[3]); out = sys.argv[4]
torch.set_num_threads(2)
pipe = Pipeline.from_pretrained(backend="cpu")
m = pipe.model
specs = load_prompts_tsv("/work/shared/eval/prompts.tsv")
all_prompts = [l.split("\t")[0] for l in open("/work/shared/eval/prompts.tsv").read().splitlines()[1:]]
net = YamNet(threads=2)
toks, hits, tops = [], [], []
t0 = time.time()
for s in range(s0, s0 + ns, 5):
    seeds = list(range(s, min(s + 5, s0 + ns)))
    prompts = [prompt] * len(seeds)
    dc = pipe.decode_config()
    with torch.inference_mode():
        st, mk = pipe.conditioner.encode(prompts)
        cond, cmask = pipe.backend.project(st, mk)
        nc, nm = pipe.backend.null(len(prompts))
        tk = decode(pipe.backend, m.cfg, dc, cond, cmask, nc, nm, TorchNoise(seeds, pipe.device), pipe._tables_for(dc))
        wav = pipe.backend.audio(tk).float().numpy()
    for i in range(len(seeds)):
        top = [c for c, _ in net.top_k(net(wav[i]).clip_scores, 5)]
        hits.append(any(c in specs[normalise(prompt)].expected for c in top)); tops.append(top)
    toks.append(tk.float())
print("gen", time.time() - t0, "hits", sum(hits), "/", len(hits), flush=True)
x = torch.cat(toks)
B, N, C = x.shape
tab = m.train_schedule()

@torch.no_grad()
def per_sample_loss(tokens, cond, cmask, q, g):
    b, n, c = tokens.shape
    k = max(1, min(n, round(q * n)))
    order = torch.argsort(torch.rand(b, n, generator=g), dim=1)
    pi, vi = order[:, :k], order[:, k:]
    h = m.encoder(tokens, cond, cmask, vi, pi)
    tgt = torch.gather(tokens, 1, pi[..., None].expand(-1, -1, c)).reshape(-1, c)
    h = h.reshape(-1, m.cfg.dim)
    t = torch.randint(0, m.cfg.train_steps, (tgt.shape[0],), generator=g)
    noise = torch.randn(tgt.shape, generator=g)
    xt = ddpm.q_sample(tab, tgt, t, noise)
    o = m.head(xt, t, h)
    mse = ((noise - o[:, :c]) ** 2).mean(-1)
    return mse.reshape(b, k).mean(1)

conds = {}
with torch.inference_mode():
    st, mk = pipe.conditioner.encode(all_prompts)
    pc, pm = m.project_condition(st, mk)
for j, p in enumerate(all_prompts):
    conds[p] = (pc[j:j+1], pm[j:j+1])
nc, nm = m.null(1)
conds["<null>"] = (nc, nm)
K = int(sys.argv[5]) if len(sys.argv) > 5 else 8
L = {p: torch.zeros(B) for p in conds}
t1 = time.time()
for kk in range(K):
    q = [0.5, 0.7, 0.9, 1.0][kk % 4]
    for p, (c, cm) in conds.items():
        g = torch.Generator().manual_seed(1000 + kk)
        with torch.inference_mode():
            L[p] += per_sample_loss(x, c.expand(B, -1, -1), cm.expand(B, -1), q, g) / K
print("score", time.time() - t1, flush=True)
res = {"prompt": prompt, "seeds": list(range(s0, s0 + ns)), "hits": hits, "tops": tops,
       "loss": {p: v.tolist() for p, v in L.items()}}
json.dump(res, open(out, "w"))
def auc(sc, y):
    sc, y = np.array(sc), np.array(y, bool)
    if y.all() or (~y).all(): return float("nan")
    return float(np.mean([(a > b) + 0.5 * (a == b) for a in sc[y] for b in sc[~y]]))
Lc = L[prompt].numpy(); Ln = L["<null>"].numpy()
others = np.stack([L[p].numpy() for p in all_prompts if p != prompt])
print("AUC null-gain", auc(Ln - Lc, hits))
print("AUC others-mean-gain", auc(others.mean(0) - Lc, hits))
print("AUC softmax-classifier", auc(-(Lc) - np.log(np.exp(-others * 50).sum(0) + np.exp(-Lc * 50)) / 50, hits))
print("AUC -loss_cond", auc(-Lc, hits))
