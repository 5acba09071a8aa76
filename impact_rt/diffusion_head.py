"""The diffusion head: MAR's ``SimpleMLPAdaLN`` (paper App. D.4).

x [R, 128] (noisy latent token), t [R] (original DDPM step), c [R, D] (encoder output h_i)
→ [R, 256] = (ε̂, v) with v the learned-range variance value.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

FREQ_DIM = 256


def timestep_sinusoid(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """[cos | sin] sinusoidal embedding of (possibly fractional) timesteps, as MAR/DiT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_sinusoid(t).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """LayerNorm → adaLN modulate → Linear → SiLU → Linear, gated residual."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, self.adaLN_modulation(y))

    def modulated(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The block for its precomputed modulation ``mod`` = adaLN_modulation(y) [.., 3w]."""
        shift, scale, gate = mod.chunk(3, dim=-1)
        h = self.mlp(modulate(self.in_ln(x), shift, scale))
        return x + gate * h


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, self.adaLN_modulation(y))

    def modulated(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = mod.chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiffusionHead(nn.Module):
    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.token_dim = token_dim
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, 2 * token_dim)
        self.initialize_weights()

    def initialize_weights(self):
        """MAR's initialisation: xavier linears, zeroed adaLN and output (the head starts at ε̂ = 0)."""
        if self.final_layer.linear.weight.is_meta:     # as LatentEncoder.initialize_weights
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.step(x, self.time_embed(t) + self.cond_embed(c))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The head body for a precomputed y = time_embed(t) + cond_embed(c)."""
        h = self.input_proj(x)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)

    def modulations(self, y: torch.Tensor) -> torch.Tensor:
        """Every adaLN modulation for y [.., w] → [.., (3·depth + 2)·w]: each block's
        (shift | scale | gate), then the final layer's (shift | scale). They depend on the step and
        the condition, never on x, so a sampler may compute all T̂ steps' at once."""
        return torch.cat([b.adaLN_modulation(y) for b in self.res_blocks]
                         + [self.final_layer.adaLN_modulation(y)], dim=-1)

    def step_modulated(self, x: torch.Tensor, mods: torch.Tensor) -> torch.Tensor:
        """``step`` for precomputed ``modulations(y)`` (same block math, ``modulated``)."""
        w = self.input_proj.out_features
        h = self.input_proj(x)
        for k, block in enumerate(self.res_blocks):
            h = block.modulated(h, mods[..., 3 * w * k:3 * w * (k + 1)])
        return self.final_layer.modulated(h, mods[..., 3 * w * len(self.res_blocks):])
