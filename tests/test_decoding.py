import pytest
import torch

from impact_rt.config import ConfigError, DecodeConfig
from impact_rt.decoding import REFINE_SEED_STRIDE, RecordedNoise, TorchNoise, decode
from impact_rt.mask_schedule import MaskPlan
from impact_rt.reference import TorchBackend

from helpers import tiny_condition, tiny_model


def _run(model, prompts, seeds, dc, noise=None):
    cond, mask = tiny_condition(model, prompts)
    nc, nm = model.null(len(prompts))
    noise = noise or TorchNoise(seeds)
    with torch.inference_mode():
        return decode(TorchBackend(model), model.cfg, dc, cond, mask, nc, nm, noise)


def test_same_seed_same_latents_different_seed_different():
    model = tiny_model()
    dc = DecodeConfig(iterations=4, diffusion_steps=10)
    a = _run(model, ["thunder"], [1], dc)
    b = _run(model, ["thunder"], [1], dc)
    c = _run(model, ["thunder"], [2], dc)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sample_does_not_depend_on_batch_neighbours():
    model = tiny_model()
    dc = DecodeConfig(iterations=4, diffusion_steps=10)
    alone = _run(model, ["thunder"], [7], dc)
    batched = _run(model, ["a dog barking", "thunder"], [3, 7], dc)
    torch.testing.assert_close(batched[1:], alone, rtol=1e-4, atol=1e-4 * alone.abs().max().item())


def test_every_token_written_and_prompt_matters():
    model = tiny_model()
    dc = DecodeConfig(iterations=8, diffusion_steps=5)
    a = _run(model, ["thunder"], [0], dc)
    b = _run(model, ["piano"], [0], dc)
    assert (a.abs().sum(-1) > 0).all()
    assert not torch.allclose(a, b)


def test_recorded_noise_replays_exactly():
    model = tiny_model()
    dc = DecodeConfig(iterations=4, diffusion_steps=6)
    rec = RecordedNoise.wrap(TorchNoise([5]))
    a = _run(model, ["rain"], None, dc, rec)
    assert len(rec.heads) == 4 and rec.heads[0].shape[0] == 6
    b = _run(model, ["rain"], None, dc, rec.replay())
    assert torch.equal(a, b)


def test_guidance_one_skips_uncond_branch():
    model = tiny_model()
    calls = []

    class Spy(TorchBackend):
        def encode(self, tokens, *a):
            calls.append(tokens.shape[0])
            return super().encode(tokens, *a)

    cond, mask = tiny_condition(model, ["x"])
    nc, nm = model.null(1)
    with torch.inference_mode():
        decode(Spy(model), model.cfg, DecodeConfig(2, 3, guidance=1.0), cond, mask, nc, nm, TorchNoise([0]))
        decode(Spy(model), model.cfg, DecodeConfig(2, 3, guidance=3.0), cond, mask, nc, nm, TorchNoise([0]))
    assert calls == [1, 1, 2, 2]


def test_refinement_redecodes_the_share_its_order_masks_and_keeps_the_rest():
    model = tiny_model()
    dc0 = DecodeConfig(iterations=8, diffusion_steps=5)
    dc1 = DecodeConfig(iterations=8, diffusion_steps=5, refine=1, refine_share=0.5)
    plain = _run(model, ["thunder"], [3], dc0)
    refined = _run(model, ["thunder"], [3], dc1)
    again = _run(model, ["thunder"], [3], dc1)
    assert torch.equal(refined, again)
    start = MaskPlan.build(256, 8).refine_start(0.5)
    masked = MaskPlan.build(256, 8).masked[start]
    assert 0 < masked <= 128
    # pass 0 draws its order from seed 3 + stride: its first `masked` positions are decoded again
    order = TorchNoise([3 + REFINE_SEED_STRIDE]).order(1, 256)[0]
    kept, redone = order[masked:], order[:masked]
    assert torch.equal(refined[0, kept], plain[0, kept])
    assert (refined[0, redone] != plain[0, redone]).any(-1).all()


def test_refinement_replays_exactly_and_reports_progress_over_all_passes():
    model = tiny_model()
    dc = DecodeConfig(iterations=4, diffusion_steps=3, refine=2, refine_share=1.0)
    rec = RecordedNoise.wrap(TorchNoise([5]))
    steps = []
    cond, mask = tiny_condition(model, ["rain"])
    nc, nm = model.null(1)
    with torch.inference_mode():
        a = decode(TorchBackend(model), model.cfg, dc, cond, mask, nc, nm, rec, on_iteration=lambda t, n: steps.append((t, n)))
    assert steps == [(t, 12) for t in range(12)]            # share 1: each pass is a whole decode
    assert len(rec.refines) == 2 and all(len(r.heads) == 4 for r in rec.refines)
    b = _run(model, ["rain"], None, dc, rec.replay())
    assert torch.equal(a, b)


def test_refine_start_and_validation():
    plan = MaskPlan.build(256, 16)
    assert plan.refine_start(1.0) == 0
    t = plan.refine_start(0.9)
    assert plan.masked[t] <= 0.9 * 256 < plan.masked[t - 1]
    assert plan.refine_start(1e-6) == 15                    # at the least the last iteration's tokens
    for bad in (dict(refine=-1), dict(refine=9), dict(refine=True), dict(refine=1.0),
                dict(refine_share=0.0), dict(refine_share=1.5), dict(refine_share=float("nan"))):
        with pytest.raises(ConfigError, match="refine"):
            DecodeConfig(**bad).validate(256)


def test_refinement_seeds_stay_int64_for_the_largest_seed():
    from impact_rt.decoding import refine_seeds
    top = 2 ** 63 - 1
    assert refine_seeds([3], 0) == [3 + REFINE_SEED_STRIDE]
    assert all(0 <= s < 2 ** 63 for s in refine_seeds([top, top - 5], 7))
    TorchNoise(refine_seeds([top], 7)).order(1, 4)
