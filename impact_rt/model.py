"""The IMPACT generator: text projection + learned null condition, latent encoder, diffusion head.

``IMPACT.loss`` is the training objective (paper §3.1, Eq. 2): ε-MSE (+ the variance term) on
masked positions only, with the null condition for unconditional pre-training and for
caption dropout.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import ddpm
from .config import ConfigError, ModelConfig, ParamCounts
from .diffusion_head import DiffusionHead
from .latent_encoder import LatentEncoder


class IMPACT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.null_condition = nn.Parameter(torch.empty(1, cfg.text_len, cfg.dim))
        if not self.null_condition.is_meta:    # as LatentEncoder.initialize_weights
            nn.init.normal_(self.null_condition, std=0.02)     # = randn(...) * 0.02, bit for bit
        self.encoder = LatentEncoder(cfg.token_dim, cfg.num_tokens, cfg.text_len, cfg.dim,
                                     cfg.enc_depth, cfg.dec_depth, cfg.num_heads, cfg.mlp_ratio)
        self.head = DiffusionHead(cfg.token_dim, cfg.dim, cfg.head_width, cfg.head_depth)
        nn.init.xavier_uniform_(self.text_proj.weight)
        nn.init.zeros_(self.text_proj.bias)

    # -- conditioning -------------------------------------------------------------------------
    def project_condition(self, text_states: torch.Tensor, text_mask: torch.Tensor):
        """Conditioner output [B, L, D_text] (+ bool mask [B, L]) → c [B, L, D]."""
        cfg = self.cfg
        if text_states.dim() != 3 or text_states.shape[1:] != (cfg.text_len, cfg.text_dim):
            raise ConfigError(f"text condition must be [B, {cfg.text_len}, {cfg.text_dim}], "
                              f"got {tuple(text_states.shape)}")
        if text_mask.shape != text_states.shape[:2]:
            raise ConfigError(f"text mask {tuple(text_mask.shape)} does not match states {tuple(text_states.shape)}")
        return self.text_proj(text_states), text_mask.bool()

    def null(self, batch: int):
        """The learned null condition (CFG's unconditional branch; unconditional pre-training)."""
        c = self.null_condition.expand(batch, -1, -1)
        return c, torch.ones(batch, self.cfg.text_len, dtype=torch.bool, device=c.device)

    # -- training -----------------------------------------------------------------------------
    def loss(self, tokens: torch.Tensor, text_states: torch.Tensor | None, text_mask: torch.Tensor | None,
             *, mask_ratio: float = 0.7, drop: torch.Tensor | None = None, generator: torch.Generator | None = None,
             diffusion_batch_mul: int = 4, schedule: dict | None = None) -> torch.Tensor:
        """Mean training loss for tokens [B, N, C].

        ``text_states=None`` trains unconditionally (null condition for every sample). ``drop`` [B]
        bool replaces the condition of some samples with the null condition (caption dropout).
        ``round(mask_ratio·N)`` positions are masked in every sample (random per sample).
        """
        cfg = self.cfg
        b, n, c = tokens.shape
        dev = tokens.device
        null_c, null_m = self.null(b)
        if text_states is None:
            cond, cmask = null_c, null_m
        else:
            cond, cmask = self.project_condition(text_states, text_mask)
            if drop is not None:
                cond = torch.where(drop[:, None, None], null_c.to(cond.dtype), cond)
                cmask = torch.where(drop[:, None], null_m, cmask)
        num_masked = max(1, min(n, round(mask_ratio * n)))
        gdev = generator.device if generator is not None else dev   # the trainer's generator lives on the CPU
        order = torch.argsort(torch.rand(b, n, generator=generator, device=gdev).to(dev), dim=1)
        predicted_idx, visible_idx = order[:, :num_masked], order[:, num_masked:]
        h = self.encoder(tokens, cond, cmask, visible_idx, predicted_idx)          # [B, K, D]
        target = torch.gather(tokens, 1, predicted_idx[..., None].expand(-1, -1, c))
        h = h.reshape(-1, cfg.dim).repeat(diffusion_batch_mul, 1)
        x0 = target.reshape(-1, c).repeat(diffusion_batch_mul, 1)
        tab = schedule if schedule is not None else self.train_schedule(dev)
        t = torch.randint(0, cfg.train_steps, (x0.shape[0],), generator=generator, device=gdev).to(dev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
        x_t = ddpm.q_sample(tab, x0, t, noise)
        out = self.head(x_t, t, h)
        return ddpm.training_loss(tab, x0.float(), t, noise.float(), out.float()).mean()

    def train_schedule(self, device=None) -> dict:
        return ddpm.Schedule.cosine(self.cfg.train_steps).tensors(device=device)

    # -- bookkeeping --------------------------------------------------------------------------
    def param_counts(self) -> ParamCounts:
        enc = sum(p.numel() for p in self.encoder.parameters())
        head = sum(p.numel() for p in self.head.parameters())
        total = sum(p.numel() for p in self.parameters())
        return ParamCounts(latent_encoder=enc, diffusion_head=head, total=total,
                           extras={"text_projection_and_null": total - enc - head})


def randomize_(module: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Give every parameter non-trivial random values (for latency runs and parity tests).

    Trained-from-init weights zero the head's output; parity tests need weights where every
    path matters. Matrices get N(0, scale/fan_in); vectors N(0, 0.02·scale); norms 1 + noise.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (scale / fan_in) ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * scale * torch.randn(p.shape, generator=g))
    return module
