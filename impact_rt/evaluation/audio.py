"""Listing and reading the clips of a folder as 16 kHz mono float32."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

from .errors import UsageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16000


def list_audio(folder: str | Path, what: str = "folder") -> list[Path]:
    """Audio files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{what} not found or not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UsageError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {what} {folder}")
    return files


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 waveform at `sample_rate` (channels averaged, polyphase resampling)."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, OSError, ...
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot read audio file {path}: {msg}") from None
    if x.shape[0] == 0:
        raise UsageError(f"audio file {path} is empty")
    bad = x.size - int(np.isfinite(x).sum())
    if bad:   # float files can hold NaN / inf; YAMNet would label them "Silence" without a word
        raise UsageError(f"audio file {path} has {bad} non-finite sample value(s) (NaN or infinity)")
    x = x.mean(axis=1)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = gcd(int(sr), int(sample_rate))
        x = resample_poly(x, sample_rate // g, int(sr) // g).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)
