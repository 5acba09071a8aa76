import sys, torch, csv
torch.set_num_threads(1)
from impact_rt.audio import MelSpectrogram, GriffinLim, stft, load_audio
from impact_rt.vocoder import load_vocoder
from training.ceiling import pick_clips
from pathlib import Path
jobs=[j for j in pick_clips(Path('/work/corpus/manifest.csv'),5) if j[0].startswith(('a cello','a piano'))]
gl=GriffinLim(); mel_fn=MelSpectrogram()
vs=[load_vocoder(p) for p in sys.argv[1:]]
def peakiness(m):  # mean over frames of (max/mean) of bins 5..100 (80-1560 Hz), loud frames only
    x=m[0,:,5:100]; e=x.sum(-1); keep=e>e.quantile(0.5)
    return round(float((x.max(-1).values/x.mean(-1))[keep].mean()),2)
def sc(m, t): return round(float(torch.linalg.vector_norm(t-m)/torch.linalg.vector_norm(t)),3)
with torch.no_grad():
    for p,f in jobs:
        w=load_audio(str(f))[None]; t=stft(w,gl.window)[:,:1024].abs(); mel=mel_fn(w)
        n=gl.mel_to_magnitude(mel)
        row=[p[:8], 'true',peakiness(t),'nnls',peakiness(n),sc(n,t)]
        for v in vs:
            m=v(mel,magnitude_only=True); row+=['net',peakiness(m),sc(m,t)]
        print(*row)
