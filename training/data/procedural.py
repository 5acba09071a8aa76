"""Procedural nature sounds for the corpus: wind, synthesised from a seed.

The reachable packages hold few wind recordings, and YAMNet hears only 2 of the 5 that
``training.ceiling`` picks as wind. The corpus can add clips rendered by a classic
sound-design model, as it adds General MIDI pieces and synthetic speech:

- wind: white noise through a band-pass whose centre and gain follow a slow gust process,
  plus the low rumble of air on surfaces; a narrow band-pass (high Q) gives a whistling wind.

Every clip is described by a small spec drawn from a seeded generator (kind, seed, caption), so
the same build seed gives the same clips, ids and captions; rendered files are cached. These
clips go to the training split only: the validation and test splits, and so the evaluation's
reference set, stay recorded audio.

Thunder and fire models were tried too and left out (docs/training.md, session 17): the
synthesised thunder (a lightning channel of N-wave emitters) sounds like an explosion to YAMNet,
and crackling fire does not survive our VAE's time resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from .audio import CLIP_SAMPLES, SR, write_clip

NATURE_PACKAGE = "render-nature"
NATURE_LICENSE = "procedurally synthesised (impact-rt training/data/procedural.py, MIT)"
KINDS = ("wind",)
CATEGORIES = {"wind": ("wind",)}


@dataclass(frozen=True)
class NatureSpec:
    id: str
    kind: str           # one of KINDS
    seed: int
    caption: str
    params: tuple = ()  # (name, value) pairs the caption was drawn from, kept for the record

    @property
    def categories(self) -> tuple[str, ...]:
        return CATEGORIES[self.kind]


# ---- building blocks ---------------------------------------------------------------------------

def _butter(order: int, hz, kind: str = "low"):
    return signal.butter(order, np.asarray(hz, dtype=float) / (SR / 2), kind)


def slow_control(rng: np.random.Generator, n: int, rate_hz: float, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """A slowly varying control signal in [lo, hi]: random points at `rate_hz`, interpolated and smoothed."""
    k = int(n / SR * rate_hz) + 4
    x = np.interp(np.arange(n), np.linspace(0, n, k), rng.uniform(0, 1, k))
    x = signal.lfilter(*_butter(2, rate_hz), x)
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    return lo + (hi - lo) * x


def varying_bandpass(x: np.ndarray, centre_hz: np.ndarray, q: float) -> np.ndarray:
    """A state-variable band-pass whose centre frequency follows `centre_hz` sample by sample."""
    f = 2 * np.sin(np.pi * np.clip(centre_hz, 20, SR / 4) / SR)
    d = 1.0 / q
    y = np.empty_like(x)
    low = band = 0.0
    for i in range(len(x)):
        high = x[i] - low - d * band
        band += f[i] * high
        low += f[i] * band
        y[i] = band
    return y


def _normalise(y: np.ndarray, peak: float) -> np.ndarray:
    return (y / (np.abs(y).max() + 1e-9) * peak).astype(np.float32)


# ---- wind -------------------------------------------------------------------------------

def wind(rng, whistle: bool = False) -> np.ndarray:
    n = CLIP_SAMPLES
    gust = slow_control(rng, n, rng.uniform(0.3, 0.8), 0.15, 1.0) ** 1.5
    centre = 150 + gust * rng.uniform(300, 900)
    q = rng.uniform(8.0, 15.0) if whistle else rng.uniform(1.0, 3.0)
    y = varying_bandpass(rng.normal(0, 1, n), centre, q) * gust
    if whistle:
        y *= 3.0
    rumble = signal.lfilter(*_butter(2, 120), rng.normal(0, 1, n)) * gust * rng.uniform(0.5, 2.0) * 4
    return y + rumble


# ---- specs, captions, rendering ------------------------------------------------------------------

def nature_specs(seed: int, per_kind: int) -> list[NatureSpec]:
    """`per_kind` clips of each kind, deterministic in `seed`."""
    out = []
    for kind in KINDS:
        for i in range(per_kind):
            rng = np.random.default_rng([seed, KINDS.index(kind), i, 0x4E41])
            clip_seed = int(rng.integers(0, 2**31 - 1))
            whistle = bool(rng.uniform() < 0.3)
            caption = str(rng.choice(["wind whistling", "wind howling"] if whistle else
                                     ["strong wind blowing", "a gusty wind", "the wind blowing hard"]))
            out.append(NatureSpec(f"nature-{kind}-{seed}-{i:04d}", kind, clip_seed, caption, (("whistle", whistle),)))
    return out


def synthesise(spec: NatureSpec) -> np.ndarray:
    """The clip of one spec: CLIP_SAMPLES float32 samples at SR, peak 0.7."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown procedural kind {spec.kind!r}")
    return _normalise(wind(np.random.default_rng(spec.seed), dict(spec.params)["whistle"]), 0.7)


def render_nature(specs: list[NatureSpec], out_dir: Path) -> None:
    """Write `<id>.wav` for every spec not already on disk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in specs:
        path = out_dir / f"{s.id}.wav"
        if not path.exists():
            write_clip(path, synthesise(s))          # atomic: a crash never leaves half a file
