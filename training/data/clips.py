"""Turn planned clips (ClipSpec) into 10.24 s, 16 kHz mono files."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .audio import CLIP_SAMPLES, SR, fade, is_silent, load_mono, loop_to, peak_normalize, place, rms, \
    trim, write_clip
from .plan import ClipSpec
from .sources import Item

BED_RMS = 0.05
EVENT_PEAK = 0.5
OUT_PEAK = 0.5


class AudioCache:
    """Decoded 16 kHz sources, least recently used dropped beyond `max_samples`."""

    def __init__(self, items: dict[str, Item], max_samples: int = 200_000_000):
        self.items, self.max, self.size = items, max_samples, 0
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        x = load_mono(self.items[key].path)
        self.data[key] = x
        self.size += x.size
        while self.size > self.max and len(self.data) > 1:
            _, old = self.data.popitem(last=False)
            self.size -= old.size
        return x


def render_clip(spec: ClipSpec, cache: AudioCache) -> np.ndarray | None:
    """The clip's samples (peak 0.5), or None when it is (near-)silent."""
    buf = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    for layer in spec.layers:
        x = cache.get(layer.key)
        gain = 10 ** (layer.gain_db / 20)
        if layer.mode == "crop":
            a = int(round(layer.start * SR))
            seg = x[a: a + CLIP_SAMPLES]
        elif layer.mode == "loop":
            src = trim(x)
            if src.size < SR // 10:
                continue
            seg = loop_to(src, CLIP_SAMPLES, int(round(layer.start * SR)) % src.size)
        else:
            seg = trim(x)
            seg = fade(seg, min(80, seg.size // 4), min(400, seg.size // 4))
        if seg.size == 0:
            continue
        if layer.role == "bed":
            r = rms(seg)
            if r > 0:
                seg = seg * (BED_RMS / r)
        elif layer.role == "event":
            seg = peak_normalize(seg, EVENT_PEAK)
        place(buf, seg, int(round(layer.at * SR)), gain)
    if is_silent(buf):
        return None
    return peak_normalize(buf, OUT_PEAK)


def render_all(specs: list[ClipSpec], items: dict[str, Item], out: Path, fmt: str = "flac",
               rejected_path: Path | None = None, progress_every: int = 500) -> tuple[list[ClipSpec], int]:
    """Write every clip not already on disk. Returns (clips present, number rejected as silent)."""
    from .sources import log
    rejected = set()
    if rejected_path and rejected_path.exists():
        rejected = set(rejected_path.read_text().split())
    cache = AudioCache(items)
    present, n_rej, done = [], 0, 0
    # clips that read the same long source are rendered together so the cache keeps it
    todo = sorted(specs, key=lambda s: (s.layers[0].key, s.id))
    rej_f = open(rejected_path, "a") if rejected_path else None
    try:
        for k, spec in enumerate(todo):
            path = out / clip_relpath(spec, fmt)
            if path.exists():
                present.append(spec)
                continue
            if spec.id in rejected:
                n_rej += 1
                continue
            x = render_clip(spec, cache)
            if x is None:
                n_rej += 1
                if rej_f:
                    rej_f.write(spec.id + "\n")
                    rej_f.flush()
                continue
            write_clip(path, x)
            present.append(spec)
            done += 1
            if done % progress_every == 0:
                log(f"[clips] {k + 1}/{len(todo)} planned clips visited, {done} written this run")
    finally:
        if rej_f:
            rej_f.close()
    return present, n_rej


def remove_stale(specs: list[ClipSpec], out: Path) -> int:
    """Delete clip files that the current plan no longer names (left by an older plan)."""
    keep = {s.id for s in specs}
    n = 0
    for f in (out / "clips").glob("*/*"):
        stem = f.name.split(".", 1)[0]
        if stem not in keep or ".part" in f.name:
            f.unlink()
            n += 1
    return n


def clip_relpath(spec: ClipSpec, fmt: str = "flac") -> str:
    return f"clips/{spec.split}/{spec.id}.{fmt}"
