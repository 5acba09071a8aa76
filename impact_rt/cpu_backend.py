"""The fast CPU backend: the reference's encoder, VAE and vocoder, the native fused head sampler.

The head's T̂-step loop — the part that is launch-bound in eager PyTorch — runs in one native
call per decoding iteration (``native_sampler``; AMX or AVX-512 bf16 where the CPU has it). With
``precision="bf16"`` the encoder, VAE decoder and vocoder also run under bf16 autocast. The
decoding loop is the shared one (``decoding.decode``), so parity with the reference is tested
with injected noise like every other backend.
"""
from __future__ import annotations

import torch

from . import native_sampler
from .reference import TorchBackend

PRECISIONS = ("fp32", "bf16")


def available() -> tuple[bool, str]:
    ok, why = native_sampler.available()
    if not ok:
        return False, f"the native sampler library is not built ({why})"
    return True, f"native fused head sampler ({', '.join(native_sampler.isas())}) + eager PyTorch"


def default_precision() -> str:
    """bf16 where the CPU multiplies bf16 natively (AMX), fp32 elsewhere: the benchmark's verdict."""
    return "bf16" if "amx-bf16" in native_sampler.isas() else "fp32"


class CpuBackend(TorchBackend):
    name = "cpu"

    def __init__(self, model, vae, vocoder, precision: str = "fp32"):
        super().__init__(model, vae, vocoder)
        self.precision = precision
        self.sampler = native_sampler.NativeHeadSampler(model.head, dtype=precision)

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        with self._autocast():
            return self.model.encoder(tokens, cond, cond_mask, visible_idx, predicted_idx).float()

    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        return self.sampler.sample(h_cond, h_uncond, noise, guidance, temperature, self.schedule_tensors(schedule))

    @torch.inference_mode()
    def audio(self, tokens):
        with self._autocast():
            return super().audio(tokens).float()


def load_backend(model, vae, vocoder, *, bundle_path=None, device="cpu", precision=None):
    from .config import ConfigError
    if str(device) != "cpu":
        raise ConfigError(f"the cpu backend runs on the CPU, not {device}")
    precision = precision or default_precision()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not available for the cpu backend (use fp32 or bf16)")
    return CpuBackend(model, vae, vocoder, precision)
