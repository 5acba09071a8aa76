"""Session 17 prototype (not used): procedural thunder, wind, fire and thunder over wind. Only wind was kept
in training/data/procedural.py; docs/runs/2026-12-05-s17-procedural-check.py measures all four.


The reachable packages hold few recordings of these (about thirteen of thunder), so the corpus
can add clips rendered by classic sound-design models, as it adds General MIDI pieces and
synthetic speech:

- thunder: a tortuous lightning channel (a cloud-to-ground random walk plus a few in-cloud
  branches) whose segments each emit an N-wave; each wave arrives after its path length / c,
  duller the farther it travelled (air absorbs the highs), and the sum goes through a decaying
  reverberation of cloud and ground echoes. The channel's spread in distance is what makes the
  rumble roll for seconds.
- wind: noise through a band-pass whose centre and gain follow a slow gust process, plus the low
  rumble of air on surfaces; a narrow band-pass (high Q) gives a whistling wind.
- fire: a low roar and a hiss under a Poisson train of short high-passed crackles, some in
  quick bursts (pops).

Every clip is described by a small spec drawn from a seeded generator (kind, seed, caption), so
the same build seed gives the same clips, ids and captions; rendered files are cached. The
parameters were set from the physics and from the band energies and envelopes of the corpus's
recorded thunder (most energy below 300 Hz, a rumble of several seconds), not fitted to a
classifier. These clips go to the training split only: the validation and test splits, and so the
evaluation's reference set, stay recorded audio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from training.data.audio import CLIP_SAMPLES, SR
# the building blocks and the wind model are the ones kept in training/data/procedural.py
from training.data.procedural import _butter, _normalise, slow_control, wind

SPEED_OF_SOUND = 343.0
KINDS = ("thunder", "wind", "fire", "storm")
CATEGORIES = {"thunder": ("thunder",), "wind": ("wind",), "fire": ("fire",), "storm": ("thunder", "wind")}


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

# ---- thunder -------------------------------------------------------------------------------------

def _walk(rng, start, max_steps: int, seg: float, downward: bool) -> np.ndarray:
    pts = [start]
    for _ in range(max_steps):
        d = rng.normal(0, 1, 3)
        d[2] = (-abs(d[2]) * 1.2 - 0.3) if downward else d[2] * 0.2
        pts.append(pts[-1] + seg * d / np.linalg.norm(d))
        if pts[-1][2] <= 0:
            break
    return np.array(pts)


def lightning_channel(rng, height: float, branches: int, seg: float = 15.0) -> np.ndarray:
    """Points (metres) along a cloud-to-ground stroke and `branches` in-cloud branches."""
    top = np.array([0.0, 0.0, height])
    parts = [_walk(rng, top, 100_000, seg, True)]
    for _ in range(branches):
        parts.append(_walk(rng, top + rng.normal(0, 300, 3), int(rng.uniform(150, 600)), seg, False))
    return np.concatenate(parts)


def thunder_stroke(rng, n: int, distance: float, onset: float) -> np.ndarray:
    """One stroke heard from `distance` metres, its first sound arriving `onset` seconds in."""
    pts = lightning_channel(rng, rng.uniform(2500, 5000), int(rng.integers(1, 6)))
    ang = rng.uniform(0, 2 * np.pi)
    listener = np.array([distance * np.cos(ang), distance * np.sin(ang), 1.5])
    r = np.linalg.norm(pts - listener, axis=1)
    t = r / SPEED_OF_SOUND
    t = t - t.min() + onset
    out = np.zeros(n)
    edges = np.linspace(r.min(), r.max() + 1, 7)          # distance bands, each with its own absorption
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (r >= lo) & (r < hi)
        buf = np.zeros(n)
        for ti, ri in zip(t[sel], r[sel]):
            k = int(ti * SR)
            if k >= n:
                continue
            length = int(SR * rng.uniform(0.002, 0.012))  # N-wave: a linear ramp from + to −
            wave = np.linspace(1, -1, length) * rng.uniform(0.5, 1.5) / ri
            buf[k:k + length] += wave[: n - k]
        cutoff = float(np.clip(2.5e6 / (0.5 * (lo + hi)), 60, 1500))  # farther: duller
        out += signal.lfilter(*_butter(2, cutoff), buf)
    return out


def thunder(rng, strokes: int = 1, distance: float = 3000.0) -> np.ndarray:
    n = CLIP_SAMPLES
    dry = np.zeros(n)
    onsets = np.sort(rng.uniform(0.2, 1.5 if strokes == 1 else 6.0, strokes))
    for onset in onsets:
        dry += thunder_stroke(rng, n, distance * rng.uniform(0.8, 1.25), float(onset)) * rng.uniform(0.6, 1.0)
    tau = rng.uniform(1.0, 2.5)                            # echoes of clouds and ground
    tail = int(SR * 4 * tau)
    ir = signal.lfilter(*_butter(2, 400), rng.normal(0, 1, tail) * np.exp(-np.arange(tail) / (tau * SR)))
    ir[0] += 3.0
    wet = signal.fftconvolve(dry, ir)[:n]
    return signal.lfilter(*_butter(1, 30, "high"), wet)


# ---- wind and fire -------------------------------------------------------------------------------

def fire(rng) -> np.ndarray:
    n = CLIP_SAMPLES
    roar = signal.lfilter(*_butter(2, [40, 300], "band"), rng.normal(0, 1, n)) * slow_control(rng, n, 1.0, 0.4, 1.0)
    hiss = signal.lfilter(*_butter(2, 2000, "high"), rng.normal(0, 1, n)) * 0.05 * slow_control(rng, n, 3.0, 0.3, 1.0)
    y = roar * rng.uniform(0.3, 0.8) + hiss
    rate = rng.uniform(8, 30)                              # crackles a second
    t = 0.0
    while True:
        t += rng.exponential(1 / rate)
        k = int(t * SR)
        if k >= n:
            break
        length = int(SR * rng.uniform(0.001, 0.008))
        burst = rng.normal(0, 1, length) * np.exp(-np.arange(length) / (length / 4))
        burst = signal.lfilter(*_butter(2, rng.uniform(800, 5000), "high"), burst)
        y[k:k + length] += burst[: n - k] * rng.lognormal(0, 0.8) * 0.6
        if rng.uniform() < 0.15:                           # a pop: a quick train of crackles
            for j in range(int(rng.integers(2, 6))):
                kk = k + int(SR * rng.uniform(0.005, 0.05)) * (j + 1)
                if kk + length < n:
                    y[kk:kk + length] += burst * rng.uniform(0.2, 0.6)
    return y


# ---- specs, captions, rendering ------------------------------------------------------------------

TIMES = {1: "", 2: " twice", 3: " three times"}


def _thunder_caption(rng, strokes: int, distance: float) -> str:
    if strokes > 1:
        return f"thunder rumbles{TIMES[strokes]}"
    opts = ["thunder", "thunder rumbling", "thunder rumbles"]
    if distance > 4500:
        opts.append("thunder rumbling in the distance")
    if distance < 2000:
        opts.append("a clap of thunder")
    return str(rng.choice(opts))


def nature_specs(seed: int, per_kind: int) -> list[NatureSpec]:
    """`per_kind` clips of each kind, deterministic in `seed`."""
    out = []
    for kind in KINDS:
        for i in range(per_kind):
            rng = np.random.default_rng([seed, KINDS.index(kind), i, 0x4E41])
            clip_seed = int(rng.integers(0, 2**31 - 1))
            if kind in ("thunder", "storm"):
                strokes = int(rng.choice([1, 1, 1, 2])) if kind == "thunder" else 1
                distance = float(rng.uniform(1000, 7000))
                params = (("strokes", strokes), ("distance", round(distance)))
                if kind == "thunder":
                    caption = _thunder_caption(rng, strokes, distance)
                else:
                    caption = str(rng.choice(["thunder rumbles while wind blows", "wind blowing as thunder rumbles",
                                              "thunder rumbling with wind in the background",
                                              "thunder rumbles over the sound of wind blowing"]))
            elif kind == "wind":
                whistle = bool(rng.uniform() < 0.3)
                params = (("whistle", whistle),)
                caption = str(rng.choice(["wind whistling", "wind howling"] if whistle else
                                         ["strong wind blowing", "a gusty wind", "the wind blowing hard"]))
            else:
                params = ()
                caption = str(rng.choice(["a fire crackling", "flames crackling and popping", "a campfire burning",
                                          "the crackle of a burning fire"]))
            out.append(NatureSpec(f"nature-{kind}-{seed}-{i:04d}", kind, clip_seed, caption, params))
    return out


def synthesise(spec: NatureSpec) -> np.ndarray:
    """The clip of one spec: CLIP_SAMPLES float32 samples at SR, peak 0.7 (0.5 for wind under thunder)."""
    rng = np.random.default_rng(spec.seed)
    p = dict(spec.params)
    if spec.kind == "thunder":
        return _normalise(thunder(rng, p["strokes"], p["distance"]), 0.8)
    if spec.kind == "wind":
        return _normalise(wind(rng, p["whistle"]), 0.7)
    if spec.kind == "fire":
        return _normalise(fire(rng), 0.7)
    if spec.kind == "storm":
        th = _normalise(thunder(rng, 1, p["distance"]), 1.0)
        wi = _normalise(wind(rng, False), 1.0) * rng.uniform(0.25, 0.5)
        return _normalise(th + wi, 0.8)
    raise ValueError(f"unknown procedural kind {spec.kind!r}")
