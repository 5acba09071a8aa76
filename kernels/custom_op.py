"""``impact_rt::fused_sample``: the fused sampler as one opaque PyTorch custom op.

Registered with ``torch.library.custom_op`` plus a ``register_fake`` (shape [R, C] fp32), so that
CUDA-graph capture, ``torch.compile`` (fullgraph) and export see one op, not a Triton launch.
Works on torch ≥ 2.4 (tested on 2.13 CPU with the Triton interpreter; the GPU box has 2.11).
Deliberately no ``from __future__ import annotations``: the schema is inferred from annotations.
"""
from typing import Optional

import torch

from impact_rt.cuda_graphs import FusedConfig

OP_NAME = "impact_rt::fused_sample"


@torch.library.custom_op(OP_NAME, mutates_args=())
def fused_sample_op(
    w_in: torch.Tensor, b_in: torch.Tensor, ada_w: torch.Tensor, ada_b: torch.Tensor,
    ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
    w2: torch.Tensor, b2: torch.Tensor, wf: torch.Tensor, bf: torch.Tensor,
    c_cond: torch.Tensor, c_uncond: Optional[torch.Tensor], t_emb: torch.Tensor, coefs: torch.Tensor,
    noise: Optional[torch.Tensor], seeds: Optional[torch.Tensor],
    guidance: torch.Tensor, temperature: torch.Tensor,
    rows_per_seed: int, stream: int,
    block_rows: int, block_n: int, block_k: int, block_c: int, split: int, num_warps: int, num_stages: int,
    adaln_table: int = -1,
) -> torch.Tensor:
    from .fused_sampler import launch
    cfg = FusedConfig(block_rows, block_n, block_k, block_c, split, num_warps, num_stages)
    return launch((w_in, b_in, ada_w, ada_b, ln_w, ln_b, w1, b1, w2, b2, wf, bf), c_cond, c_uncond, t_emb, coefs,
                  noise, seeds, guidance, temperature, rows_per_seed=rows_per_seed, stream=stream, config=cfg,
                  adaln_table=None if adaln_table < 0 else bool(adaln_table))


@fused_sample_op.register_fake
def _fused_sample_fake(w_in, b_in, ada_w, ada_b, ln_w, ln_b, w1, b1, w2, b2, wf, bf, c_cond, c_uncond, t_emb,
                       coefs, noise, seeds, guidance, temperature, rows_per_seed, stream,
                       block_rows, block_n, block_k, block_c, split, num_warps, num_stages, adaln_table=-1):
    torch._check(c_cond.dim() == 2 and w_in.dim() == 2)
    return c_cond.new_empty((c_cond.shape[0], w_in.shape[0]), dtype=torch.float32)
