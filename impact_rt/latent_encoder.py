"""The MAE-style latent encoder (paper App. D.3; MAR's encoder/decoder pair).

Enc1 runs over concat(c, visible z) with masked positions *dropped*; Enc2 runs over all L+N
positions with a learned mask embedding re-inserted where latents are masked. Both take
learned position embeddings. The output h is Enc2's state at the latent positions plus a
diffusion position embedding, gathered at the positions to predict.

All indices are gathers/scatters with static shapes: ``visible_idx`` [B, V] and
``predicted_idx`` [B, K] are slices of the per-sample decoding order (see mask_schedule).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm layout, LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


def key_bias(cond_mask: torch.Tensor, latent_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias [B, 1, 1, L + latent_len]: padded condition positions are never attended."""
    b = cond_mask.shape[0]
    keep = torch.cat([cond_mask, cond_mask.new_ones(b, latent_len)], dim=1)
    zero = torch.zeros((), dtype=dtype, device=cond_mask.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=cond_mask.device)
    return torch.where(keep, zero, neg)[:, None, None, :]


class LatentEncoder(nn.Module):
    def __init__(self, token_dim: int, num_tokens: int, text_len: int, dim: int,
                 enc_depth: int, dec_depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_tokens, self.text_len, self.dim = num_tokens, text_len, dim
        seq = text_len + num_tokens
        # Enc1
        self.z_proj = nn.Linear(token_dim, dim)
        self.z_proj_ln = nn.LayerNorm(dim, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, seq, dim))
        self.encoder_blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(enc_depth))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        # Enc2
        self.decoder_embed = nn.Linear(dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, seq, dim))
        self.decoder_blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(dec_depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.initialize_weights()

    def initialize_weights(self):
        if self.mask_token.is_meta:    # built by bundle.load_module: the weights come from a file
            return                     # (and normal_ on meta tensors imports torch._dynamo, ~1 s)
        for p in (self.encoder_pos_embed_learned, self.decoder_pos_embed_learned,
                  self.diffusion_pos_embed_learned, self.mask_token):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))

    def enc1(self, tokens, cond, cond_mask, visible_idx):
        """Condition ⊕ visible latents only: sequence length L + V (masked latents are dropped)."""
        L = self.text_len
        pos = self.encoder_pos_embed_learned
        z = self.z_proj(tokens) + pos[:, L:]
        x = torch.cat([cond + pos[:, :L], self._gather(z, visible_idx)], dim=1)
        x = self.z_proj_ln(x)
        bias = key_bias(cond_mask, visible_idx.shape[1], x.dtype)
        for block in self.encoder_blocks:
            x = block(x, bias)
        return self.encoder_norm(x)

    def enc2(self, g, cond_mask, visible_idx, predicted_idx):
        """All L + N positions, the mask embedding re-inserted at masked latents; h at predicted positions."""
        L, N = self.text_len, self.num_tokens
        g = self.decoder_embed(g)
        b, d = g.shape[0], g.shape[-1]
        latents = self.mask_token.to(g.dtype).expand(b, N, d)
        latents = latents.scatter(1, visible_idx[..., None].expand(-1, -1, d), g[:, L:])
        x = torch.cat([g[:, :L], latents], dim=1) + self.decoder_pos_embed_learned
        bias = key_bias(cond_mask, N, x.dtype)
        for block in self.decoder_blocks:
            x = block(x, bias)
        x = self.decoder_norm(x)[:, L:] + self.diffusion_pos_embed_learned
        return self._gather(x, predicted_idx)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor,
                visible_idx: torch.Tensor, predicted_idx: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C], cond [B, L, D], cond_mask [B, L] bool, indices [B, V], [B, K] → h [B, K, D]."""
        return self.enc2(self.enc1(tokens, cond, cond_mask, visible_idx), cond_mask, visible_idx, predicted_idx)
