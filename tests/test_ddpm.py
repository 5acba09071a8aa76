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
