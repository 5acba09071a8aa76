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

from .audio import (HOP, N_FFT, N_FREQS, N_MELS, SAMPLE_RATE, GriffinLim, istft, load_component, mel_pseudo_inverse,
                    noise_phases, save_component, stft)

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


@dataclass
class VocosConfig:
    num_mels: int = N_MELS
    dim: int = 192
    layers: int = 6
    mult: int = 3                 # ConvNeXt hidden width = mult * dim
    kernel: int = 7
    phase: str = "predicted"      # "predicted" (noise-mixed, see Vocos) or "griffinlim"
    gl_iter: int = 4              # Griffin-Lim iterations from noise phases when phase == "griffinlim"

    def __post_init__(self):
        if self.phase not in ("predicted", "griffinlim"):
            raise ValueError(f"Vocos phase must be 'predicted' or 'griffinlim', not {self.phase!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VocosConfig":
        return cls(**d)


VOCOS_PRESETS = {
    "small": VocosConfig(),                                   # 1.8M parameters
    "small-gl": VocosConfig(phase="griffinlim"),              # 1.5M: magnitude only, Griffin-Lim phases
    "test": VocosConfig(dim=16, layers=1, mult=2, kernel=3),  # builds in milliseconds
    "test-gl": VocosConfig(dim=16, layers=1, mult=2, kernel=3, phase="griffinlim", gl_iter=2),
}


class ConvNeXtBlock(nn.Module):
    """Depth-wise conv over frames, LayerNorm, pointwise MLP (GELU), layer scale, residual."""

    def __init__(self, dim: int, mult: int, kernel: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, mult * dim), nn.Linear(mult * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # [B, T, dim]
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(h))))


class Vocos(nn.Module):
    """A frame-rate neural vocoder: log-mel [B, T, 64] -> waveform [B, T * 160] in [-1, 1].

    Vocos' shape (Siuzdak, 2023): ConvNeXt blocks at the mel's frame rate predict every STFT
    frame's magnitude and phase, and the inverse STFT (the same 1024/160 frames as the front end)
    makes the waveform, so nothing runs at the sample rate. Two changes for training on a CPU
    without discriminators:
    - the magnitude is predicted as a log-domain correction of the filterbank's pseudo-inverse
      (the start Griffin-Lim uses), so an untrained network is already a noise-phase vocoder;
    - each bin's phase is that of  w * N + (x + iy): N the unit phases of white noise's STFT drawn
      from `seed` (as GriffinLim's init="noise"), w >= 0 and x + iy predicted. Noise-like bins
      keep the noise's phases (what a deterministic network cannot invent), tonal bins get
      predicted, frame-to-frame coherent ones. Same seed, same waveform.
    """

    def __init__(self, config: str | VocosConfig | dict = "small", seed: int = 0):
        super().__init__()
        if isinstance(config, str):
            config = dataclasses.replace(VOCOS_PRESETS[config])
        elif isinstance(config, dict):
            config = VocosConfig.from_dict(config)
        cfg = self.config = config
        self.seed, self.sample_rate, self.hop_length = seed, SAMPLE_RATE, HOP
        self.embed = nn.Conv1d(cfg.num_mels, cfg.dim, cfg.kernel, padding=cfg.kernel // 2)
        self.norm_in = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.mult, cfg.kernel) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.dim)
        # log-magnitude correction (+ x, y, noise weight with predicted phases)
        self.head = nn.Linear(cfg.dim, (4 if cfg.phase == "predicted" else 1) * N_FREQS)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():                         # start: the pseudo-inverse magnitude, noise phases
            self.head.bias.zero_()
            if cfg.phase == "predicted":
                self.head.bias[3 * N_FREQS:] = 1.0    # noise weight softplus(1) against x + iy = 0
        self.register_buffer("mel_pinv", mel_pseudo_inverse(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self._phases: dict = {}

    def noise_phases(self, batch: int, n_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unit phases [batch, n_frames, 513] of white noise's STFT; from `seed` unless a generator
        is given (training draws fresh ones). Every row gets the same phases with the seed, so a
        clip's waveform does not depend on its batch."""
        if generator is not None:
            noise = torch.randn(batch, n_frames * HOP, generator=generator)
            return torch.sgn(stft(noise.to(self.window.device), self.window))
        key = (n_frames, self.window.device, self.seed)
        if key not in self._phases:                   # one row per frame count, device and seed, cached
            self._phases = {key: noise_phases(n_frames, self.seed, self.window)}
        return self._phases[key].expand(batch, -1, -1)

    def predict(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-mel [B, T, 64] -> (linear magnitude [B, T, 513] fp32, the head's other outputs)."""
        with torch.autocast(log_mel.device.type, enabled=False):
            base = torch.matmul(torch.exp(log_mel.float()), self.mel_pinv.T).clamp_min(0.0)
        h = self.norm_in(self.embed(log_mel.transpose(1, 2)).transpose(1, 2))
        for block in self.blocks:
            h = block(h)
        out = self.head(self.norm_out(h)).float()
        dlog, rest = out[..., :N_FREQS], out[..., N_FREQS:]
        with torch.autocast(log_mel.device.type, enabled=False):
            return torch.exp((torch.log(base + 1e-5) + dlog).clamp(max=6.0)), rest

    def spectrum(self, log_mel: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        """log-mel [B, T, 64] + unit noise phases [B, T, 513] -> complex STFT [B, T, 513]."""
        mag, rest = self.predict(log_mel)
        with torch.autocast(log_mel.device.type, enabled=False):
            if self.config.phase == "predicted":
                x, y, w = rest.split(N_FREQS, dim=-1)
                return mag * torch.sgn(F.softplus(w) * phases + torch.complex(x, y))
            for _ in range(self.config.gl_iter):      # Griffin-Lim (plain) from the noise phases
                phases = torch.sgn(stft(istft(mag * phases, self.window), self.window))
            return mag * phases

    def forward(self, log_mel: torch.Tensor, phases: torch.Tensor | None = None,
                magnitude_only: bool = False) -> torch.Tensor:
        """-> waveform [B, T * 160]; with magnitude_only the predicted magnitude [B, T, 513]
        (what training of the Griffin-Lim form regresses)."""
        if magnitude_only:
            return self.predict(log_mel)[0]
        if phases is None:
            phases = self.noise_phases(log_mel.shape[0], log_mel.shape[1])
        wav = istft(self.spectrum(log_mel, phases), self.window)
        return wav.clamp(-1.0, 1.0)

    def save_pretrained(self, directory: str, name: str = "vocoder", dtype: torch.dtype | None = None) -> None:
        info = {"class": "Vocos", "config": self.config.to_dict(), "seed": self.seed,
                "sample_rate": self.sample_rate}
        save_component(self, directory, name, info, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str, name: str = "vocoder", dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "Vocos":
        info, state = load_component(directory, name)
        model = cls(VocosConfig.from_dict(info["config"]), seed=info.get("seed", 0))
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval()


NEURAL = {"hifigan": HifiGan, "vocos": Vocos}     # bundle kind -> class


def neural_kind(vocoder) -> str | None:
    """The bundle kind of a trained vocoder ('hifigan', 'vocos'), None for anything else."""
    return next((k for k, c in NEURAL.items() if isinstance(vocoder, c)), None)


def load_trained(directory: str, name: str = "vocoder", **kwargs):
    """A trained vocoder from <name>.safetensors/.json, of the class its JSON names."""
    info, _ = load_component(directory, name)
    cls = {c.__name__: c for c in NEURAL.values()}.get(info.get("class", "HifiGan"))
    if cls is None:
        raise ValueError(f"{directory}/{name}.json names an unknown vocoder class {info.get('class')!r}")
    return cls.from_pretrained(directory, name=name, **kwargs)


def from_spec(directory: str, spec: dict) -> Vocoder:
    """A bundle config's vocoder entry -> the vocoder: Griffin-Lim from its settings, a trained one
    from <directory>/vocoder.safetensors (its class must be the entry's kind)."""
    kind = spec.get("kind")
    if kind == "griffinlim":
        return GriffinLim.from_spec(spec)
    if kind not in NEURAL:
        raise ValueError(f"unknown vocoder kind {kind!r} (known: griffinlim, {', '.join(NEURAL)})")
    vocoder = load_trained(directory, "vocoder")
    if not isinstance(vocoder, NEURAL[kind]):
        raise ValueError(f"config.json says vocoder kind {kind!r} but vocoder.json holds a {type(vocoder).__name__}")
    return vocoder


def load_vocoder(spec: str = "griffinlim", name: str = "vocoder", **kwargs) -> Vocoder:
    """'griffinlim' -> GriffinLim(**kwargs); anything else is a folder holding <name>.safetensors."""
    if spec == "griffinlim":
        return GriffinLim(**kwargs)
    return load_trained(spec, name=name, **kwargs)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
