"""A PNG picture of a clip's log-mel spectrogram (time → right, frequency ↑), no plotting library."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from .fileio import atomic_write_bytes

# A few anchors of a perceptually ordered dark-to-bright colour map (viridis-like), interpolated.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def colorize(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB."""
    pos = np.clip(x, 0, 1) * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    return (_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).round().astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def spectrogram_png(wav: np.ndarray, path: str, height_scale: int = 4, dynamic_range_db: float = 80.0) -> None:
    """Write the log-mel spectrogram of a 16 kHz waveform as a PNG (atomically)."""
    import torch

    from .audio import MelSpectrogram
    mel = MelSpectrogram(n_frames=None)(torch.as_tensor(np.asarray(wav, dtype=np.float32))[None])[0].numpy()
    db = mel * (20.0 / np.log(10.0))                      # natural-log magnitude → dB
    img = (db - (db.max() - dynamic_range_db)) / dynamic_range_db
    img = np.repeat(img.T[::-1], height_scale, axis=0)    # [mels, frames], low frequencies at the bottom
    data = encode_png(colorize(img))
    atomic_write_bytes(path, data)
