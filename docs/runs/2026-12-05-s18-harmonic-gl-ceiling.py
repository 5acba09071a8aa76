import sys, json, torch, os
from pathlib import Path
sys.path.insert(0, '/work/runs/voc')  # harmgl.py = docs/runs/2026-12-05-s18-harmonic-gl.py
torch.set_num_threads(2)
from harmgl import HarmonicGL
from impact_rt.audio import MelSpectrogram, load_audio, save_audio
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
from training.ceiling import pick_clips
out = Path(sys.argv[1]); threshs = [float(x) for x in sys.argv[2:]]
jobs = pick_clips(Path('/work/corpus/manifest.csv'), 5)
mel_fn = MelSpectrogram()
for th in threshs:
    voc = HarmonicGL(thresh=th)
    d = out / f'harm-{th}'; d.mkdir(parents=True, exist_ok=True); recs = []; share = []
    with torch.inference_mode():
        for i, (prompt, path) in enumerate(jobs):
            mel = mel_fn(load_audio(str(path))[None])
            y = voc(mel); share.append(float((voc.last_score > th).float().mean()))
            save_audio(str(d / f'{i:04d}.wav'), y[0]); recs.append({'file': f'{i:04d}.wav', 'prompt': prompt})
    (d / 'clips.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / 'clips.jsonl')
    print(th, round(rep['adherence']['rate'], 4), {r['prompt'][:12]: f"{r['hits']}/{r['clips']}" for r in rep['adherence']['per_prompt']}, flush=True)
    print('  periodic share per prompt', {p[:8]: round(sum(s for (q, _), s in zip(jobs, share) if q == p) / 5, 2) for p in dict(jobs)}, flush=True)
