"""KL-VAE for log-mel spectrograms, with AudioLDM's (= LDM's AutoencoderKL) module layout and names.

    mel [B, 1024, 64] --encode--> DiagonalGaussian (mean, logvar) [B, 8, 256, 16]
    z   [B, 8, 256, 16] --decode--> mel [B, 1024, 64]

The mel is a one-channel image with time as height and mel bins as width; two stride-2 downsamples
give the ÷4 latent. encode/decode work on raw latents as in LDM; the generator's latents are scaled:
z_gen = z * scale_factor (`scale_latents` / `unscale_latents`, `encode_latents` / `decode_latents`).
scale_factor is a buffer measured on data (`measure_scale_factor`) and saved with the weights.

Module names follow AudioLDM's checkpoints (encoder.conv_in, encoder.down.{i}.block.{j}.norm1/conv1/
norm2/conv2/nin_shortcut, encoder.down.{i}.downsample.conv, encoder.mid.block_1/attn_1/block_2,
encoder.norm_out, encoder.conv_out, quant_conv, post_quant_conv, decoder.conv_in, decoder.mid.*,
decoder.up.{i}.block.{j}, decoder.up.{i}.upsample.conv, decoder.norm_out, decoder.conv_out), so a
converter mostly strips the `first_stage_model.` prefix (AudioLDM keeps its scale factor on the
diffusion model, not the VAE: copy it into `scale_factor`).

Attention: AudioLDM's VAE has attn_resolutions = [] (no attention in the down/up levels) but LDM's
Encoder/Decoder always build one self-attention block in the middle (mid.attn_1: norm, q, k, v,
proj_out), and AudioLDM's checkpoints carry it. The `audioldm` preset therefore sets
mid_attn=True so that those weights load; our own presets have no attention at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .audio import load_component, save_component

LATENT_CHANNELS = 8
LATENT_SHAPE = (8, 256, 16)  # for a 1024 x 64 mel


@dataclass
class VAEConfig:
    in_channels: int = 1
    out_ch: int = 1
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 8
    embed_dim: int = 8
    double_z: bool = True
    mid_attn: bool = False  # LDM's mid.attn_1; True only to load AudioLDM's weights
    norm_groups: int = 32
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        d = dict(d)
        d["ch_mult"] = tuple(d["ch_mult"])
        return cls(**d)


PRESETS = {
    # AudioLDM's VAE (AudioLDM 1 / 2 at 16 kHz, 64 mel bins): ~ 55M parameters with mid attention.
    "audioldm": VAEConfig(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, mid_attn=True),
    # ours, for CPU inference: AudioLDM's layout at a quarter of the width, no attention (3.4M).
    "small": VAEConfig(ch=32, ch_mult=(1, 2, 4), num_res_blocks=2),
    # builds in milliseconds, for tests.
    "test": VAEConfig(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, norm_groups=4),
}


def get_config(preset_or_config: str | VAEConfig | dict) -> VAEConfig:
    if isinstance(preset_or_config, VAEConfig):
        return preset_or_config
    if isinstance(preset_or_config, dict):
        return VAEConfig.from_dict(preset_or_config)
    return dataclasses.replace(PRESETS[preset_or_config])


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """LDM's single-head spatial self-attention with 1x1 convolutions."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the end (LDM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (LDM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, cfg: VAEConfig) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, cfg.norm_groups, cfg.dropout)
    if cfg.mid_attn:
        mid.attn_1 = AttnBlock(channels, cfg.norm_groups)
    mid.block_2 = ResnetBlock(channels, channels, cfg.norm_groups, cfg.dropout)
    return mid


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    h = mid.block_1(h)
    if hasattr(mid, "attn_1"):
        h = mid.attn_1(h)
    return mid.block_2(h)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1,) + tuple(cfg.ch_mult)
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            level = nn.Module()
            block_in, block_out = cfg.ch * in_mult[i], cfg.ch * mult
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, cfg.norm_groups, cfg.dropout))
                block_in = block_out
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = _mid(block_in, cfg)
        self.norm_out = _norm(block_in, cfg.norm_groups)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels,
                                  3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in, cfg)
        up = [None] * len(cfg.ch_mult)
        for i in reversed(range(len(cfg.ch_mult))):
            level = nn.Module()
            block_out = cfg.ch * cfg.ch_mult[i]
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.norm_groups, cfg.dropout))
                block_in = block_out
            if i != 0:
                level.upsample = Upsample(block_in)
            up[i] = level
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(block_in, cfg.norm_groups)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussian:
    """The posterior N(mean, exp(logvar)) from LDM's moments [B, 2 * embed_dim, H, W]."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                            device=self.mean.device if generator is None else generator.device)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over the latent dims: [B]."""
        return 0.5 * torch.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, dim=(1, 2, 3))


class AutoencoderKL(nn.Module):
    def __init__(self, config: str | VAEConfig | dict = "small"):
        super().__init__()
        cfg = self.config = get_config(config)
        if not cfg.double_z:
            raise ValueError("AutoencoderKL needs double_z=True (mean and log-variance)")
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        # 1.0 until measured on data (measure_scale_factor); saved with the weights, kept in fp32.
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """log-mel [B, T, F] -> posterior over raw latents [B, 8, T/4, F/4]."""
        # the posterior's statistics (KL, samples) are kept in fp32 even under autocast
        return DiagonalGaussian(self.quant_conv(self.encoder(mel.unsqueeze(1))).float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """raw latents [B, 8, T/4, F/4] -> log-mel [B, T, F]."""
        z = z.to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z)).squeeze(1)

    def forward(self, mel: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(mel)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    # -- the generator's (scaled) latent space
    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale_factor.to(z.dtype)

    def unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale_factor.to(z.dtype)

    def encode_latents(self, mel: torch.Tensor, sample: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """log-mel -> scaled latents (the mean, or a sample of the posterior)."""
        posterior = self.encode(mel)
        return self.scale_latents(posterior.sample(generator) if sample else posterior.mode())

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """scaled latents [B, 8, 256, 16] -> log-mel [B, 1024, 64]."""
        return self.decode(self.unscale_latents(z))

    @torch.no_grad()
    def set_scale_factor(self, value: float) -> None:
        self.scale_factor.fill_(float(value))

    # -- files
    def save_pretrained(self, directory: str, name: str = "vae", dtype: torch.dtype | None = None) -> None:
        """Write <name>.safetensors + <name>.json. dtype=torch.float16 halves the file; the scale
        factor stays fp32."""
        info = {"class": "AutoencoderKL", "config": self.config.to_dict(),
                "scale_factor": float(self.scale_factor)}
        save_component(self, directory, name, info, dtype=dtype, keep_fp32=("scale_factor",))

    @classmethod
    def from_pretrained(cls, directory: str, name: str = "vae", dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "AutoencoderKL":
        """Load what save_pretrained wrote; weights stored in fp16 are computed in `dtype`."""
        info, state = load_component(directory, name)
        from .bundle import load_module
        cfg = VAEConfig.from_dict(info["config"])
        model = load_module(lambda: cls(cfg), state)
        return model.to(device=device, dtype=dtype).eval()


def measure_scale_factor(latents: torch.Tensor | list[torch.Tensor]) -> float:
    """Scale-by-std (LDM): 1 / std of the raw latents (posterior samples) of a batch of real data."""
    if isinstance(latents, (list, tuple)):
        latents = torch.cat([z.reshape(-1) for z in latents])
    std = latents.detach().double().flatten().std()
    if not torch.isfinite(std) or std <= 0:
        raise ValueError("latents have no spread; cannot measure a scale factor")
    return float(1.0 / std)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
