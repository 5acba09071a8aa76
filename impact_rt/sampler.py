"""The reference sampling loop of the diffusion head: T̂ DDPM steps for the rows of one iteration.

Cond and uncond rows run together as one batch; CFG guides ε only, the variance value is the
conditional row's (MAR's ``forward_with_cfg``). This is the golden reference that the fused
kernels (Triton, native, ONNX) are checked against.
"""
from __future__ import annotations

import torch

from . import ddpm
from .diffusion_head import DiffusionHead


def sample_head(head: DiffusionHead, tab: dict, h_cond: torch.Tensor, h_uncond: torch.Tensor | None,
                noise: torch.Tensor, guidance: float, temperature: float) -> torch.Tensor:
    """h_cond/h_uncond [R, D]; noise [T̂, R, C]: noise[0] is x_{T̂}, noise[j] the noise added
    at sampling index T̂−j (j = 1..T̂−1). Returns x_0 [R, C]."""
    steps = tab["timestep_map"].shape[0]
    c = head.token_dim
    r = h_cond.shape[0]
    # Tables before the loop: the timestep embedding of every step, the condition embedding once.
    t_emb = head.time_embed(tab["timestep_map"])                                  # [T̂, w]
    c_emb = head.cond_embed(h_cond if h_uncond is None else torch.cat([h_cond, h_uncond]))
    x = noise[0]
    for j, i in enumerate(reversed(range(steps))):
        xx = x if h_uncond is None else torch.cat([x, x])
        out = head.step(xx, c_emb + t_emb[i])
        eps, v = out[:r, :c], out[:r, c:]
        if h_uncond is not None:
            eps = out[r:, :c] + guidance * (eps - out[r:, :c])
        x = ddpm.p_sample_step(tab, x, i, eps, v, noise[j + 1] if i > 0 else None, temperature)
    return x
