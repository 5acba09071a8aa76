"""Session 17: real clips of the eval prompts (training.ceiling's pick, 5 a prompt, 89 clips): log-mel -> NNLS magnitude
-> phases by Griffin-Lim from noise phases, 4 iterations (shipped) / PGHI / PGHI + 4 or 16 Griffin-Lim iterations
-> YAMNet adherence. python docs/runs/2026-12-05-s17-pghi-ceiling.py novae 5 (or vae: through the VAE too).
Measured: 50.6 % / 28.1 % / 31.5 % / 36.0 %; PGHI lifts cello 0 -> 2 of 5 and turns rain, wind, streams and
cars (noise-like sounds) to 0 of 5. Not adopted."""
import sys, time, json, numpy as np, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import importlib; pghi = importlib.import_module("2026-12-05-s17-pghi").pghi
from training.ceiling import pick_clips
from impact_rt.audio import MelSpectrogram, load_audio, stft, istft, GriffinLim
from impact_rt.evaluation.yamnet import YamNet
from impact_rt.evaluation.adherence import load_prompts_tsv, default_prompts_path
from impact_rt.pipeline import Pipeline
torch.set_num_threads(1)
use_vae = len(sys.argv) > 1 and sys.argv[1] == "vae"
per = int(sys.argv[2]) if len(sys.argv) > 2 else 5
specs = load_prompts_tsv(default_prompts_path())
yn = YamNet(threads=1)
gl = GriffinLim()
w = torch.hann_window(1024)
mel_fn = MelSpectrogram()
vae = Pipeline.from_pretrained(None, backend="torch").backend.vae if use_vae else None
jobs = pick_clips(Path("/work/corpus/manifest.csv"), per)
ways = ["gl4", "pghi", "pghi+gl4", "pghi+gl16"]
hits = {wy: {} for wy in ways}
secs = {wy: 0.0 for wy in ways}
def gl_iters(mag, ang, n):
    for _ in range(n):
        ang = torch.sgn(stft(istft((mag * ang)[None], w), w)[0])
    return istft((mag * ang)[None], w)[0]
def hit(y, prompt):
    exp = set(specs[prompt].expected)
    return any(c in exp for c, _ in yn.top_k(yn(y.numpy().astype(np.float32)).clip_scores, 5))
with torch.inference_mode():
    for prompt, path in jobs:
        wav = load_audio(str(path))[None]
        mel = mel_fn(wav)
        if use_vae:
            mel = vae.decode(vae.encode(mel).mode())
        mag = gl.mel_to_magnitude(mel)[0]
        t0 = time.time(); y = gl.magnitude_to_waveform(mag[None])[0]; secs["gl4"] += time.time() - t0
        r = {"gl4": y}
        t0 = time.time(); ph = torch.from_numpy(pghi(mag.numpy().astype(np.float64))).to(torch.complex64); secs["pghi"] += time.time() - t0
        r["pghi"] = istft((mag * ph)[None], w)[0]
        r["pghi+gl4"] = gl_iters(mag, ph, 4)
        r["pghi+gl16"] = gl_iters(mag, ph, 16)
        for wy in ways:
            d = hits[wy].setdefault(prompt, [0, 0]); d[0] += hit(r[wy], prompt); d[1] += 1
for wy in ways:
    tot = sum(v[0] for v in hits[wy].values()); n = sum(v[1] for v in hits[wy].values())
    print(f"{wy}: {tot}/{n} = {tot/n:.1%}", {p[:12]: f"{a}/{b}" for p, (a, b) in hits[wy].items()})
print("seconds per clip", {k: round(v / len(jobs), 3) for k, v in secs.items()})
