"""NumPy reference of the fused sampler's in-kernel noise stream (no Triton, no GPU).

The kernel draws noise with Triton's Philox-4x32-10 (``triton.language.random.philox``) and
Box–Muller (``pair_uniform_to_normal``), exactly as ``tl.randn`` does, but with its own counter
layout so that every sample's noise depends only on that sample's seed:

    key      = seed of the sample (64 bit: lo word, hi word)
    counter  = (c0, c1, c2, c3) = ((slot·K + q)·C + c,  stream,  0,  0)

with ``slot`` the noise slot (0 is x_T̂, j+1 the noise added after sampling position j, the layout
of the injected noise tensor [T̂, R, C]), ``q`` the row's index inside its sample (rows are
sample-major: row = b·K + q), ``c`` the channel, and ``stream`` the decoding iteration. The
normal value is the first output of Box–Muller on words 0 and 1 of the Philox output.

``philox_normal`` reproduces that stream on the host, to check the kernel's counter layout
and to document it; float results agree to float32 rounding of log/cos (about 1e-6).
"""
from __future__ import annotations

import numpy as np

PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
MASK32 = 0xFFFFFFFF


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox-4x32 on uint64 arrays holding 32-bit words (broadcasting). Returns 4 uint64 arrays."""
    c0, c1, c2, c3, k0, k1 = (np.asarray(v, dtype=np.uint64) & np.uint64(MASK32) for v in (c0, c1, c2, c3, k0, k1))
    c0, c1, c2, c3, k0, k1 = np.broadcast_arrays(c0, c1, c2, c3, k0, k1)
    a, b = np.uint64(PHILOX_ROUND_A), np.uint64(PHILOX_ROUND_B)
    m, s = np.uint64(MASK32), np.uint64(32)
    for _ in range(rounds):
        p0 = b * c2            # < 2^64: 32-bit × 32-bit
        p1 = a * c0
        n0 = (p0 >> s) ^ c1 ^ k0
        n2 = (p1 >> s) ^ c3 ^ k1
        c1, c3 = p0 & m, p1 & m
        c0, c2 = n0 & m, n2 & m
        k0 = (k0 + np.uint64(PHILOX_KEY_A)) & m
        k1 = (k1 + np.uint64(PHILOX_KEY_B)) & m
    return c0, c1, c2, c3


def uint_to_uniform(x) -> np.ndarray:
    """Triton's ``uint_to_uniform_float`` for 32-bit words: [0, 1) in float32."""
    i = np.asarray(x, dtype=np.uint64).astype(np.uint32).view(np.int32)
    i = np.where(i < 0, ~i, i)
    return i.astype(np.float32) * np.float32(4.6566127342e-10)


def box_muller(u1, u2) -> np.ndarray:
    """Triton's ``pair_uniform_to_normal`` (first output), in float32."""
    u1 = np.maximum(np.float32(1.0e-7), u1).astype(np.float32)
    th = np.float32(6.283185307179586) * u2.astype(np.float32)
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    return (r * np.cos(th)).astype(np.float32)


def philox_normal(seeds, rows_per_seed: int, slots: int, token_dim: int, stream: int) -> np.ndarray:
    """The noise tensor [slots, R, C] the kernel draws, with R = len(seeds)·rows_per_seed."""
    seeds = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    r = len(seeds) * rows_per_seed
    slot = np.arange(slots, dtype=np.uint64)[:, None, None]
    row = np.arange(r, dtype=np.uint64)[None, :, None]
    col = np.arange(token_dim, dtype=np.uint64)[None, None, :]
    sample = row // np.uint64(rows_per_seed)
    q = row - sample * np.uint64(rows_per_seed)
    c0 = (slot * np.uint64(rows_per_seed) + q) * np.uint64(token_dim) + col
    key = seeds[sample.astype(np.int64)]
    k0, k1 = key & np.uint64(MASK32), key >> np.uint64(32)
    o0, o1, _, _ = philox4x32(c0, np.uint64(stream), 0, 0, k0, k1)
    return box_muller(uint_to_uniform(o0), uint_to_uniform(o1))
