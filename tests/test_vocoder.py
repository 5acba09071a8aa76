"""Vocoders (impact_rt.vocoder): HiFi-GAN presets, weight norm, files, the common interface."""

import json

import pytest
import torch

from impact_rt.audio import GriffinLim
from impact_rt.vocoder import PRESETS, HifiGan, HifiGanConfig, Vocoder, count_parameters, load_vocoder


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
