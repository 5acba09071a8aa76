"""Prototype: Griffin-Lim whose magnitude comes from NNLS started at a harmonic comb where a frame looks periodic."""
import math, sys, json, torch
import numpy as np
from impact_rt.audio import GriffinLim, mel_filterbank, N_FREQS, SAMPLE_RATE, N_FFT

BIN_HZ = SAMPLE_RATE / N_FFT  # 15.625

class HarmonicGL(GriffinLim):
    def __init__(self, thresh=1.3, fmin=70., fmax=600., n_f0=240, kmax_hz=3000., sigma=0.8, floor=0.02, **kw):
        super().__init__(**kw)
        self.thresh, self.sigma, self.floor = thresh, sigma, floor
        f0 = torch.exp(torch.linspace(math.log(fmin), math.log(fmax), n_f0))
        self.f0 = f0
        bins = torch.arange(N_FREQS).float()
        # salience weights [n_f0, 513]: narrow bumps at harmonics k*f0 < kmax_hz, 0.9^k decay, minus the mean between
        combs = []
        for f in f0.tolist():
            K = int(kmax_hz // f)
            c = torch.zeros(N_FREQS)
            for k in range(1, K + 1):
                c += 0.92 ** (k - 1) * torch.exp(-0.5 * ((bins - k * f / BIN_HZ) / sigma) ** 2)
            combs.append(c)
        self.combs = torch.stack(combs)                 # [n_f0, 513]
        self.combs_n = self.combs / self.combs.sum(-1, keepdim=True)

    def nnls(self, mel, mag):
        basis = self.mel_basis
        for _ in range(self.nnls_iter):
            grad = torch.matmul(torch.matmul(mag, basis.T) - mel, basis)
            mag = (mag - self.step * grad).clamp_min(0.0)
        return mag

    def mel_to_magnitude(self, log_mel):
        mel = torch.exp(log_mel.float())
        m0 = self.nnls(mel, torch.matmul(mel, self.mel_pinv.T).clamp_min(0.0))
        lo = m0[..., : int(3000 / BIN_HZ)]
        sal = torch.matmul(m0, self.combs_n.T)          # [B, T, n_f0]: comb-weighted mean magnitude
        base = lo.mean(-1, keepdim=True).clamp_min(1e-9)
        score, idx = (sal / base).max(-1)              # periodicity: best comb's mean over the plain mean
        comb = self.combs[idx] / self.combs[idx].amax(-1, keepdim=True)   # [B, T, 513]
        init = m0 * (self.floor + comb)
        mh = self.nnls(mel, init)
        # keep the comb only below 3 kHz-ish where it was defined; above, the plain solution
        periodic = (score > self.thresh).unsqueeze(-1)
        self.last_score = score
        return torch.where(periodic, mh, m0)
