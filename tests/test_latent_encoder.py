import torch

from impact_rt.latent_encoder import key_bias

from helpers import tiny_condition, tiny_model


def _inputs(model, b=2, visible=10, predicted=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = model.cfg.num_tokens
    tokens = torch.randn(b, n, model.cfg.token_dim, generator=g)
    order = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
    cond, mask = tiny_condition(model, ["rain on a roof", "dog"][:b])
    return tokens, cond, mask, order[:, n - visible:], order[:, n - visible - predicted:n - visible]


def test_enc1_drops_masked_tokens():
    model = tiny_model()
    enc = model.encoder
    tokens, cond, mask, vis, pred = _inputs(model, visible=10)
    lengths = []
    hook = enc.encoder_blocks[0].register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    with torch.no_grad():
        h = enc(tokens, cond, mask, vis, pred)
    hook.remove()
    assert lengths == [model.cfg.text_len + 10]  # L + visible count, masked positions dropped
    assert h.shape == (2, 5, model.cfg.dim)


def test_enc2_runs_over_all_positions():
    model = tiny_model()
    tokens, cond, mask, vis, pred = _inputs(model, visible=0, predicted=7)
    lengths = []
    hook = model.encoder.decoder_blocks[0].register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    with torch.no_grad():
        model.encoder(tokens, cond, mask, vis, pred)
    hook.remove()
    assert lengths == [model.cfg.text_len + model.cfg.num_tokens]


def test_masked_token_values_do_not_leak():
    model = tiny_model()
    tokens, cond, mask, vis, pred = _inputs(model)
    other = tokens.clone()
    other.scatter_(1, pred[..., None].expand(-1, -1, tokens.shape[-1]), 123.0)  # change masked latents only
    with torch.no_grad():
        a = model.encoder(tokens, cond, mask, vis, pred)
        b = model.encoder(other, cond, mask, vis, pred)
        c = model.encoder(tokens, cond, mask, vis[:, 1:], pred)  # one fewer visible: must differ
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_padded_condition_positions_are_ignored():
    model = tiny_model()
    tokens, cond, mask, vis, pred = _inputs(model)
    assert not mask.all()
    noisy = torch.where(mask[..., None], cond, torch.randn_like(cond) * 50)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(tokens, cond, mask, vis, pred),
                                   model.encoder(tokens, noisy, mask, vis, pred))


def test_key_bias_shape_and_values():
    m = torch.tensor([[True, False]])
    b = key_bias(m, 3, torch.float32)
    assert b.shape == (1, 1, 1, 5)
    assert b[0, 0, 0, 0] == 0 and b[0, 0, 0, 1] < -1e30 and (b[0, 0, 0, 2:] == 0).all()
