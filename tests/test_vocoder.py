"""Vocoders (impact_rt.vocoder): HiFi-GAN presets, weight norm, files, the common interface."""

import json

import pytest
import torch

from impact_rt.audio import GriffinLim
from impact_rt.vocoder import PRESETS, HifiGan, HifiGanConfig, Vocoder, Vocos, count_parameters, load_vocoder


def test_audioldm_preset_names_and_shapes():
    cfg = PRESETS["audioldm"]
    assert cfg.upsample_rates == (5, 4, 2, 2, 2) and cfg.upsample_kernel_sizes == (16, 16, 8, 4, 4)
    assert cfg.upsample_initial_channel == 1024 and cfg.resblock_kernel_sizes == (3, 7, 11)
    assert cfg.resblock_dilation_sizes == ((1, 3, 5),) * 3
    with torch.device("meta"):
        m = HifiGan("audioldm")
    assert m.hop_length == 160
    sd = m.state_dict()
    expected = {
        "conv_pre.weight": (1024, 64, 7),
        "ups.0.weight": (1024, 512, 16),
        "ups.4.weight": (64, 32, 4),
        "resblocks.0.convs1.2.weight": (512, 512, 3),
        "resblocks.14.convs2.2.weight": (32, 32, 11),
        "conv_post.weight": (1, 32, 7),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(m.resblocks) == 15 and "resblocks.15.convs1.0.weight" not in sd
    assert count_parameters(m) == 55_264_897


@pytest.mark.parametrize("preset", ["test", "small"])
def test_output_shape_and_range(preset):
    torch.manual_seed(0)
    m = HifiGan(preset).eval()
    with torch.no_grad():
        wav = m(torch.randn(2, 12, 64) - 4.0)
    assert wav.shape == (2, 12 * 160) and wav.abs().max() <= 1.0


def test_weight_norm_train_then_remove():
    torch.manual_seed(0)
    m = HifiGan("test", weight_norm=True)
    assert m.has_weight_norm
    assert "conv_pre.parametrizations.weight.original0" in m.state_dict()
    x = torch.randn(1, 8, 64)
    with torch.no_grad():
        y = m(x)
        m.remove_weight_norm()
        assert not m.has_weight_norm
        assert "conv_pre.weight" in m.state_dict()
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)


def test_save_load_bitwise_folds_weight_norm(tmp_path):
    torch.manual_seed(0)
    m = HifiGan("test", weight_norm=True)
    m.save_pretrained(str(tmp_path))
    info = json.loads((tmp_path / "vocoder.json").read_text())
    assert info["class"] == "HifiGan" and HifiGanConfig.from_dict(info["config"]) == m.config
    back = HifiGan.from_pretrained(str(tmp_path))
    assert not back.has_weight_norm
    m.remove_weight_norm()
    a, b = m.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(1, 6, 64)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_save_fp16_storage(tmp_path):
    from safetensors.torch import load_file

    m = HifiGan("test")
    m.save_pretrained(str(tmp_path), dtype=torch.float16)
    assert load_file(str(tmp_path / "vocoder.safetensors"))["conv_pre.weight"].dtype == torch.float16
    back = HifiGan.from_pretrained(str(tmp_path))
    assert back.conv_pre.weight.dtype == torch.float32
    assert torch.equal(back.conv_pre.weight, m.conv_pre.weight.half().float())


def test_common_vocoder_interface(tmp_path):
    HifiGan("test").save_pretrained(str(tmp_path))
    mel = torch.randn(2, 16, 64) - 4.0
    vocoders = [load_vocoder("griffinlim", n_iter=2), load_vocoder(str(tmp_path)), GriffinLim(n_iter=1)]
    for v in vocoders:
        assert isinstance(v.sample_rate, int) and v.hop_length == 160
        with torch.no_grad():
            assert v(mel).shape == (2, 16 * 160)
    _: Vocoder = vocoders[0]


def test_bf16_autocast_runs():
    m = HifiGan("test").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(1, 8, 64))
    assert y.shape == (1, 1280) and torch.isfinite(y.float()).all()


# ----------------------------------------------------------------------------- Vocos (frame rate)

def test_vocos_untrained_is_the_pseudo_inverse_with_noise_phases():
    """Before training the head's weights are zero: magnitude = the filterbank's pseudo-inverse,
    phases = white noise's, so the untrained vocoder is already a usable weight-free one."""
    from impact_rt.audio import istft
    v = Vocos("test").eval()
    mel = torch.randn(2, 12, 64) - 4.0
    with torch.no_grad():
        got = v(mel)
        base = torch.matmul(mel.exp(), v.mel_pinv.T).clamp_min(0.0)
        want = istft((base + 1e-5) * v.noise_phases(2, 12), v.window).clamp(-1, 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert got.shape == (2, 12 * 160)


def test_vocos_seeded_and_batch_independent():
    v = Vocos("test").eval()
    torch.nn.init.normal_(v.head.weight, std=0.05)
    mel = torch.randn(3, 20, 64) - 4.0
    with torch.no_grad():
        a, b = v(mel), v(mel)
        single = v(mel[1:2])
        other = Vocos("test", seed=1).eval()
        other.load_state_dict(v.state_dict())
        c = other(mel)
    assert torch.equal(a, b)
    torch.testing.assert_close(single[0], a[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, c)                                        # the seed draws the noise phases
    # a generator draws fresh phases per row (training)
    g = v.noise_phases(2, 20, generator=torch.Generator().manual_seed(5))
    assert g.shape == (2, 20, 513) and not torch.allclose(g[0], g[1])
    torch.testing.assert_close(g.abs(), torch.ones_like(g.abs()))


def test_vocos_noise_weight_chooses_between_noise_and_predicted_phases():
    v = Vocos("test").eval()
    mel = torch.randn(1, 8, 64) - 3.0
    phases = v.noise_phases(1, 8)
    with torch.no_grad():
        v.head.bias[3 * 513:] = -30.0               # softplus ~ 0: the predicted phase x + iy alone
        v.head.bias[513:2 * 513] = 1.0              # x = 1, y = 0: phase 0
        spec = v.spectrum(mel, phases)
    torch.testing.assert_close(torch.angle(spec), torch.zeros(1, 8, 513), rtol=0, atol=1e-6)


def test_vocos_files_and_bundle_dispatch(tmp_path):
    from impact_rt.vocoder import from_spec, neural_kind
    v = Vocos("test", seed=3).eval()
    torch.nn.init.normal_(v.head.weight, std=0.05)
    v.save_pretrained(str(tmp_path), dtype=torch.float16)
    info = json.loads((tmp_path / "vocoder.json").read_text())
    assert info["class"] == "Vocos" and info["dtype"] == "float16" and info["seed"] == 3
    w = load_vocoder(str(tmp_path))
    assert isinstance(w, Vocos) and w.seed == 3 and neural_kind(w) == "vocos"
    mel = torch.randn(1, 10, 64) - 4.0
    with torch.no_grad():
        ref = Vocos("test", seed=3).eval()                                # the fp16-rounded weights
        ref.load_state_dict({k: t.half().float() for k, t in v.state_dict().items()})
        torch.testing.assert_close(w(mel), ref(mel), rtol=1e-5, atol=1e-6)
    assert isinstance(from_spec(str(tmp_path), {"kind": "vocos"}), Vocos)
    with pytest.raises(ValueError, match="hifigan"):
        from_spec(str(tmp_path), {"kind": "hifigan"})
    with pytest.raises(ValueError, match="unknown vocoder kind"):
        from_spec(str(tmp_path), {"kind": "wavenet"})
    assert isinstance(from_spec(str(tmp_path), {"kind": "griffinlim", "n_iter": 2}), GriffinLim)


def test_vocos_bf16_autocast_runs():
    v = Vocos("test").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = v(torch.randn(1, 8, 64, dtype=torch.bfloat16) - 4.0)
    assert y.shape == (1, 1280) and y.dtype == torch.float32 and torch.isfinite(y).all()
