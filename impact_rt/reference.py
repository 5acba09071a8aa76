"""The eager PyTorch backend: the golden reference every fast path is compared with.

A backend supplies the compute steps of one generation (see ``decoding.Backend``):
``project`` (text states → condition), ``null``, ``encode`` (latent encoder for one decoding
iteration), ``sample`` (the T̂-step head sampler for the rows of one iteration) and ``audio``
(tokens → waveform through unpatchify, VAE decoder and vocoder).
"""
from __future__ import annotations

import torch

from . import ddpm
from .model import IMPACT
from .patchify import tokens_to_latent
from .sampler import sample_head


class TorchBackend:
    name = "torch"

    def __init__(self, model: IMPACT, vae=None, vocoder=None):
        self.model, self.vae, self.vocoder = model, vae, vocoder
        self._tables: dict[int, dict] = {}

    def schedule_tensors(self, schedule: ddpm.Schedule) -> dict:
        key = schedule.key
        if key not in self._tables:
            self._tables[key] = schedule.tensors(device=next(self.model.parameters()).device)
        return self._tables[key]

    @torch.inference_mode()
    def project(self, states, mask):
        return self.model.project_condition(states, mask)

    @torch.inference_mode()
    def null(self, batch: int):
        return self.model.null(batch)

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        return self.model.encoder(tokens, cond, cond_mask, visible_idx, predicted_idx)

    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        tab = self.schedule_tensors(schedule)
        return sample_head(self.model.head, tab, h_cond, h_uncond, noise, guidance, temperature)

    @torch.inference_mode()
    def audio(self, tokens):
        cfg = self.model.cfg
        latent = tokens_to_latent(tokens, cfg)
        return self.vocoder(self.vae.decode_latents(latent))

    def close(self):
        self._tables.clear()


def load_backend(model: IMPACT, vae, vocoder, *, bundle_path=None, device="cpu", precision=None):
    if precision not in (None, "fp32"):    # the golden reference runs in fp32 only
        from .config import ConfigError
        raise ConfigError(f"precision {precision!r} is not available for the torch backend (use fp32)")
    return TorchBackend(model, vae, vocoder)


def available() -> tuple[bool, str]:
    return True, f"eager PyTorch {torch.__version__} (reference)"
