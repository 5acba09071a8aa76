import pytest
import torch

from impact_rt.config import ConfigError
from impact_rt.patchify import patchify, tokens_to_latent, unpatchify


def test_round_trip_is_exact():
    z = torch.randn(3, 8, 256, 16)
    tokens = patchify(z, 4)
    assert tokens.shape == (3, 256, 128)
    assert torch.equal(unpatchify(tokens, 4, 8, 256, 16), z)


def test_tokens_to_latent_inverts_patchify_with_the_config_geometry():
    from impact_rt.config import preset
    cfg = preset("test")
    z = torch.randn(2, cfg.latent_channels, cfg.latent_time, cfg.latent_freq)
    assert torch.equal(tokens_to_latent(patchify(z, cfg.patch), cfg), z)
    with pytest.raises(ConfigError):
        tokens_to_latent(torch.zeros(1, cfg.num_tokens + 1, cfg.token_dim), cfg)


def test_token_layout():
    # token 1 is the second patch along frequency (row-major over the 64 x 4 grid)
    z = torch.zeros(1, 8, 256, 16)
    z[0, 3, 1, 5] = 1.0  # channel 3, time 1, freq 5 → grid (0, 1), inside (dy=1, dx=1)
    tokens = patchify(z, 4)
    nz = tokens.nonzero().tolist()
    assert nz == [[0, 1, 3 * 16 + 1 * 4 + 1]]


def test_bad_shapes():
    with pytest.raises(ConfigError):
        patchify(torch.zeros(8, 256, 16), 4)
    with pytest.raises(ConfigError):
        patchify(torch.zeros(1, 8, 254, 16), 4)
    with pytest.raises(ConfigError):
        unpatchify(torch.zeros(1, 255, 128), 4, 8, 256, 16)
