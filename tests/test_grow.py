import pytest
import torch

from impact_rt.config import ModelConfig, preset
from impact_rt.model import IMPACT
from training.grow import deepen_encoder_state, deepen_layout, widen_head_state


def _model(width, depth=2):
    mc = ModelConfig(**{**preset("test").to_dict(), "head_width": width, "head_depth": depth})
    return IMPACT(mc)


@pytest.mark.parametrize("k", [2, 3])
def test_a_widened_head_computes_the_same_function(k):
    torch.manual_seed(0)
    narrow = _model(32)
    for p in narrow.parameters():       # trained-like weights: nothing zero (the zero init would hide errors)
        p.data.normal_(0, 0.3)
    wide = _model(32 * k)
    state = widen_head_state(narrow.state_dict(), 32, 32 * k, noise=0.05)
    wide.load_state_dict(state)
    x, c = torch.randn(7, narrow.cfg.token_dim), torch.randn(7, narrow.cfg.dim)
    t = torch.randint(0, 1000, (7,))
    a, b = narrow.head(x, t, c), wide.head(x, t, c)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().mean().item())
    # the copies are not identical (else they would get the same gradients and never grow apart)
    w = state["head.res_blocks.0.mlp.2.weight"]
    assert not torch.equal(w[:, :32], w[:, 32:64])
    # everything outside the head is untouched
    for name, v in narrow.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(state[name], v)


def test_a_widened_head_trains_its_copies_apart():
    torch.manual_seed(0)
    narrow = _model(32)
    for p in narrow.parameters():
        p.data.normal_(0, 0.3)
    wide = _model(64)
    wide.load_state_dict(widen_head_state(narrow.state_dict(), 32, 64, noise=0.05))
    x, c, t = torch.randn(9, wide.cfg.token_dim), torch.randn(9, wide.cfg.dim), torch.randint(0, 1000, (9,))
    wide.head(x, t, c).square().mean().backward()
    g = wide.head.res_blocks[0].mlp[0].weight.grad          # rows: hidden units and their copies
    assert not torch.allclose(g[:32], g[32:])


def test_widening_refuses_a_width_that_is_not_a_multiple():
    with pytest.raises(ValueError, match="not a multiple of 32"):
        widen_head_state(_model(32).state_dict(), 32, 48)


def test_deepen_layout_spreads_the_new_blocks():
    assert deepen_layout(4, 4) == [0, 1, 2, 3]
    assert deepen_layout(4, 6) == [0, 1, None, 2, 3, None]
    assert deepen_layout(2, 6) == [0, None, None, 1, None, None]
    with pytest.raises(ValueError, match="fewer than"):
        deepen_layout(4, 3)


def test_a_deepened_encoder_computes_the_same_function():
    torch.manual_seed(0)
    mc = ModelConfig(**{**preset("test").to_dict(), "enc_depth": 2, "dec_depth": 1})
    shallow = IMPACT(mc)
    for p in shallow.parameters():       # trained-like weights: nothing zero
        p.data.normal_(0, 0.2)
    deep = IMPACT(ModelConfig(**{**mc.to_dict(), "enc_depth": 3, "dec_depth": 3}))
    state = deepen_encoder_state(shallow.state_dict(), 3, 3)
    deep.load_state_dict(state)          # strict: every tensor of the deeper model is there, no other
    b, n = 2, mc.num_tokens
    tokens, cond = torch.randn(b, n, mc.token_dim), torch.randn(b, mc.text_len, mc.dim)
    cmask = torch.tensor([[True] * (mc.text_len - 1) + [False]] * b)
    order = torch.stack([torch.randperm(n) for _ in range(b)])
    with torch.no_grad():
        a = shallow.encoder(tokens, cond, cmask, order[:, 5:], order[:, :5])
        d = deep.encoder(tokens, cond, cmask, order[:, 5:], order[:, :5])
    torch.testing.assert_close(d, a)
    # a new block: its output projections are zero (so it adds nothing) and they get gradients
    assert deepen_layout(2, 3) == [0, 1, None]
    new = deep.encoder.encoder_blocks[2]
    assert not new.attn.proj.weight.any() and not new.mlp.fc2.weight.any()
    assert torch.equal(new.attn.qkv.weight, shallow.encoder.encoder_blocks[1].attn.qkv.weight)
    deep.encoder(tokens, cond, cmask, order[:, 5:], order[:, :5]).square().mean().backward()
    assert new.attn.proj.weight.grad.abs().sum() > 0 and new.mlp.fc2.weight.grad.abs().sum() > 0
