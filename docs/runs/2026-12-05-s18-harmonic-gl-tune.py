"""Harmonic-GL settings on a tuning set: train-split clips of the ceiling's categories, none of the ceiling's own."""
import sys, json, torch, csv, itertools
from pathlib import Path
sys.path.insert(0, '/work/runs/voc')  # harmgl.py = docs/runs/2026-12-05-s18-harmonic-gl.py
torch.set_num_threads(2)
from harmgl import HarmonicGL
from impact_rt.audio import MelSpectrogram, GriffinLim, load_audio, save_audio
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
from training.ceiling import pick_clips, PROMPT_CATEGORIES
man = Path('/work/corpus/manifest.csv')
ceil = {str(p) for _, p in pick_clips(man, 5)}
rows = [r for r in csv.DictReader(open(man)) if r['split'] == 'train' and not (r.get('kind') or '').startswith(('scene', 'natural'))]
import random
jobs = []
for prompt, cats in PROMPT_CATEGORIES.items():
    cand = sorted(r['id'] for r in rows if r['category'] in cats and str(man.parent / r['file']) not in ceil)
    random.Random(18).shuffle(cand)
    by = {r['id']: r for r in rows}
    jobs += [(prompt, man.parent / by[i]['file']) for i in cand[:5]]
mel_fn = MelSpectrogram()
mels = [(p, mel_fn(load_audio(str(f))[None])) for p, f in jobs]
out = Path(sys.argv[1])
configs = json.loads(sys.argv[2])
for cfg in configs:
    name = 'gl' if cfg is None else '-'.join(f'{k}{v}' for k, v in cfg.items())
    voc = GriffinLim() if cfg is None else HarmonicGL(**cfg)
    d = out / name; d.mkdir(parents=True, exist_ok=True); recs = []
    with torch.inference_mode():
        for i, (p, mel) in enumerate(mels):
            save_audio(str(d / f'{i:04d}.wav'), voc(mel)[0]); recs.append({'file': f'{i:04d}.wav', 'prompt': p})
    (d / 'clips.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / 'clips.jsonl')
    print(name, round(rep['adherence']['rate'], 4), {r['prompt'][:8]: f"{r['hits']}/{r['clips']}" for r in rep['adherence']['per_prompt'] if r['prompt'][:3] in ('a c', 'a p', 'a r', 'an ', 'a b', 'a m', 'a d')}, flush=True)
