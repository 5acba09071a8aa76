"""Precomputed training data for the generator: scaled VAE latents and text-encoder states.

One safetensors file (+ a JSON sidecar):

    latents      fp16 [M, 8, 256, 16]   scaled VAE latents, several augmented variants per clip
    clip         int64 [M]              manifest row of each latent
    caption_id   int64 [M]              row of text_states, −1 where the clip has no caption
    split        int8 [M]               0 train, 1 val, 2 test
    text_states  fp16 [C, L, D_text]    conditioner output per distinct caption
    text_mask    uint8 [C, L]
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class LatentStore:
    latents: torch.Tensor
    clip: torch.Tensor
    caption_id: torch.Tensor
    split: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    meta: dict = field(default_factory=dict)
    path: str = ""

    @property
    def text_dim(self) -> int:
        return int(self.text_states.shape[-1]) if self.text_states.numel() else 0

    def rows(self, phase: str, split: str = "train") -> torch.Tensor:
        """Row indices for a phase: every clip for ``uncond``, captioned clips for ``text``."""
        keep = self.split == SPLITS[split]
        if phase == "text":
            keep &= self.caption_id >= 0
        return keep.nonzero().flatten()

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tensors = {"latents": self.latents.half().contiguous(), "clip": self.clip, "caption_id": self.caption_id,
                   "split": self.split.to(torch.int8), "text_states": self.text_states.half().contiguous(),
                   "text_mask": self.text_mask.to(torch.uint8)}
        tmp = p.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(p)
        p.with_suffix(".json").write_text(json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "LatentStore":
        p = Path(path)
        t = load_file(str(p))
        meta_p = p.with_suffix(".json")
        meta = json.loads(meta_p.read_text()) if meta_p.is_file() else {}
        return cls(t["latents"], t["clip"], t["caption_id"], t["split"].long(), t["text_states"],
                   t["text_mask"].bool(), meta, str(p))
