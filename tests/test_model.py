import pytest
import torch

from impact_rt.config import ConfigError, DecodeConfig, ModelConfig, preset
from impact_rt.model import IMPACT

from helpers import tiny_model


@pytest.mark.parametrize("name,target", [("base", 193e6), ("large", 427e6)])
def test_paper_parameter_counts(name, target):
    with torch.device("meta"):
        counts = IMPACT(preset(name)).param_counts()
    assert abs(counts.total - target) / target < 0.05
    assert 19e6 < counts.diffusion_head < 21.5e6  # width 1024, depth 3


def test_unknown_preset_and_bad_config():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(dim=30, num_heads=4).validate()
    with pytest.raises(ConfigError, match="unknown model config"):
        ModelConfig.from_dict({"dim": 32, "bogus": 1})


@pytest.mark.parametrize("kwargs,match", [
    (dict(iterations=0), "iterations"), (dict(iterations=257), "iterations"),
    (dict(diffusion_steps=0), "diffusion steps"), (dict(diffusion_steps=1001), "diffusion steps"),
    (dict(guidance=float("nan")), "guidance"), (dict(guidance=-1.0), "guidance"),
    (dict(temperature=-0.1), "temperature"),
])
def test_decode_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DecodeConfig(**kwargs).validate(256)


def test_bad_condition_shape():
    model = tiny_model()
    with pytest.raises(ConfigError, match="text condition"):
        model.project_condition(torch.zeros(1, 77, model.cfg.text_dim), torch.ones(1, 77, dtype=torch.bool))


def test_null_condition_path():
    model = tiny_model()
    c, m = model.null(3)
    assert c.shape == (3, model.cfg.text_len, model.cfg.dim) and m.all()
    tokens = torch.randn(3, 256, 128)
    g = torch.Generator().manual_seed(0)
    loss = model.loss(tokens, None, None, generator=g)  # unconditional pre-training
    loss.backward()
    assert torch.isfinite(loss) and model.null_condition.grad.abs().sum() > 0
    assert model.text_proj.weight.grad is None  # never used without text


def test_caption_dropout_uses_null():
    model = tiny_model()
    tokens = torch.randn(2, 256, 128)
    states, mask = torch.randn(2, model.cfg.text_len, model.cfg.text_dim), torch.ones(2, model.cfg.text_len, dtype=torch.bool)
    a = model.loss(tokens, states, mask, drop=torch.tensor([True, True]), generator=torch.Generator().manual_seed(1))
    b = model.loss(tokens, None, None, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_one_training_step_lowers_loss():
    model = IMPACT(preset("test"))
    tokens = torch.randn(4, 256, 128)
    cond = torch.randn(4, model.cfg.text_len, model.cfg.text_dim)
    mask = torch.ones(4, model.cfg.text_len, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def fixed_loss():
        return model.loss(tokens, cond, mask, generator=torch.Generator().manual_seed(0))

    before = fixed_loss()
    for _ in range(3):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    assert fixed_loss().item() < before.item()
