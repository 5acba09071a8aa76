"""Small audio helpers: decode to 16 kHz mono, loop, place, mix, silence test, pitch."""
from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SR = 16000
CLIP_SAMPLES = 163840          # 10.24 s at 16 kHz


def load_mono(path: str | Path, sr: int = SR) -> np.ndarray:
    """Decode any file libsndfile reads (wav, flac, ogg, mp3) to float32 mono at `sr`."""
    x, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if file_sr != sr:
        g = gcd(int(file_sr), sr)
        x = resample_poly(x, sr // g, int(file_sr) // g).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def trim(x: np.ndarray, thresh: float = 1e-3) -> np.ndarray:
    """Cut leading and trailing near-silence (|x| below thresh times the peak)."""
    if x.size == 0:
        return x
    peak = float(np.abs(x).max())
    if peak <= 0:
        return x[:0]
    idx = np.flatnonzero(np.abs(x) > thresh * peak)
    return x[idx[0]: idx[-1] + 1]


def peak_normalize(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.abs(x).max()) if x.size else 0.0
    return x if m <= 0 else (x * (peak / m)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def fade(x: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    x = x.copy()
    if n_in > 0:
        n = min(n_in, len(x))
        x[:n] *= np.linspace(0, 1, n, dtype=np.float32)
    if n_out > 0:
        n = min(n_out, len(x))
        x[len(x) - n:] *= np.linspace(1, 0, n, dtype=np.float32)
    return x


def loop_to(x: np.ndarray, n: int, start: int = 0, xfade: int = 1600) -> np.ndarray:
    """Loop `x` with equal-power crossfades and return `n` samples beginning at `start`."""
    if len(x) == 0:
        return np.zeros(n, dtype=np.float32)
    start = start % len(x)
    if len(x) >= n + start:
        return x[start: start + n].copy()
    xfade = max(0, min(xfade, len(x) // 4))
    out = np.zeros(n + start + 2 * len(x), dtype=np.float32)
    t = np.linspace(0, np.pi / 2, xfade, dtype=np.float32)
    pos = 0
    while pos < n + start:
        seg = x.copy()
        if pos > 0 and xfade:
            seg[:xfade] *= np.sin(t)
        if xfade:
            seg[len(seg) - xfade:] *= np.cos(t)
        out[pos: pos + len(seg)] += seg
        pos += len(seg) - xfade
    return out[start: start + n]


def place(dst: np.ndarray, src: np.ndarray, at: int, gain: float = 1.0) -> None:
    """Add `src` into `dst` at sample `at` (clipped at the end of `dst`)."""
    if at >= len(dst):
        return
    n = min(len(src), len(dst) - at)
    dst[at: at + n] += gain * src[:n]


def is_silent(x: np.ndarray, min_peak: float = 3e-3, min_rms: float = 3e-4) -> bool:
    """Near-silent: peak below -50 dBFS or RMS below -70 dBFS."""
    return x.size == 0 or float(np.abs(x).max()) < min_peak or rms(x) < min_rms


def write_clip(path: Path, x: np.ndarray) -> None:
    """Write a 16-bit FLAC (or WAV by suffix) atomically: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    sf.write(str(tmp), np.clip(x, -1, 1), SR, subtype="PCM_16", format=fmt)
    os.replace(tmp, path)


def median_f0(x: np.ndarray, sr: int = SR) -> float:
    """Median F0 (Hz) of voiced frames by normalised autocorrelation; 0.0 when unvoiced."""
    fl, hop = int(0.04 * sr), int(0.01 * sr)
    if len(x) < fl + 2 * hop:
        return 0.0
    n = 1 + (len(x) - fl) // hop
    idx = np.arange(fl)[None, :] + hop * np.arange(n)[:, None]
    fr = x[idx] * np.hanning(fl).astype(np.float32)
    e = (fr ** 2).mean(axis=1)
    fr = fr[e > max(1e-7, 0.05 * np.percentile(e, 95))]
    if len(fr) < 3:
        return 0.0
    spec = np.fft.rfft(fr, 2 * fl)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :fl]
    ac /= ac[:, :1] + 1e-12
    lo, hi = sr // 400, sr // 70
    lag = lo + ac[:, lo:hi].argmax(axis=1)
    voiced = ac[np.arange(len(ac)), lag] > 0.45
    if voiced.sum() < 3:
        return 0.0
    return float(np.median(sr / lag[voiced]))
