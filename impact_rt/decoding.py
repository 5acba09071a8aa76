"""The mask-based parallel decoding loop (paper §3.2), written once for every backend.

A backend supplies the compute steps (``encode`` and ``sample``); this module owns the
schedule, the decoding order, the noise and the bookkeeping. Every table is built before the
loop; inside it there is no ``nonzero``, no boolean indexing and no data-dependent shape.

Noise comes from a ``NoiseSource``: ``TorchNoise`` draws from one seeded ``torch.Generator``
per sample (so a sample's audio does not depend on what else is in the batch);
``RecordedNoise`` replays what another run drew, so that two backends can be compared step
for step with the same injected noise.

Re-masking refinement (``DecodeConfig.refine``; session 31, docs/training.md): after the T
iterations, each pass re-masks a share of the finished tokens in a fresh random order and decodes
them again with the tail of the same schedule (the iterations from the one where that share is
still masked, with their β), seeing the tokens it kept. A pass draws its order and head noise from
its own source (``NoiseSource.refine``: for seeds, seed + (p + 1)·REFINE_SEED_STRIDE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from . import ddpm
from .config import DecodeConfig, ModelConfig
from .mask_schedule import MaskPlan, guidance_schedule


REFINE_SEED_STRIDE = 1_000_003   # re-masking pass p of seed s draws from seed s + (p + 1)·stride


def refine_seeds(seeds, p: int) -> list[int]:
    """The seeds of re-masking pass ``p`` (0-based) of the samples of ``seeds`` (modulo 2**63, so
    that they stay int64 Philox keys for every seed the runtime accepts)."""
    return [(int(s) + (p + 1) * REFINE_SEED_STRIDE) % 2 ** 63 for s in seeds]


def pass_sources(noise: "NoiseSource", refine: int) -> list["NoiseSource"]:
    """The noise of the decode, then of each of its ``refine`` re-masking passes."""
    return [noise] + [noise.refine(p) for p in range(refine)]


class NoiseSource(Protocol):
    def order(self, batch: int, num_tokens: int) -> torch.Tensor: ...          # [B, N] long
    def head(self, t: int, batch: int, rows: int, steps: int, dim: int) -> torch.Tensor: ...  # [T̂, B·K, C]
    def refine(self, p: int) -> "NoiseSource": ...      # the order and head noise of re-masking pass p


class TorchNoise:
    """Noise from one torch.Generator per sample, drawn in a fixed order."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]

    def refine(self, p):
        return TorchNoise(refine_seeds(self.seeds, p), self.device)

    def order(self, batch, num_tokens):
        assert batch == len(self.generators)
        return torch.stack([torch.randperm(num_tokens, generator=g, device=self.device) for g in self.generators])

    def head(self, t, batch, rows, steps, dim):
        draws = [torch.randn(steps, rows, dim, generator=g, device=self.device) for g in self.generators]
        return torch.stack(draws, dim=1).reshape(steps, batch * rows, dim)


@dataclass
class RecordedNoise:
    """Replays noise recorded from another source; wraps one to record (``RecordedNoise.wrap``)."""

    orders: torch.Tensor | None = None
    heads: list[torch.Tensor] = field(default_factory=list)
    inner: NoiseSource | None = None
    refines: list["RecordedNoise"] = field(default_factory=list)

    @classmethod
    def wrap(cls, inner: NoiseSource) -> "RecordedNoise":
        return cls(inner=inner)

    def replay(self) -> "RecordedNoise":
        return RecordedNoise(orders=self.orders, heads=list(self.heads), refines=[r.replay() for r in self.refines])

    def refine(self, p):
        if self.inner is not None:
            self.refines.append(RecordedNoise.wrap(self.inner.refine(p)))
        return self.refines[p]

    def order(self, batch, num_tokens):
        if self.inner is not None:
            self.orders = self.inner.order(batch, num_tokens)
        return self.orders

    def head(self, t, batch, rows, steps, dim):
        if self.inner is not None:
            self.heads.append(self.inner.head(t, batch, rows, steps, dim))
        return self.heads[t]


class Backend(Protocol):
    """The compute steps of one generation (see reference.TorchBackend, the golden one)."""

    name: str
    def project(self, states, mask) -> tuple[torch.Tensor, torch.Tensor]: ...
    def null(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def audio(self, tokens) -> torch.Tensor: ...
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx) -> torch.Tensor: ...
    def sample(self, h_cond, h_uncond, noise, guidance: float, temperature: float,
               schedule: ddpm.Schedule) -> torch.Tensor: ...


@dataclass(frozen=True)
class DecodeTables:
    """Everything the loop needs, computed once per (N, T, T̂, β_max)."""

    plan: MaskPlan
    guidance: tuple[float, ...]
    schedule: ddpm.Schedule

    @classmethod
    def build(cls, model_cfg: ModelConfig, dc: DecodeConfig) -> "DecodeTables":
        dc.validate(model_cfg.num_tokens, model_cfg.train_steps)
        return cls(MaskPlan.build(model_cfg.num_tokens, dc.iterations),
                   tuple(guidance_schedule(dc.iterations, dc.guidance)),
                   ddpm.sampling_schedule(model_cfg.train_steps, dc.diffusion_steps))


def decode(backend: Backend, model_cfg: ModelConfig, dc: DecodeConfig, cond: torch.Tensor,
           cond_mask: torch.Tensor, null_cond: torch.Tensor, null_mask: torch.Tensor, noise: NoiseSource,
           tables: DecodeTables | None = None,
           on_iteration: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Generate latent tokens [B, N, C] for projected conditions ``cond`` [B, L, D]."""
    tables = tables or DecodeTables.build(model_cfg, dc)
    plan = tables.plan
    b, n, c, steps = cond.shape[0], model_cfg.num_tokens, model_cfg.token_dim, dc.diffusion_steps
    use_cfg = dc.guidance != 1.0
    if use_cfg:  # cond rows then uncond rows, through one encoder batch
        cond, cond_mask = torch.cat([cond, null_cond]), torch.cat([cond_mask, null_mask])
    tokens = torch.zeros(b, n, c, dtype=torch.float32, device=cond.device)
    start = plan.refine_start(dc.refine_share)      # where each re-masking pass enters the schedule
    total, done = plan.iterations + dc.refine * (plan.iterations - start), 0
    for p, src in enumerate(pass_sources(noise, dc.refine)):
        order = src.order(b, n).to(cond.device)
        for t in range(start if p else 0, plan.iterations):
            visible, predicted = order[:, plan.visible_slice(t)], order[:, plan.predicted_slice(t)]
            k = predicted.shape[1]
            if use_cfg:
                h = backend.encode(torch.cat([tokens, tokens]), cond, cond_mask,
                                   torch.cat([visible, visible]), torch.cat([predicted, predicted]))
                h_cond, h_uncond = h[:b].reshape(b * k, -1), h[b:].reshape(b * k, -1)
            else:
                h_cond, h_uncond = backend.encode(tokens, cond, cond_mask, visible, predicted).reshape(b * k, -1), None
            eps_noise = src.head(t, b, k, steps, c).to(cond.device)
            z = backend.sample(h_cond, h_uncond, eps_noise, tables.guidance[t], dc.temperature, tables.schedule)
            tokens = tokens.scatter(1, predicted[..., None].expand(-1, -1, c), z.reshape(b, k, c).float())
            if on_iteration is not None:
                on_iteration(done, total)
            done += 1
    return tokens
