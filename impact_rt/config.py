"""Configuration dataclasses and model presets.

Every constant of the generator lives here (DESIGN.md §2). Presets:

* ``base`` / ``large`` — the paper's two configurations (≈193M / ≈427M parameters with the head).
* ``small`` — ours: sized to train in about ten CPU-hours and to generate a 10 s clip in
  seconds on a 2-core CPU.
* ``test`` — builds in milliseconds; used by the unit tests and by ``generate`` before a
  trained bundle exists.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Latent geometry (AudioLDM VAE): [C, H(time), W(freq)] = [8, 256, 16]; patch p = 4.
LATENT_CHANNELS = 8
LATENT_TIME = 256
LATENT_FREQ = 16
PATCH = 4
PRECISIONS = ("fp32", "bf16", "fp16")   # every backend's; each accepts a subset (and says which)


class ConfigError(ValueError):
    """A configuration or argument is invalid. The message is one line, meant for users."""


class DictConfig:
    """``to_dict`` / ``from_dict`` of a config dataclass; an unknown field is a one-line ConfigError."""
    _what = "config"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown {cls._what} fields: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class ModelConfig(DictConfig):
    """The IMPACT generator: text projection, MAE-style latent encoder, diffusion head."""

    _what = "model config"

    dim: int = 768                # D, encoder width
    enc_depth: int = 12           # Enc1 blocks
    dec_depth: int = 12           # Enc2 blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    head_width: int = 1024        # diffusion head width w
    head_depth: int = 3           # diffusion head ResBlocks d
    text_len: int = 78            # L
    text_dim: int = 384           # D_text of the conditioner's states
    latent_channels: int = LATENT_CHANNELS
    latent_time: int = LATENT_TIME
    latent_freq: int = LATENT_FREQ
    patch: int = PATCH
    train_steps: int = 1000       # DDPM training steps
    dropout: float = 0.0

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch * self.patch

    @property
    def num_tokens(self) -> int:
        return (self.latent_time // self.patch) * (self.latent_freq // self.patch)

    def validate(self) -> "ModelConfig":
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.latent_time % self.patch or self.latent_freq % self.patch:
            raise ConfigError(f"latent {self.latent_time}x{self.latent_freq} is not divisible by patch {self.patch}")
        for name in ("dim", "enc_depth", "dec_depth", "head_width", "head_depth", "text_len", "text_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config field {name} must be positive, got {getattr(self, name)}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return super().from_dict(d).validate()


PRESETS: dict[str, ModelConfig] = {
    "base": ModelConfig(dim=768, enc_depth=12, dec_depth=12, num_heads=12, head_width=1024, head_depth=3),
    "large": ModelConfig(dim=1024, enc_depth=16, dec_depth=16, num_heads=16, head_width=1024, head_depth=3),
    "small": ModelConfig(dim=256, enc_depth=4, dec_depth=4, num_heads=8, head_width=256, head_depth=3),
    "test": ModelConfig(dim=32, enc_depth=1, dec_depth=1, num_heads=2, head_width=32, head_depth=1,
                        text_dim=16),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name].validate()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


MAX_REFINE = 8   # re-masking passes: each costs up to one more decode


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of one generation (paper §3.2, App. D)."""

    iterations: int = 64          # T, decoding iterations
    diffusion_steps: int = 100    # T̂, DDPM sampling steps per iteration
    guidance: float = 5.0         # β_max of the falling CFG schedule
    temperature: float = 1.0      # scales the noise added at each DDPM step
    refine: int = 0               # re-masking passes after the decode (0: none)
    refine_share: float = 0.9     # share of the tokens each pass re-masks and decodes again

    def validate(self, num_tokens: int, train_steps: int = 1000) -> "DecodeConfig":
        import math
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or not 1 <= self.iterations <= num_tokens:
            raise ConfigError(f"iterations must be an integer in 1..{num_tokens}, got {self.iterations}")
        # the sampler respaces steps 0..sampling_start (t = 992 of 1000): at most that many + 1
        from .ddpm import Schedule, sampling_start
        most = sampling_start(Schedule.cosine(train_steps)) + 1
        if (isinstance(self.diffusion_steps, bool) or not isinstance(self.diffusion_steps, int)
                or not 1 <= self.diffusion_steps <= most):
            raise ConfigError(f"diffusion steps must be an integer in 1..{most}, got {self.diffusion_steps}")
        def real(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        if not real(self.guidance) or self.guidance < 1.0:
            raise ConfigError(f"guidance must be a finite number >= 1, got {self.guidance!r}")
        if not real(self.temperature) or self.temperature < 0.0:
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or not 0 <= self.refine <= MAX_REFINE:
            raise ConfigError(f"refine must be an integer in 0..{MAX_REFINE}, got {self.refine!r}")
        if not real(self.refine_share) or not 0.0 < self.refine_share <= 1.0:
            raise ConfigError(f"refine share must be a number in (0, 1], got {self.refine_share!r}")
        return self


@dataclass
class ParamCounts:
    latent_encoder: int
    diffusion_head: int
    total: int
    extras: dict = field(default_factory=dict)
