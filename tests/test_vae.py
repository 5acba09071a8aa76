"""KL-VAE (impact_rt.vae): presets, AudioLDM naming, shapes, scale factor, files."""

import json

import pytest
import torch

from impact_rt.vae import (PRESETS, AutoencoderKL, DiagonalGaussian, VAEConfig, count_parameters,
                           measure_scale_factor)


def meta_model(preset):
    with torch.device("meta"):
        return AutoencoderKL(preset)


def test_audioldm_preset_names_and_shapes():
    cfg = PRESETS["audioldm"]
    assert (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels, cfg.embed_dim) == (128, (1, 2, 4), 2, 8, 8)
    assert cfg.in_channels == 1 and cfg.double_z
    sd = meta_model("audioldm").state_dict()
    expected = {
        "encoder.conv_in.weight": (128, 1, 3, 3),
        "encoder.down.0.block.1.conv2.weight": (128, 128, 3, 3),
        "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.1.downsample.conv.weight": (256, 256, 3, 3),
        "encoder.mid.block_1.norm1.weight": (512,),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.norm_out.bias": (512,),
        "encoder.conv_out.weight": (16, 512, 3, 3),
        "quant_conv.weight": (16, 16, 1, 1),
        "post_quant_conv.weight": (8, 8, 1, 1),
        "decoder.conv_in.weight": (512, 8, 3, 3),
        "decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "decoder.up.2.block.2.conv1.weight": (512, 512, 3, 3),
        "decoder.up.2.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "decoder.conv_out.weight": (1, 128, 3, 3),
        "scale_factor": (),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "encoder.down.2.downsample.conv.weight" not in sd and "decoder.up.0.upsample.conv.weight" not in sd
    assert not any(".attn." in k for k in sd)  # attn_resolutions = []: attention only in the middle
    assert count_parameters(meta_model("audioldm")) == 55_376_873


def test_our_presets_have_no_attention():
    for name in ("small", "test"):
        assert not any("attn" in k for k in meta_model(name).state_dict())


@pytest.mark.parametrize("preset,frames", [("test", 1024), ("small", 128)])
def test_latent_geometry(preset, frames):
    torch.manual_seed(0)
    vae = AutoencoderKL(preset).eval()
    assert vae.downsample_factor == 4
    with torch.no_grad():
        mel = torch.randn(1, frames, 64) - 5.0
        post = vae.encode(mel)
        assert isinstance(post, DiagonalGaussian)
        assert post.mean.shape == post.logvar.shape == (1, 8, frames // 4, 16)
        out = vae.decode(post.mode())
    assert out.shape == (1, frames, 64) and torch.isfinite(out).all()


def test_test_preset_is_fast_to_build_and_run():
    vae = AutoencoderKL("test")
    assert count_parameters(vae) < 100_000
    rec, post = vae(torch.randn(2, 64, 32), generator=torch.Generator().manual_seed(0))
    assert rec.shape == (2, 64, 32) and post.kl().shape == (2,)


def test_posterior_kl_and_sampling():
    moments = torch.zeros(2, 16, 4, 4)
    post = DiagonalGaussian(moments)
    assert torch.allclose(post.kl(), torch.zeros(2))
    moments[:, :8] = 1.0  # mean 1, var 1: KL = 0.5 * mean^2 per element
    assert torch.allclose(DiagonalGaussian(moments).kl(), torch.full((2,), 0.5 * 8 * 16))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(post.sample(g1), post.sample(g2), rtol=0, atol=0)
    big = DiagonalGaussian(torch.cat([torch.zeros(1, 8, 64, 64), torch.full((1, 8, 64, 64), 2 * 0.6931)], 1))
    assert float(big.sample(torch.Generator().manual_seed(0)).std()) == pytest.approx(2.0, rel=0.02)


def test_measure_scale_factor():
    z = 3.0 * torch.randn(4, 8, 64, 16, generator=torch.Generator().manual_seed(0)) + 1.0
    assert measure_scale_factor(z) == pytest.approx(1 / 3, rel=0.01)
    assert measure_scale_factor(list(z)) == pytest.approx(measure_scale_factor(z), rel=1e-9)
    with pytest.raises(ValueError):
        measure_scale_factor(torch.ones(10))


def test_scaled_latents_roundtrip():
    vae = AutoencoderKL("test").eval()
    vae.set_scale_factor(0.25)
    mel = torch.randn(1, 32, 32)
    with torch.no_grad():
        z = vae.encode_latents(mel)
        torch.testing.assert_close(z, vae.encode(mel).mean * 0.25)
        torch.testing.assert_close(vae.decode_latents(z), vae.decode(vae.encode(mel).mean))


def test_default_scale_factor_is_one_until_measured():
    assert float(AutoencoderKL("test").scale_factor) == 1.0


def test_save_load_bitwise(tmp_path):
    torch.manual_seed(1)
    vae = AutoencoderKL("test")
    vae.set_scale_factor(0.8123)
    vae.save_pretrained(str(tmp_path))
    info = json.loads((tmp_path / "vae.json").read_text())
    assert info["class"] == "AutoencoderKL" and info["dtype"] == "float32"
    assert info["scale_factor"] == pytest.approx(0.8123)
    assert VAEConfig.from_dict(info["config"]) == vae.config
    back = AutoencoderKL.from_pretrained(str(tmp_path))
    a, b = vae.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not any(p.suffix not in (".json", ".safetensors") for p in tmp_path.iterdir())


def test_save_fp16_storage_fp32_compute(tmp_path):
    from safetensors.torch import load_file

    vae = AutoencoderKL("test")
    vae.set_scale_factor(0.8123)
    vae.save_pretrained(str(tmp_path), name="half", dtype=torch.float16)
    stored = load_file(str(tmp_path / "half.safetensors"))
    assert stored["encoder.conv_in.weight"].dtype == torch.float16
    assert stored["scale_factor"].dtype == torch.float32  # never rounded
    back = AutoencoderKL.from_pretrained(str(tmp_path), name="half")
    assert back.encoder.conv_in.weight.dtype == torch.float32
    assert torch.equal(back.encoder.conv_in.weight, vae.encoder.conv_in.weight.half().float())
    assert float(back.scale_factor) == pytest.approx(0.8123, rel=1e-7)


def test_mid_attention_matches_ldm_formula():
    from impact_rt.vae import AttnBlock

    torch.manual_seed(0)
    blk = AttnBlock(8, 4)
    x = torch.randn(2, 8, 5, 3)
    with torch.no_grad():
        h = blk.norm(x)
        q, k, v = (m(h).reshape(2, 8, 15) for m in (blk.q, blk.k, blk.v))
        w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * 8 ** -0.5, dim=2)  # [b, query, key]
        ref = x + blk.proj_out(torch.bmm(v, w.permute(0, 2, 1)).reshape(2, 8, 5, 3))
        torch.testing.assert_close(blk(x), ref, rtol=1e-5, atol=1e-5)
