"""DDPM machinery (Ho et al. 2020; Nichol & Dhariwal 2021; as MAR uses it).

Cosine noise schedule over 1000 training steps, learned-range variance, respacing to T̂
sampling steps with a map back to original timesteps. Tables are float64 on the host and
converted once; nothing here runs per step except ``p_sample_step`` in the reference sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import ConfigError


def cosine_betas(num_steps: int = 1000, max_beta: float = 0.999) -> np.ndarray:
    """β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta) with ᾱ(s) = cos²((s+0.008)/1.008·π/2)."""
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                     for i in range(num_steps)], dtype=np.float64)


def respaced_timesteps(num_steps: int, sample_steps: int, last: int | None = None) -> list[int]:
    """Evenly spaced original steps kept when sampling with ``sample_steps``: 0 and ``last``
    (default T−1, as IDDPM's respacing) included."""
    last = num_steps - 1 if last is None else last
    if not 0 <= last < num_steps:
        raise ConfigError(f"last sampling step must be in 0..{num_steps - 1}, got {last}")
    if not 1 <= sample_steps <= last + 1:
        raise ConfigError(f"diffusion steps must be in 1..{last + 1}, got {sample_steps}")
    if sample_steps == 1:
        return [0]
    stride = last / (sample_steps - 1)
    return [round(i * stride) for i in range(sample_steps)]


@dataclass(frozen=True)
class Schedule:
    """A (possibly respaced) DDPM schedule with every table the sampler and the loss need.

    ``timestep_map[i]`` is the original training step the model sees at sampling index i.
    All arrays are float64 numpy; ``tensors()`` converts them once.
    """

    betas: np.ndarray
    timestep_map: np.ndarray

    def __post_init__(self):
        b = self.betas
        acp = np.cumprod(1.0 - b)
        acp_prev = np.append(1.0, acp[:-1])
        post_var = b * (1.0 - acp_prev) / (1.0 - acp)
        # log of the posterior variance, clipped: the first value is 0 and replaced by the second.
        post_log_var = np.log(np.append(post_var[1], post_var[1:])) if len(b) > 1 else np.array([np.log(b[0])])
        d = {
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": np.sqrt(acp),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - acp),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / acp),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / acp - 1.0),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": b * np.sqrt(acp_prev) / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * np.sqrt(1.0 - b) / (1.0 - acp),
            "log_betas": np.log(b),
        }
        # The reverse step folded into per-step scalars (same math as predict_x0 → posterior_mean,
        # learned_log_variance): mean = coef_x·x − coef_eps·ε; log σ² = logvar_mid + logvar_half·v.
        d["coef_x"] = d["posterior_mean_coef1"] * d["sqrt_recip_alphas_cumprod"] + d["posterior_mean_coef2"]
        d["coef_eps"] = d["posterior_mean_coef1"] * d["sqrt_recipm1_alphas_cumprod"]
        d["logvar_mid"] = 0.5 * (d["log_betas"] + post_log_var)
        d["logvar_half"] = 0.5 * (d["log_betas"] - post_log_var)
        for k, v in d.items():
            object.__setattr__(self, k, v)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def key(self) -> tuple:
        """Identifies the tables (for caches): two schedules of the same length may differ."""
        return (self.num_steps, np.asarray(self.betas, np.float64).tobytes(),
                np.asarray(self.timestep_map, np.int64).tobytes())

    @classmethod
    def cosine(cls, num_steps: int = 1000) -> "Schedule":
        return cls(cosine_betas(num_steps), np.arange(num_steps))

    def respace(self, sample_steps: int, last: int | None = None) -> "Schedule":
        """Keep ``sample_steps`` evenly spaced steps from 0 to ``last`` (default the final step);
        betas recomputed from ᾱ so that ᾱ is preserved."""
        keep = respaced_timesteps(self.num_steps, sample_steps, last)
        acp = self.alphas_cumprod
        prev, betas = 1.0, []
        for k in keep:
            betas.append(1.0 - acp[k] / prev)
            prev = acp[k]
        return Schedule(np.array(betas, dtype=np.float64), self.timestep_map[np.array(keep)])

    def tensors(self, dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
        names = ["betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "log_betas", "posterior_variance",
                 "coef_x", "coef_eps", "logvar_mid", "logvar_half"]
        out = {n: torch.tensor(getattr(self, n), dtype=dtype, device=device) for n in names}
        out["timestep_map"] = torch.tensor(self.timestep_map, dtype=torch.long, device=device)
        out["host"] = {n: [float(v) for v in getattr(self, n)] for n in names}  # python scalars per step
        return out


# The sampler starts at the last training step whose ᾱ is at least this. With the cosine schedule
# and β clipped at 0.999, ᾱ falls from 2.4e-6 at t=998 to 2.4e-9 at t=999; an ε-prediction step
# there recovers x̂₀ = (x − √(1−ᾱ)·ε̂)/√ᾱ, which multiplies the head's error by 1/√ᾱ ≈ 20,000. A
# head trained for a few thousand steps on CPU is off by ~1 % at t=999, so the first reverse step
# threw x to 10x its scale, every later step saw inputs it was never trained on, and the latents
# came out at ~800x the data's scale (session 4). ᾱ ≥ 1e-4 (1/√ᾱ ≤ 100) starts at t=992.
MIN_SAMPLING_ALPHA_BAR = 1e-4


def sampling_start(schedule: "Schedule", min_alpha_bar: float = MIN_SAMPLING_ALPHA_BAR) -> int:
    """The last training step whose ᾱ ≥ ``min_alpha_bar``: where the sampler starts from noise."""
    ok = np.nonzero(schedule.alphas_cumprod >= min_alpha_bar)[0]
    if len(ok) == 0:
        raise ConfigError(f"no training step has alpha_bar >= {min_alpha_bar}")
    return int(ok[-1])


def sampling_schedule(train_steps: int, sample_steps: int) -> "Schedule":
    """The schedule every backend samples with: the cosine training schedule respaced to
    ``sample_steps`` evenly spaced steps from 0 to ``sampling_start``."""
    base = Schedule.cosine(train_steps)
    return base.respace(sample_steps, sampling_start(base))


# ---------------------------------------------------------------------------------------------
# Per-step math, shared by the reference sampler and the training loss. ``tab`` is
# ``Schedule.tensors()``; ``i`` a sampling index (python int) or a LongTensor of indices.

def _at(tab: dict, name: str, i, like: torch.Tensor):
    if isinstance(i, int):  # one sampling step: a python scalar, no tensor op
        return tab["host"][name][i]
    v = tab[name][i]
    if v.dim() == 0:
        return v.to(like.dtype)
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(tab: dict, x0: torch.Tensor, i, noise: torch.Tensor) -> torch.Tensor:
    return _at(tab, "sqrt_alphas_cumprod", i, x0) * x0 + _at(tab, "sqrt_one_minus_alphas_cumprod", i, x0) * noise


def predict_x0(tab: dict, x: torch.Tensor, i, eps: torch.Tensor) -> torch.Tensor:
    return _at(tab, "sqrt_recip_alphas_cumprod", i, x) * x - _at(tab, "sqrt_recipm1_alphas_cumprod", i, x) * eps


def posterior_mean(tab: dict, x0: torch.Tensor, x: torch.Tensor, i) -> torch.Tensor:
    return _at(tab, "posterior_mean_coef1", i, x) * x0 + _at(tab, "posterior_mean_coef2", i, x) * x


def learned_log_variance(tab: dict, v: torch.Tensor, i) -> torch.Tensor:
    """Learned-range variance: v ∈ [−1, 1] interpolates log β̃ (posterior) and log β in log space."""
    frac = (v + 1.0) / 2.0
    return frac * _at(tab, "log_betas", i, v) + (1.0 - frac) * _at(tab, "posterior_log_variance_clipped", i, v)


def p_sample_step(tab: dict, x: torch.Tensor, i: int, eps: torch.Tensor, v: torch.Tensor,
                  noise: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """One reverse step x_i → x_{i−1}: mean from ε (no clipping), learned variance, scaled noise.

    No noise is added at the last step (i == 0). The coefficients are ``predict_x0`` followed by
    ``posterior_mean`` and ``learned_log_variance``, folded into per-step scalars (Schedule).
    """
    mean = _at(tab, "coef_x", i, x) * x - _at(tab, "coef_eps", i, x) * eps
    if i == 0 or noise is None:
        return mean
    log_var = _at(tab, "logvar_mid", i, v) + _at(tab, "logvar_half", i, v) * v
    return mean + torch.exp(0.5 * log_var) * (noise * temperature)


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_nll(x, means, log_scales):
    """Decoder NLL at the first step (ADM); latents are continuous, so this is a smooth surrogate."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return -torch.where(x < -0.999, log_cdf_plus,
                        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def training_loss(tab: dict, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor,
                  model_out: torch.Tensor) -> torch.Tensor:
    """Per-row loss: ε-MSE plus the variational bound term for the learned variance (mean frozen).

    ``model_out`` [R, 2C] = (ε̂, v) for x_i = q_sample(x0, i, noise).
    """
    c = x0.shape[-1]
    eps, v = model_out[:, :c], model_out[:, c:]
    mse = ((noise - eps) ** 2).mean(dim=-1)
    x_t = q_sample(tab, x0, i, noise)
    frozen_x0 = predict_x0(tab, x_t, i, eps.detach())
    model_mean = posterior_mean(tab, frozen_x0, x_t, i)
    model_log_var = learned_log_variance(tab, v, i)
    true_mean = posterior_mean(tab, x0, x_t, i)
    true_log_var = _at(tab, "posterior_log_variance_clipped", i, x0)
    kl = normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dim=-1) / math.log(2.0)
    nll = discretized_gaussian_nll(x0, model_mean, 0.5 * model_log_var).mean(dim=-1) / math.log(2.0)
    vb = torch.where(i == 0, nll, kl)
    return mse + vb
