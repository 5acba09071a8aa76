"""Ceiling of vocoder variants on the 89 real clips of training.ceiling (log-mel -> waveform -> YAMNet)."""
import sys, json, torch
from pathlib import Path
torch.set_num_threads(int(__import__('os').environ.get('THREADS', '1')))
from impact_rt.audio import MelSpectrogram, GriffinLim, load_audio, save_audio, stft
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
from impact_rt.vocoder import load_vocoder
from training.ceiling import pick_clips
out = Path(sys.argv[1]); variants = sys.argv[2:]
jobs = pick_clips(Path('/work/corpus/manifest.csv'), 5)
mel_fn = MelSpectrogram()
gl = GriffinLim()
res = {}
for var in variants:
    d = out / var.replace('/', '_'); d.mkdir(parents=True, exist_ok=True)
    voc = None if var.startswith('true') else (GriffinLim() if var == 'gl' else load_vocoder(var))
    recs = []
    with torch.inference_mode():
        for i, (prompt, path) in enumerate(jobs):
            wav = load_audio(str(path))[None]
            if var.startswith('true'):
                mag = stft(wav, gl.window)[:, :1024].abs()
                g = GriffinLim(n_iter=int(var[4:]))
                y = g.magnitude_to_waveform(mag)
            else:
                y = voc(mel_fn(wav))
            save_audio(str(d / f'{i:04d}.wav'), y[0])
            recs.append({'file': f'{i:04d}.wav', 'prompt': prompt})
    (d / 'clips.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    rep = evaluate(d, None, default_prompts_path(), d / 'clips.jsonl')
    res[var] = rep['adherence']['rate']
    print(var, round(res[var], 4), {r['prompt'][:12]: f"{r['hits']}/{r['clips']}" for r in rep['adherence']['per_prompt']}, flush=True)
