import sys, torch
torch.set_num_threads(1)
from impact_rt.audio import MelSpectrogram, GriffinLim, stft
from impact_rt.vocoder import load_vocoder
from training.audio_dataset import StepBatches, list_audio_files
import csv
rows=[r for r in csv.DictReader(open('/work/corpus/manifest.csv')) if r['split']=='val']
files=['/work/corpus/'+r['file'] for r in rows]
b = StepBatches(files, 32, 256*160, seed=7)[0]
wav, mel = b['wav'], b['mel']
gl = GriffinLim()
target = stft(wav, gl.window).abs()
mel_fn = MelSpectrogram(n_frames=None, soft=True)
def mag_loss(mag):
    l1 = ((mag + 1e-5).log() - (target + 1e-5).log()).abs().mean()
    sc = torch.linalg.vector_norm(target - mag) / torch.linalg.vector_norm(target)
    return round(float(l1), 4), round(float(sc), 4)
def mel_l1(y):
    return round(float((mel_fn(y) - mel_fn(wav)).abs().mean()), 4)
with torch.no_grad():
    print('nnls32', mag_loss(gl.mel_to_magnitude(mel)), 'GL4 mel_l1', mel_l1(gl(mel)))
    print('pinv', mag_loss(GriffinLim(nnls_iter=0).mel_to_magnitude(mel)))
    for p in sys.argv[1:]:
        v = load_vocoder(p)
        print(p, mag_loss(v(mel, magnitude_only=True)), 'mel_l1', mel_l1(v(mel)))
