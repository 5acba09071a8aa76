"""Vocoders: log-mel [B, T, 64] -> waveform [B, T * 160] at 16 kHz.

HifiGan is HiFi-GAN V1's generator (Kong et al., 2020) with AudioLDM's 16 kHz shape as the
`audioldm` preset and module names as in AudioLDM's checkpoints (conv_pre, ups.{i},
resblocks.{k}.convs1.{j} / convs2.{j}, conv_post). GriffinLim (impact_rt.audio) needs no weights.
Both satisfy the `Vocoder` protocol: call with a log-mel, get a waveform.

Weight norm (torch.nn.utils.parametrizations.weight_norm) is on for training
(HifiGan(cfg, weight_norm=True)) and folded by remove_weight_norm() for inference; saved files
always hold plain, folded weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .audio import N_MELS, SAMPLE_RATE, GriffinLim, load_component, save_component

LRELU_SLOPE = 0.1


class Vocoder(Protocol):
    sample_rate: int
    hop_length: int

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, T, 64] -> waveform [B, T * hop_length]"""
        ...


@dataclass
class HifiGanConfig:
    num_mels: int = N_MELS
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
    upsample_initial_channel: int = 1024
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(
        default_factory=lambda: ((1, 3, 5), (1, 3, 5), (1, 3, 5)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HifiGanConfig":
        d = dict(d)
        for k in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            d[k] = tuple(d[k])
        d["resblock_dilation_sizes"] = tuple(tuple(x) for x in d["resblock_dilation_sizes"])
        return cls(**d)


PRESETS = {
    # AudioLDM's 16 kHz HiFi-GAN (V1 layout): ~ 55M parameters.
    "audioldm": HifiGanConfig(),
    # ours, for CPU inference: the V1 layout at 3/16 of the width (2.0M parameters).
    "small": HifiGanConfig(upsample_initial_channel=192),
    # builds in milliseconds, for tests: three upsamples (8 x 5 x 4 = 160) keep 4+ channels.
    "test": HifiGanConfig(upsample_rates=(8, 5, 4), upsample_kernel_sizes=(16, 10, 8),
                          upsample_initial_channel=32, resblock_kernel_sizes=(3,),
                          resblock_dilation_sizes=((1, 3),)),
}


def get_config(preset_or_config: str | HifiGanConfig | dict) -> HifiGanConfig:
    if isinstance(preset_or_config, HifiGanConfig):
        return preset_or_config
    if isinstance(preset_or_config, dict):
        return HifiGanConfig.from_dict(preset_or_config)
    return dataclasses.replace(PRESETS[preset_or_config])


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """HiFi-GAN V1 residual block: for each dilation, x += conv2(lrelu(conv1_d(lrelu(x))))."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)) for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class HifiGan(nn.Module):
    """HiFi-GAN generator: log-mel [B, T, 64] -> waveform [B, T * prod(upsample_rates)] in [-1, 1]."""

    def __init__(self, config: str | HifiGanConfig | dict = "small", weight_norm: bool = False):
        super().__init__()
        cfg = self.config = get_config(config)
        self.sample_rate = SAMPLE_RATE
        self.hop_length = 1
        for r in cfg.upsample_rates:
            self.hop_length *= r
        ch = cfg.upsample_initial_channel
        if ch % 2 ** len(cfg.upsample_rates):
            raise ValueError("upsample_initial_channel must be divisible by 2 ** len(upsample_rates)")
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.num_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            c_in, c_out = ch // 2 ** i, ch // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2))
            for kr, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(c_out, kr, tuple(d)))
        self.conv_post = nn.Conv1d(c_out, 1, 7, padding=3)
        for m in [*self.ups, *self.resblocks.modules(), self.conv_post]:
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.normal_(m.weight, 0.0, 0.01)  # HiFi-GAN's init_weights
        if weight_norm:
            self.apply_weight_norm()

    def _convs(self):
        return [m for m in self.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]

    def apply_weight_norm(self) -> "HifiGan":
        for m in self._convs():
            if not parametrize.is_parametrized(m, "weight"):
                _weight_norm(m)
        return self

    def remove_weight_norm(self) -> "HifiGan":
        """Fold weight norm into plain weights (for inference and export)."""
        for m in self._convs():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self

    @property
    def has_weight_norm(self) -> bool:
        return any(parametrize.is_parametrized(m, "weight") for m in self._convs())

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        n_samples = log_mel.shape[1] * self.hop_length
        x = self.conv_pre(log_mel.transpose(1, 2))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as HiFi-GAN
        # ConvTranspose with padding (k - u) // 2 adds a few samples; keep T * hop.
        return x[:, 0, :n_samples]

    def save_pretrained(self, directory: str, name: str = "vocoder", dtype: torch.dtype | None = None) -> None:
        """Write <name>.safetensors (weight norm folded) + <name>.json."""
        info = {"class": "HifiGan", "config": self.config.to_dict(), "sample_rate": self.sample_rate}
        save_component(self, directory, name, info, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str, name: str = "vocoder", dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "HifiGan":
        """Load for inference (no weight norm); fp16 files are computed in `dtype`."""
        info, state = load_component(directory, name)
        model = cls(HifiGanConfig.from_dict(info["config"]), weight_norm=False)
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval()


def load_vocoder(spec: str = "griffinlim", name: str = "vocoder", **kwargs) -> Vocoder:
    """'griffinlim' -> GriffinLim(**kwargs); anything else is a folder holding <name>.safetensors."""
    if spec == "griffinlim":
        return GriffinLim(**kwargs)
    return HifiGan.from_pretrained(spec, name=name, **kwargs)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
