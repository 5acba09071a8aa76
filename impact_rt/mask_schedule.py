"""Mask schedule, random decoding order and guidance schedule (paper §3.2, App. D; MAR).

For fixed (N, T) everything here is known before the decoding loop starts: the number of
positions still masked after each iteration, hence the number decoded at each iteration, and
β(t). With a per-sample random order fixed at the start, the positions decoded at iteration t
are a *slice* of that order, so every gather/scatter index has a static shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ConfigError


def masked_after(num_tokens: int, iterations: int) -> list[int]:
    """m[t] = number of positions still masked *before* iteration t, for t = 0..T.

    m[0] = N; after iteration t, ⌊N·cos(π/2·(t+1)/T)⌋ stay masked, clamped to at least 1 and at
    most m[t] - 1 so that masks shrink strictly; the last iteration fills all (m[T] = 0).
    """
    if not 1 <= iterations <= num_tokens:
        raise ConfigError(f"iterations must be in 1..{num_tokens}, got {iterations}")
    m = [num_tokens]
    for t in range(iterations):
        if t == iterations - 1:
            m.append(0)
            continue
        keep = math.floor(num_tokens * math.cos(math.pi / 2 * (t + 1) / iterations))
        keep = max(1, min(m[-1] - 1, keep))
        m.append(keep)
    return m


def decoded_per_iteration(num_tokens: int, iterations: int) -> list[int]:
    m = masked_after(num_tokens, iterations)
    return [m[t] - m[t + 1] for t in range(iterations)]


def guidance_schedule(iterations: int, guidance_max: float) -> list[float]:
    """β(t) = 1 + cos(π/2·t/T)·(β_max − 1): falls from β_max at t = 0 towards 1."""
    return [1.0 + math.cos(math.pi / 2 * t / iterations) * (guidance_max - 1.0) for t in range(iterations)]


def random_orders(batch: int, num_tokens: int, generators: list[torch.Generator]) -> torch.Tensor:
    """One random permutation of the N positions per sample, each from that sample's generator."""
    if len(generators) != batch:
        raise ConfigError(f"need one generator per sample: {len(generators)} for batch {batch}")
    return torch.stack([torch.randperm(num_tokens, generator=g) for g in generators])


@dataclass(frozen=True)
class MaskPlan:
    """Static per-iteration bookkeeping for one (N, T).

    With ``order`` [B, N] (position ids in decoding priority), the positions still masked before
    iteration t are ``order[:, :masked[t]]``; the visible ones ``order[:, masked[t]:]``; the ones
    decoded at iteration t ``order[:, masked[t+1]:masked[t]]``.
    """

    num_tokens: int
    iterations: int
    masked: tuple[int, ...]

    @classmethod
    def build(cls, num_tokens: int, iterations: int) -> "MaskPlan":
        return cls(num_tokens, iterations, tuple(masked_after(num_tokens, iterations)))

    def visible_slice(self, t: int) -> slice:
        return slice(self.masked[t], self.num_tokens)

    def predicted_slice(self, t: int) -> slice:
        return slice(self.masked[t + 1], self.masked[t])

    def refine_start(self, share: float) -> int:
        """The iteration a re-masking pass starts from: the first at which at most ``share`` of the
        tokens are still masked (0 for share 1; the last iteration at the least)."""
        return min(next(t for t in range(self.iterations + 1) if self.masked[t] <= share * self.num_tokens),
                   self.iterations - 1)

    def counts(self, t: int) -> tuple[int, int]:
        """(visible, predicted) counts at iteration t."""
        return self.num_tokens - self.masked[t], self.masked[t] - self.masked[t + 1]
