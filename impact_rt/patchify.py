"""Patchify / unpatchify between the VAE latent [B, C, H, W] and tokens [B, N, C·p·p].

With the AudioLDM geometry (C=8, H=256 time, W=16 freq) and p=4 the grid is 64 × 4, so
N = 256 tokens of 128 dims. Token order is row-major over the (time, freq) grid; inside a
token the layout is (channel, dy, dx). ``unpatchify`` is the exact inverse.
"""
from __future__ import annotations

import torch

from .config import ConfigError, ModelConfig


def patchify(latent: torch.Tensor, p: int) -> torch.Tensor:
    if latent.dim() != 4:
        raise ConfigError(f"patchify expects a latent [B, C, H, W], got shape {tuple(latent.shape)}")
    b, c, h, w = latent.shape
    if h % p or w % p:
        raise ConfigError(f"latent {h}x{w} is not divisible by patch {p}")
    x = latent.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # b, h', w', c, p, p
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, h: int, w: int) -> torch.Tensor:
    b, n, d = tokens.shape
    if n != (h // p) * (w // p) or d != channels * p * p:
        raise ConfigError(f"tokens {tuple(tokens.shape)} do not match a latent [{channels}, {h}, {w}] with patch {p}")
    x = tokens.reshape(b, h // p, w // p, channels, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)  # b, c, h', p, w', p
    return x.reshape(b, channels, h, w)


def tokens_to_latent(tokens: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The generator's tokens [B, N, C·p·p] as the VAE latent [B, C, H, W] of ``cfg``'s geometry."""
    return unpatchify(tokens, cfg.patch, cfg.latent_channels, cfg.latent_time, cfg.latent_freq)
