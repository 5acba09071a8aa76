import math

import numpy as np
import pytest
import torch

from impact_rt import ddpm


def test_cosine_schedule_oracle(reference_vectors):
    acp = ddpm.Schedule.cosine(1000).alphas_cumprod
    want = reference_vectors["alphas_cumprod_1000_first_last"]
    got = [acp[0], acp[1], acp[499], acp[998], acp[999]]
    assert got == pytest.approx(want, rel=1e-9)
    assert ddpm.cosine_betas().max() <= 0.999


@pytest.mark.parametrize("k", [50, 100, 200])
def test_respacing_oracle(reference_vectors, k):
    s = ddpm.Schedule.cosine(1000).respace(k)
    assert s.timestep_map.tolist() == reference_vectors["respaced_timesteps"][str(k)]
    assert s.betas.tolist() == pytest.approx(reference_vectors["respaced_betas"][str(k)], rel=1e-9)


def test_respacing_100_keeps_ends_and_alphas():
    base = ddpm.Schedule.cosine(1000)
    s = base.respace(100)
    assert s.timestep_map[0] == 0 and s.timestep_map[-1] == 999 and len(s.timestep_map) == 100
    # ᾱ recomputed from the kept steps equals the original ᾱ at those steps
    np.testing.assert_allclose(s.alphas_cumprod, base.alphas_cumprod[s.timestep_map], rtol=1e-10)


def test_posterior_math_against_float64_rederivation():
    s = ddpm.Schedule.cosine(1000).respace(100)
    tab = s.tensors(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 128, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 128, generator=g, dtype=torch.float64)
    v = torch.rand(5, 128, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(5, 128, generator=g, dtype=torch.float64)
    for i in [0, 1, 37, 99]:
        # independent re-derivation from ᾱ alone
        a = float(s.alphas_cumprod[i]); a_prev = float(s.alphas_cumprod[i - 1]) if i > 0 else 1.0
        beta = 1 - a / a_prev
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        mean = (math.sqrt(a_prev) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x
        if i == 0:
            want = mean
        else:
            post_var = beta * (1 - a_prev) / (1 - a)
            log_var = (v + 1) / 2 * math.log(beta) + (1 - (v + 1) / 2) * math.log(post_var)
            want = mean + torch.exp(0.5 * log_var) * z * 0.7
        got = ddpm.p_sample_step(tab, x, i, eps, v, z, 0.7)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_clipped_log_variance_replaces_first_value():
    s = ddpm.Schedule.cosine(1000).respace(100)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == pytest.approx(math.log(s.posterior_variance[1]))


def test_bad_step_counts():
    from impact_rt.config import ConfigError
    with pytest.raises(ConfigError):
        ddpm.respaced_timesteps(1000, 0)
    with pytest.raises(ConfigError):
        ddpm.respaced_timesteps(1000, 1001)


def test_training_loss_is_small_for_perfect_eps():
    tab = ddpm.Schedule.cosine(1000).tensors()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 8, generator=g)
    noise = torch.randn(64, 8, generator=g)
    t = torch.randint(1, 1000, (64,), generator=g)
    perfect = torch.cat([noise, torch.zeros_like(noise)], 1)
    wrong = torch.cat([-noise, torch.zeros_like(noise)], 1)
    assert ddpm.training_loss(tab, x0, t, noise, perfect).mean() < ddpm.training_loss(tab, x0, t, noise, wrong).mean()


def test_sampling_schedule_starts_where_alpha_bar_is_not_degenerate():
    base = ddpm.Schedule.cosine(1000)
    start = ddpm.sampling_start(base)
    assert base.alphas_cumprod[start] >= ddpm.MIN_SAMPLING_ALPHA_BAR > base.alphas_cumprod[start + 1]
    assert start == 992  # cosine, 1000 steps: ᾱ(992) ≈ 1.2e-4, ᾱ(999) ≈ 2.4e-9
    s = ddpm.sampling_schedule(1000, 100)
    assert s.timestep_map[0] == 0 and s.timestep_map[-1] == start and len(s.timestep_map) == 100
    np.testing.assert_allclose(s.alphas_cumprod, base.alphas_cumprod[s.timestep_map], rtol=1e-10)
    assert ddpm.sampling_schedule(1000, 1).timestep_map.tolist() == [0]
    with pytest.raises(Exception, match="diffusion steps"):
        ddpm.sampling_schedule(1000, 994)


def _first_step(schedule, eps_error: float, rows: int = 4096) -> torch.Tensor:
    """The first reverse step from pure noise on N(0, 1) data, with the exact ε-posterior mean
    (√(1−ᾱ)·x) plus an error of ``eps_error``: x at the next kept step, whose true scale is 1."""
    tab = schedule.tensors(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    i = schedule.num_steps - 1
    x = torch.randn(rows, 8, generator=g, dtype=torch.float64)
    eps = math.sqrt(1 - float(schedule.alphas_cumprod[i])) * x
    eps = eps + eps_error * torch.randn(x.shape, generator=g, dtype=torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return ddpm.p_sample_step(tab, x, i, eps, torch.zeros_like(x), z, 1.0)


def test_sampling_schedule_tolerates_an_imperfect_head():
    # A head 1 % off in ε: from t=999 (1/√ᾱ ≈ 20,000) the first step throws x to several times the
    # scale any later step was trained on (the shipped model's latents came out ~800x too large);
    # from the sampling schedule's start it stays at the data's scale.
    assert _first_step(ddpm.Schedule.cosine(1000).respace(100), 0.01).std() > 3.0
    assert 0.95 < _first_step(ddpm.sampling_schedule(1000, 100), 0.01).std() < 1.05
    assert 0.95 < _first_step(ddpm.Schedule.cosine(1000).respace(100), 0.0).std() < 1.05
