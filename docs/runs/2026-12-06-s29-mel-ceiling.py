# session 29: the decoded log-mel's outliers (run: python docs/runs/2026-12-06-s29-mel-ceiling.py 0 10 OUT). Every prompt of shared/eval/prompts.tsv, seeds FIRST..FIRST+N-1, shipped model,
# cpu backend fp32; each batch decoded once, its audio made three ways from the same latents:
#   base  : as shipped (VAE decoder -> Griffin-Lim), saved clipped at +-1
#   ceil05: log-mel clamped per mel bin at the largest value a sine of peak 0.5 (the training data's peak) gives, then as base
#   ceil1 : the same ceiling for a full-scale sine (peak 1: + ln 2), then as base
import sys, json, time, numpy as np, soundfile as sf, torch
from pathlib import Path
sys.path.insert(0, "/work/main")
from impact_rt import Pipeline
from impact_rt.audio import log_mel_ceiling
from training.evaluate_model import score
from impact_rt.evaluation.adherence import load_prompts_tsv


first, n, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
CEIL05 = log_mel_ceiling(0.5)
torch.set_num_threads(2)
pp = Path("/work/shared/eval/prompts.tsv")
prompts = [s.prompt for s in load_prompts_tsv(pp).values()]
pipe = Pipeline.from_pretrained(None, backend="cpu", precision="fp32")
variants = {"base": None, "ceil05": CEIL05, "ceil1": CEIL05 + np.log(2.0)}
for v in variants:
    (out / v / "clips").mkdir(parents=True, exist_ok=True)
jobs = [(p, s) for p in prompts for s in range(first, first + n)]
records, stats, t0 = [], {v: [] for v in variants}, time.time()
for i in range(0, len(jobs), 8):
    batch = jobs[i:i + 8]
    g = pipe.generate([p for p, _ in batch], seed=[s for _, s in batch])
    with torch.inference_mode():
        lm = pipe.vae.decode_latents(torch.from_numpy(g.latents)).float()
        for v, c in variants.items():
            wav = pipe.vocoder(lm if c is None else torch.minimum(lm, c)).numpy()
            for j, x in enumerate(wav):
                sf.write(out / v / "clips" / f"{i + j:04d}.wav", np.clip(x, -1, 1).astype(np.float32), 16000)
                stats[v].append((float(np.abs(x).max()), float((np.abs(x) > 1).mean())))
    records += [{"file": f"{i + j:04d}.wav", "prompt": p, "seed": s} for j, (p, s) in enumerate(batch)]
    print(i + len(batch), "clips", round(time.time() - t0), "s", flush=True)
for v in variants:
    clips = out / v / "clips"
    (clips / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report, scores = score(clips, records, prompts, pp, "/work/corpus/clips/test")
    pk = np.array(stats[v])
    scores["peaks"] = {"median": float(np.median(pk[:, 0])), "over1_clips": int((pk[:, 0] > 1).sum()),
                       "clipped_sample_share": float(pk[:, 1].mean())}
    (out / v / "report.json").write_text(json.dumps(report, indent=1))
    (out / v / "summary.json").write_text(json.dumps(scores, indent=1))
    print(v, "adherence %.3f shuffled %.3f thunder %s FD %.2f silent %.3f" % (scores["adherence"], scores["adherence_shuffled_prompts"],
          scores["thunder"], scores["metrics"]["fd"], scores["metrics"]["silent_share"]), scores["peaks"], flush=True)
