"""Session 27: evaluate_model with the generated latent smoothed across token seams before the VAE
decoder. usage: SEAM=mode python this.py <evaluate_model args>. Modes:
  seam_tf  - the two frames (bins) on each side of every patch boundary replaced by a [1/4, 1/2, 1/4]
             smoothing along time (and frequency);
  seam_t   - the same along time only;
  blur_t   - the [1/4, 1/2, 1/4] smoothing along time at every frame (a control: smoothing everywhere).
"""
import os
import sys

import torch
import torch.nn.functional as F

from impact_rt import pipeline as P
from impact_rt.patchify import patchify, unpatchify
from training.evaluate_model import main

MODE = os.environ["SEAM"]


def smooth(lat, dim, only_seams, p):
    x = lat.movedim(dim, -1)
    shp = x.shape
    flat = x.reshape(-1, 1, shp[-1])
    y = F.conv1d(F.pad(flat, (1, 1), mode="replicate"), torch.tensor([[[0.25, 0.5, 0.25]]], dtype=flat.dtype))
    y = y.reshape(shp)
    if only_seams:
        i = torch.arange(shp[-1])
        m = ((i % p) == 0) | ((i % p) == p - 1)
        m[0] = m[-1] = False
        y = torch.where(m, y, x)
    return y.movedim(-1, dim)


def wrap(pipe):
    cfg = pipe.model.cfg
    orig = pipe.backend.audio

    def audio(tokens):
        lat = unpatchify(tokens.float(), cfg.patch, cfg.latent_channels, cfg.latent_time, cfg.latent_freq)
        if MODE in ("seam_tf", "seam_t"):
            lat = smooth(lat, 2, True, cfg.patch)
            if MODE == "seam_tf":
                lat = smooth(lat, 3, True, cfg.patch)
        elif MODE == "blur_t":
            lat = smooth(lat, 2, False, cfg.patch)
        else:
            raise SystemExit(f"unknown SEAM mode {MODE}")
        return orig(patchify(lat, cfg.patch).to(tokens.dtype))
    pipe.backend.audio = audio
    return pipe


_orig = P.Pipeline.from_pretrained.__func__
P.Pipeline.from_pretrained = classmethod(lambda cls, *a, **k: wrap(_orig(cls, *a, **k)))
sys.exit(main(sys.argv[1:]))
