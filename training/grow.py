"""Grow a trained generator without changing what it computes: a wider diffusion head
(Net2WiderNet) or a deeper latent encoder (identity blocks).

    python -m training.train_impact ... --init impact_rt/models/default --head-width 512 --grow head
    python -m training.train_impact ... --init impact_rt/models/default --enc-depth 6 --dec-depth 6 --grow encoder

Deeper (``deepen_encoder_state``): Enc1's and Enc2's pre-norm blocks are x + attn(LN(x)) + mlp(LN(x)).
A new block is a copy of the block it follows with its two output projections (``attn.proj``,
``mlp.fc2``) set to zero: it adds nothing, so the encoder is the same function, and those zero
projections get gradients at once (their inputs are the copy's attention and MLP features), after
which the rest of the new block trains too. New blocks are spread evenly between the old ones.

The head's width w runs through its residual stream x, its condition y = time_embed + cond_embed,
the hidden layer of every MLP and every adaLN modulation (DESIGN.md §3, MAR's SimpleMLPAdaLN).
Widening by k repeats every such unit k times: a layer that *produces* width-w features repeats
its output rows (chunk by chunk for the (shift | scale | gate) modulations), and a layer that
*consumes* them splits its input columns into k parts that sum to the old column. LayerNorm over
[x, x, ...] has the mean and variance of x, so every block, and the head's output, are the same
function of its inputs as before. The k parts of a consumed column differ by a zero-sum random
perturbation (``noise`` times the column's scale), so that the copies receive different gradients
and grow apart in training, while the output stays exactly the narrow head's.
"""
from __future__ import annotations

import re

import torch

# name (under "head.") → (output chunks of width w or 0, input of width w?)
#   out_chunks: the weight's rows are `out_chunks` blocks of w, each repeated; 0: rows not of width w
#   consumes: the weight's columns are width-w features (split among the copies)
_RULES = {
    "time_embed.mlp.0": (1, False),
    "time_embed.mlp.2": (1, True),
    "cond_embed": (1, False),
    "input_proj": (1, False),
    "final_layer.linear": (0, True),
    "final_layer.adaLN_modulation.1": (2, True),
}
_BLOCK_RULES = {"in_ln": (1, False), "mlp.0": (1, True), "mlp.2": (1, True), "adaLN_modulation.1": (3, True)}


def _rule(name: str) -> tuple[int, bool]:
    if name in _RULES:
        return _RULES[name]
    parts = name.split(".")
    if parts[0] == "res_blocks" and len(parts) > 2:
        sub = ".".join(parts[2:])
        if sub in _BLOCK_RULES:
            return _BLOCK_RULES[sub]
    raise ValueError(f"grow: no widening rule for head.{name}")


def _repeat_rows(t: torch.Tensor, chunks: int, k: int) -> torch.Tensor:
    if chunks == 0:
        return t
    parts = t.chunk(chunks, dim=0)
    return torch.cat([p.repeat((k,) + (1,) * (p.dim() - 1)) for p in parts], dim=0)


def _split_columns(w: torch.Tensor, k: int, noise: float, gen: torch.Generator | None) -> torch.Tensor:
    """[out, w] → [out, k·w]: k parts per column that sum to it, with a zero-sum perturbation."""
    parts = [w / k for _ in range(k)]
    if noise and k > 1:
        scale = w.abs().mean() * noise
        d = torch.randn((k,) + tuple(w.shape), generator=gen, dtype=torch.float32).to(w.dtype) * scale
        d = d - d.mean(dim=0, keepdim=True)           # the parts still sum to w
        parts = [p + d[i] for i, p in enumerate(parts)]
    return torch.cat(parts, dim=1)


def widen_head_state(state: dict[str, torch.Tensor], width: int, new_width: int, *, noise: float = 0.01,
                     seed: int = 0, prefix: str = "head.") -> dict[str, torch.Tensor]:
    """The generator state with its diffusion head (tensors under ``prefix``) widened from ``width``
    to ``new_width`` (a multiple of it). Other tensors are returned as they are."""
    if new_width % width or new_width < width:
        raise ValueError(f"grow: the head width {new_width} is not a multiple of {width}")
    k = new_width // width
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if not name.startswith(prefix):
            out[name] = t
            continue
        module, kind = name[len(prefix):].rsplit(".", 1)
        chunks, consumes = _rule(module)
        t = t.float()
        if kind == "weight" and t.dim() == 2:             # a Linear: [out, in]
            if chunks and t.shape[0] != chunks * width:
                raise ValueError(f"grow: {name} has {t.shape[0]} rows, not {chunks}×{width}")
            if consumes:
                if t.shape[1] != width:
                    raise ValueError(f"grow: {name} has {t.shape[1]} columns, not {width}")
                t = _split_columns(t, k, noise, gen)
        # a Linear's rows, its bias and LayerNorm's affine are per output unit: repeated alike
        out[name] = _repeat_rows(t, chunks, k).to(state[name].dtype)
    return out


_ZEROED = ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")
_STACKS = ("encoder.encoder_blocks", "encoder.decoder_blocks")


def block_depth(state: dict[str, torch.Tensor], stack: str) -> int:
    """The number of blocks of ``stack`` (e.g. "encoder.encoder_blocks") in a generator state."""
    pat = re.compile(re.escape(stack) + r"\.(\d+)\.")
    found = {int(m.group(1)) for name in state if (m := pat.match(name))}
    return max(found) + 1 if found else 0


def encoder_depths(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(Enc1 blocks, Enc2 blocks) of a generator state."""
    return block_depth(state, _STACKS[0]), block_depth(state, _STACKS[1])


def is_encoder_block(name: str) -> bool:
    """Whether a generator tensor belongs to one of Enc1's or Enc2's blocks."""
    return any(name.startswith(s + ".") for s in _STACKS)


def deepen_layout(old: int, new: int) -> list[int | None]:
    """Where each block of the deeper stack comes from: the old block's index, or None for a new
    (identity) block, which follows the old block before it. New blocks are spread evenly."""
    if new < old:
        raise ValueError(f"grow: {new} blocks are fewer than the {old} trained ones")
    if old < 1:
        raise ValueError("grow: a stack without blocks cannot be deepened")
    extra, out = new - old, []
    for i in range(old):
        out.append(i)
        out += [None] * ((i + 1) * extra // old - i * extra // old)
    return out


def deepen_encoder_state(state: dict[str, torch.Tensor], enc_depth: int, dec_depth: int) -> dict[str, torch.Tensor]:
    """The generator state with Enc1 deepened to ``enc_depth`` blocks and Enc2 to ``dec_depth``,
    computing the same function (see the module docstring). Other tensors are returned as they are."""
    out = {k: v for k, v in state.items() if not is_encoder_block(k)}
    for stack, new in zip(_STACKS, (enc_depth, dec_depth)):
        old = block_depth(state, stack)
        layout = deepen_layout(old, new)
        src = None
        for j, i in enumerate(layout):
            fresh = i is None
            src = src if fresh else i
            prefix = f"{stack}.{src}."
            for name, t in state.items():
                if name.startswith(prefix):
                    sub = name[len(prefix):]
                    out[f"{stack}.{j}.{sub}"] = torch.zeros_like(t) if fresh and sub in _ZEROED else t
    return out
