import pytest

from impact_rt.config import ConfigError, DecodeConfig
from impact_rt.ddpm import sampling_schedule


def test_decode_config_allows_exactly_the_sampling_range():
    """The sampler respaces steps 0..992 (ᾱ ≥ 1e-4), so K may reach 993 and no further."""
    DecodeConfig(diffusion_steps=993).validate(256, 1000)
    assert len(sampling_schedule(1000, 993).timestep_map) == 993
    with pytest.raises(ConfigError, match=r"1\.\.993, got 994"):
        DecodeConfig(diffusion_steps=994).validate(256, 1000)
