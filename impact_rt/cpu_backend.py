"""The fast CPU backend: the reference's encoder, VAE and vocoder, the native fused head sampler.

The head's T̂-step loop — the part that is launch-bound in eager PyTorch — runs in one native
call per decoding iteration (``native_sampler``; AMX or AVX-512 bf16 where the CPU has it). With
``precision="bf16"`` the encoder, VAE decoder and vocoder also run under bf16 autocast, over copies
made for it: the encoder's Linear weights stored in bf16 once (autocast would cast them on every
call; the results are bitwise the same) and the VAE decoder in channels-last layout (oneDNN's
convolutions otherwise reorder every activation; 2.6x faster here, same error against fp32 as
before). The decoding loop is the shared one (``decoding.decode``), so parity with the reference is
tested with injected noise like every other backend.
"""
from __future__ import annotations

import copy
import functools

import torch

from . import native_sampler
from .audio import in_chunks
from .patchify import tokens_to_latent
from .reference import TorchBackend

PRECISIONS = ("fp32", "bf16")


def available() -> tuple[bool, str]:
    ok, why = native_sampler.available()
    if not ok:
        return False, f"the native sampler library is not built ({why})"
    return True, (f"native fused head sampler ({', '.join(native_sampler.isas())}) + eager PyTorch; "
                  f"{default_precision()} by default here")


@functools.lru_cache(maxsize=None)
def cpuinfo(field: str) -> str:
    """The first value of a /proc/cpuinfo field ("model name", "vendor_id"), "" where it cannot be read.
    Read once per field and process (start-up asks for the vendor more than once)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """"GenuineIntel", "AuthenticAMD", ... or ""."""
    return cpuinfo("vendor_id")


def default_precision(isas: tuple[str, ...] | list[str] | None = None, vendor: str | None = None) -> str:
    """bf16 where it was measured faster than fp32 (docs/native.md, docs/benchmarks.md), fp32 elsewhere.

    * AMX (Intel Xeon): the AMX kernel is 5–7x the fp32 one.
    * AVX-512 BF16 on AMD (Zen 4): ``vdpbf16ps`` is 1.75x the fp32 kernel and the clip 1.6x faster
      (session 16). On the Intel Xeon of sessions 1–7 the same kernel was measured slower than
      fp32, so an Intel CPU without AMX (or whose OS does not enable it) stays fp32.
    """
    isas = native_sampler.isas() if isas is None else isas
    if "amx-bf16" in isas:
        return "bf16"
    if "avx512-bf16" in isas and (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD":
        return "bf16"
    return "fp32"


class CpuBackend(TorchBackend):
    name = "cpu"

    def __init__(self, model, vae, vocoder, precision: str = "fp32"):
        super().__init__(model, vae, vocoder)
        self.precision = precision
        self.sampler = native_sampler.NativeHeadSampler(model.head, dtype=precision)
        self.encoder = bf16_linears(model.encoder) if precision == "bf16" else model.encoder
        self.vae_decode = ChannelsLastDecode(vae) if vae is not None else None

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        with self._autocast():
            return self.encoder(tokens, cond, cond_mask, visible_idx, predicted_idx).float()

    @torch.inference_mode()
    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        return self.sampler.sample(h_cond, h_uncond, noise, guidance, temperature, self.schedule_tensors(schedule))

    def audio(self, tokens):
        return in_chunks(self._audio, tokens)

    @torch.inference_mode()
    def _audio(self, tokens):
        cfg = self.model.cfg
        latent = tokens_to_latent(tokens, cfg)
        with self._autocast():
            return self.vocoder(self.vae_decode(self.vae.unscale_latents(latent))).float()


def bf16_linears(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose Linear weights and biases are stored in bf16, for use under bf16
    autocast (which then has nothing to cast but the activations). Norms keep their fp32 parameters."""
    m = copy.deepcopy(module)
    for sub in m.modules():
        if isinstance(sub, torch.nn.Linear):
            sub.to(torch.bfloat16)
    return m.eval()


class ChannelsLastDecode(torch.nn.Module):
    """``vae.decode`` (raw latents [B, 8, T/4, F/4] → log-mel [B, T, F]) over copies of its two conv
    stages in channels-last memory layout; the VAE's encoder is not copied."""

    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = copy.deepcopy(vae.post_quant_conv)
        self.decoder = copy.deepcopy(vae.decoder)
        self.to(memory_format=torch.channels_last).eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.post_quant_conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        return self.decoder(self.post_quant_conv(z)).squeeze(1).contiguous()


def load_backend(model, vae, vocoder, *, bundle_path=None, device="cpu", precision=None):
    from .config import ConfigError
    if str(device) != "cpu":
        raise ConfigError(f"the cpu backend runs on the CPU, not {device}")
    precision = precision or default_precision()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not available for the cpu backend (use fp32 or bf16)")
    isas = native_sampler.isas()
    if precision == "bf16" and not any(i in isas for i in ("amx-bf16", "avx512-bf16")):
        import warnings   # allowed (the results are right), but emulated: measured 5x slower on an AVX2 EPYC
        warnings.warn("this CPU has no bf16 instructions (AMX or AVX-512 BF16): bf16 is emulated here and "
                      "much slower than fp32, the default", stacklevel=2)
    return CpuBackend(model, vae, vocoder, precision)
