import math

import pytest
import torch

from impact_rt.mask_schedule import MaskPlan, decoded_per_iteration, guidance_schedule, masked_after, random_orders


@pytest.mark.parametrize("T", [1, 2, 4, 8, 16, 32, 64])
def test_counts_match_oracle(reference_vectors, T):
    assert decoded_per_iteration(256, T) == reference_vectors["predicted_per_iteration"][str(T)]


@pytest.mark.parametrize("T", [1, 4, 16, 64, 256])
def test_masks_shrink_strictly_and_fill_everything_once(T):
    plan = MaskPlan.build(256, T)
    order = random_orders(2, 256, [torch.Generator().manual_seed(s) for s in (0, 1)])
    seen = torch.zeros(2, 256, dtype=torch.int64)
    prev_masked = set(range(256))
    for t in range(T):
        masked_before = set(order[0, : plan.masked[t]].tolist())
        assert masked_before == prev_masked
        predicted = order[:, plan.predicted_slice(t)]
        visible = order[:, plan.visible_slice(t)]
        assert predicted.shape[1] >= 1
        assert visible.shape[1] + plan.masked[t] == 256
        seen.scatter_add_(1, predicted, torch.ones_like(predicted))
        masked_after_t = set(order[0, : plan.masked[t + 1]].tolist())
        assert masked_after_t < masked_before  # strict subset
        prev_masked = masked_after_t
    assert torch.equal(seen, torch.ones_like(seen))  # every position decoded exactly once
    assert plan.masked[-1] == 0


def test_at_least_one_masked_until_last():
    m = masked_after(256, 64)
    assert all(x >= 1 for x in m[1:-1]) and m[-1] == 0


def test_guidance_oracle_and_endpoints(reference_vectors):
    g = guidance_schedule(64, 5.0)
    assert g == pytest.approx(reference_vectors["guidance_T64"], abs=1e-12)
    assert g[0] == 5.0
    assert g[-1] == pytest.approx(1 + math.cos(math.pi / 2 * 63 / 64) * 4)
    assert all(a > b for a, b in zip(g, g[1:]))  # falls (MAR's default rises: not that)
    assert guidance_schedule(8, 1.0) == [1.0] * 8


def test_orders_are_per_sample_permutations():
    gens = [torch.Generator().manual_seed(s) for s in (3, 3, 4)]
    o = random_orders(3, 256, gens)
    assert torch.equal(o[0], o[1]) and not torch.equal(o[0], o[2])
    assert torch.equal(o.sort(1).values, torch.arange(256).expand(3, -1))
