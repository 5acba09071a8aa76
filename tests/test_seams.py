"""impact_rt.evaluation.seams: the patch-grid jump ratio of latents."""
import numpy as np
import pytest

from impact_rt.evaluation.seams import seam_changes, seams_of_changes, token_seams


def _smooth(rng, b=8, c=2, t=32, f=16):
    """A latent with no patch grid: white noise (every neighbouring pair changes alike)."""
    return 0.3 * rng.standard_normal((b, c, t, f))


def test_a_latent_that_ignores_the_grid_scores_about_one():
    s = token_seams(_smooth(np.random.default_rng(0)), 4)
    assert 0.85 < s["time"] < 1.15 and 0.85 < s["freq"] < 1.15 and s["clips"] == 8


def test_token_wise_offsets_raise_the_ratio_on_the_axis_they_break():
    rng = np.random.default_rng(1)
    x = _smooth(rng)
    off_t = np.repeat(rng.standard_normal((8, 2, 8, 1)), 4, axis=2)      # constant per 4-frame block
    s = token_seams(x + off_t, 4)
    assert s["time"] > 2.0 and 0.8 < s["freq"] < 1.25
    off_f = np.repeat(rng.standard_normal((8, 2, 1, 4)), 4, axis=3)      # constant per 4-bin band
    s = token_seams(x + off_f, 4)
    assert s["freq"] > 2.0 and 0.8 < s["time"] < 1.25


def test_offsets_on_another_grid_are_not_counted_as_seams():
    """Blocks of 4 shifted by 2 frames jump inside the patches, not at their boundaries."""
    rng = np.random.default_rng(2)
    x = _smooth(rng)
    off = np.repeat(rng.standard_normal((8, 2, 9, 1)), 4, axis=2)[:, :, 2:34]
    assert token_seams(x + off, 4)["time"] < 0.7


def test_changes_of_batches_concatenated_give_the_seams_of_the_whole():
    rng = np.random.default_rng(3)
    x = _smooth(rng) + np.repeat(rng.standard_normal((8, 2, 8, 1)), 4, axis=2)
    parts = [seam_changes(x[:3], 4), seam_changes(x[3:], 4)]
    assert seams_of_changes(*(np.concatenate(c) for c in zip(*parts)), 4) == token_seams(x, 4)
    with pytest.raises(ValueError):
        seams_of_changes(parts[0][0], parts[1][1], 4)


@pytest.mark.parametrize("shape,patch", [((2, 8, 256), 4), ((1, 8, 30, 16), 4), ((1, 8, 32, 16), 1)])
def test_bad_shapes_are_refused(shape, patch):
    with pytest.raises(ValueError):
        token_seams(np.zeros(shape), patch)


def test_generation_carries_the_latents_the_vae_decoded():
    import torch

    from impact_rt.patchify import patchify
    from impact_rt.pipeline import Pipeline
    pipe = Pipeline.random("test")
    seen = []
    orig = pipe.backend.audio
    pipe.backend.audio = lambda tokens: (seen.append(tokens.float().clone()), orig(tokens))[1]
    g = pipe.generate(["a", "b"], seed=3, iterations=2, diffusion_steps=2)
    cfg = pipe.model.cfg
    assert g.latents.shape == (2, cfg.latent_channels, cfg.latent_time, cfg.latent_freq)
    assert g.latents.dtype == np.float32
    assert torch.equal(patchify(torch.from_numpy(g.latents), cfg.patch), seen[0])
