"""The eager PyTorch backend: the golden reference every fast path is compared with."""
from __future__ import annotations

import torch

from . import ddpm
from .model import IMPACT
from .sampler import sample_head


class TorchBackend:
    name = "torch"

    def __init__(self, model: IMPACT):
        self.model = model
        self._tables: dict[int, dict] = {}

    def schedule_tensors(self, schedule: ddpm.Schedule) -> dict:
        key = schedule.num_steps
        if key not in self._tables:
            self._tables[key] = schedule.tensors(device=next(self.model.parameters()).device)
        return self._tables[key]

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        return self.model.encoder(tokens, cond, cond_mask, visible_idx, predicted_idx)

    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        tab = self.schedule_tensors(schedule)
        return sample_head(self.model.head, tab, h_cond, h_uncond, noise, guidance, temperature)
