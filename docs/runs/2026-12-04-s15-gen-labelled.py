"""Generate clips of the shipped model for every evaluation prompt, keep the decoded tokens and YAMNet's verdict.

    python docs/runs/2026-12-04-s15-gen-labelled.py FIRST_SEED N_SEEDS OUT.safetensors [PROMPT ...]

The set a reranker is judged on (session 15): tokens [M, 256, 128] fp16, prompt index, seed, hit.
"""
import sys, json, time
import torch
from safetensors.torch import save_file
from impact_rt.pipeline import Pipeline
from impact_rt.decoding import decode, TorchNoise
from impact_rt.evaluation.yamnet import YamNet
from impact_rt.evaluation.adherence import load_prompts_tsv, normalise

s0, ns, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
specs = load_prompts_tsv("/work/shared/eval/prompts.tsv")
all_prompts = [l.split("\t")[0] for l in open("/work/shared/eval/prompts.tsv").read().splitlines()[1:]]
prompts = sys.argv[4:] or all_prompts
pipe = Pipeline.from_pretrained(backend="cpu")
net = YamNet(threads=1)
toks, pidx, seeds, hits, tops = [], [], [], [], []
t0 = time.time()
for p in prompts:
    for s in range(s0, s0 + ns, 4):
        sd = list(range(s, min(s + 4, s0 + ns)))
        dc = pipe.decode_config()
        with torch.inference_mode():
            st, mk = pipe.conditioner.encode([p] * len(sd))
            cond, cmask = pipe.backend.project(st, mk)
            nc, nm = pipe.backend.null(len(sd))
            tk = decode(pipe.backend, pipe.model.cfg, dc, cond, cmask, nc, nm, TorchNoise(sd, pipe.device),
                        pipe._tables_for(dc))
            wav = pipe.backend.audio(tk).float().numpy()
        for i in range(len(sd)):
            top = [c for c, _ in net.top_k(net(wav[i]).clip_scores, 5)]
            hits.append(any(c in specs[normalise(p)].expected for c in top)); tops.append(top)
        toks.append(tk.float().half()); pidx += [all_prompts.index(p)] * len(sd); seeds += sd
    print(f"{p}: {sum(h for h, q in zip(hits, pidx) if q == all_prompts.index(p))}/{ns}  {time.time() - t0:.0f} s", flush=True)
save_file({"tokens": torch.cat(toks), "prompt": torch.tensor(pidx), "seed": torch.tensor(seeds),
           "hit": torch.tensor(hits)}, out, metadata={"prompts": json.dumps(all_prompts), "tops": json.dumps(tops)})
