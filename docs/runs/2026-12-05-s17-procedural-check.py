"""Session 17: YAMNet adherence of procedural clips as rendered and through the shipped VAE + Griffin-Lim.

    python docs/runs/2026-12-05-s17-procedural-check.py N   (N clips per kind; seed 777)

Thunder, wind, fire and thunder over wind from the all-kinds prototype of training/data/procedural.py
(only wind was kept). N = 16: thunder 0/16 as rendered, 4/16 through the chain; wind 13/16, 10/16;
fire 16/16, 0/16; thunder over wind 1/16, 4/16. The kept wind model (training.data.procedural
imported in place of the prototype), N = 24: 23/24, 15/24.
"""
import sys, json, numpy as np, torch
import importlib.util, pathlib
_p = pathlib.Path(__file__).with_name("2026-12-05-s17-procedural-all-kinds.py")
_spec = importlib.util.spec_from_file_location("procedural_all_kinds", _p)
_m = importlib.util.module_from_spec(_spec); sys.modules[_spec.name] = _m; _spec.loader.exec_module(_m)
nature_specs, synthesise = _m.nature_specs, _m.synthesise
from impact_rt.evaluation.yamnet import YamNet
from impact_rt.audio import MelSpectrogram
from impact_rt.pipeline import Pipeline
EXP = {"thunder": {"Thunder", "Thunderstorm", "Rain"}, "storm": {"Thunder", "Thunderstorm", "Rain"},
       "wind": {"Wind", "Wind noise (microphone)", "Rustling leaves"}, "fire": {"Fire", "Crackle"}}
n = int(sys.argv[1])
yn = YamNet(threads=2)
pipe = Pipeline.from_pretrained(None, backend="torch")
vae, voc = pipe.backend.vae, pipe.backend.vocoder
mel = MelSpectrogram()
res = {}
with torch.inference_mode():
    for s in nature_specs(777, n):
        y = synthesise(s)
        z = vae.encode(mel(torch.from_numpy(y)[None])).mode()
        y2 = voc(vae.decode(z))[0].numpy().astype(np.float32)
        r = res.setdefault(s.kind, [0, 0, 0, []])
        for j, w in enumerate((y, y2)):
            top = yn.top_k(yn(w).clip_scores, 5)
            r[j] += any(c in EXP[s.kind] for c, _ in top)
            if j == 1: r[3].append(top[0][0])
        r[2] += 1
for k, (a, b, m, tops) in res.items():
    from collections import Counter
    print(f"{k}: as rendered {a}/{m}, through VAE+vocoder {b}/{m}; top-1 after: {Counter(tops).most_common(4)}")
