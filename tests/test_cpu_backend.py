"""The fast CPU backend against the reference, with injected noise."""
import pytest
import torch

from impact_rt import cpu_backend
from impact_rt.config import DecodeConfig
from impact_rt.decoding import RecordedNoise, TorchNoise, decode
from impact_rt.model import IMPACT, randomize_
from impact_rt.config import preset
from impact_rt.reference import TorchBackend

from helpers import tiny_condition

pytestmark = pytest.mark.skipif(not cpu_backend.available()[0], reason=cpu_backend.available()[1])


def _model():
    torch.manual_seed(0)
    m = randomize_(IMPACT(preset("test")), seed=0, scale=0.5)
    # a well-behaved head output (as a trained head's), so that the DDPM loop does not amplify
    # rounding differences chaotically (x0 ∝ x/sqrt(ᾱ) with ᾱ ≈ 2e-9 at the first step)
    randomize_(m.head.final_layer, seed=1, scale=0.01)
    return m.eval()


@pytest.mark.parametrize("T", [1, 4, 16])
def test_fp32_end_to_end_parity(T):
    m = _model()
    cond, mask = tiny_condition(m, ["thunder", "rain on a roof"])
    nc, nm = m.null(2)
    dc = DecodeConfig(iterations=T, diffusion_steps=20, guidance=3.0)
    rec = RecordedNoise.wrap(TorchNoise([1, 2]))
    with torch.inference_mode():
        ref = decode(TorchBackend(m), m.cfg, dc, cond, mask, nc, nm, rec)
        fast = decode(cpu_backend.CpuBackend(m, None, None, "fp32"), m.cfg, dc, cond, mask, nc, nm, rec.replay())
    # fp32 both: a few ulps of the largest latent per step, accumulated over T iterations
    tol = 1e-5 * ref.abs().max().item()
    assert (fast - ref).abs().max().item() <= tol
    # and the bound is not vacuous: a 1 % change of guidance breaks it
    with torch.inference_mode():
        off = decode(TorchBackend(m), m.cfg, DecodeConfig(T, 20, guidance=3.03), cond, mask, nc, nm, rec.replay())
    assert (off - ref).abs().max().item() > tol


def test_bf16_follows_the_design_tolerance_rule():
    """|fast − ref_fp32| ≤ 2·|ref_bf16 − ref_fp32| + atol, in max norm, with ref_bf16 = the reference under bf16 autocast."""
    m = _model()
    cond, mask = tiny_condition(m, ["thunder"])
    nc, nm = m.null(1)
    dc = DecodeConfig(iterations=4, diffusion_steps=20, guidance=3.0)
    rec = RecordedNoise.wrap(TorchNoise([3]))
    with torch.inference_mode():
        ref = decode(TorchBackend(m), m.cfg, dc, cond, mask, nc, nm, rec)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16 = decode(TorchBackend(m), m.cfg, dc, cond, mask, nc, nm, rec.replay())
        fast = decode(cpu_backend.CpuBackend(m, None, None, "bf16"), m.cfg, dc, cond, mask, nc, nm, rec.replay())
    atol = 1e-3 * ref.abs().max().item()
    assert (fast - ref).abs().max() <= 2 * (ref16.float() - ref).abs().max() + atol


def test_pipeline_runs_on_the_cpu_backend():
    from impact_rt.pipeline import Pipeline
    p = Pipeline.random("test", backend="cpu")
    g = p.generate(["thunder"], seed=0, iterations=2, diffusion_steps=3)
    assert g.audio.shape == (1, 163840) and g.settings["backend"] == "cpu"


@pytest.mark.parametrize("isas,vendor,want", [
    (["avx2", "avx512", "amx-bf16"], "GenuineIntel", "bf16"),      # AMX: 5-7x the fp32 kernel
    (["avx2", "avx512", "avx512-bf16"], "AuthenticAMD", "bf16"),    # Zen 4: 1.75x the fp32 kernel
    (["avx2", "avx512", "avx512-bf16"], "GenuineIntel", "fp32"),    # measured slower than fp32 on the Xeon
    (["avx2", "avx512"], "AuthenticAMD", "fp32"),                  # no bf16 instructions: fp32
    (["avx2"], "", "fp32"),
])
def test_default_precision_is_bf16_only_where_it_was_measured_faster(isas, vendor, want):
    assert cpu_backend.default_precision(isas, vendor) == want


def test_info_says_which_precision_runs_by_default_here():
    ok, why = cpu_backend.available()
    assert ok and why.endswith(f"; {cpu_backend.default_precision()} by default here")


def test_generation_reports_its_precision():
    from impact_rt.pipeline import Pipeline
    for backend, precision, want in (("torch", None, "fp32"), ("cpu", "fp32", "fp32"), ("cpu", "bf16", "bf16")):
        g = Pipeline.random("test", backend=backend, precision=precision).generate(
            ["thunder"], seed=0, iterations=1, diffusion_steps=2)
        assert g.settings["precision"] == want


def _vae():
    from impact_rt.vae import AutoencoderKL
    torch.manual_seed(1)
    return AutoencoderKL("test").eval()


def test_bf16_encoder_copy_is_bitwise_autocast_over_the_fp32_encoder():
    """Linear weights cast once instead of on every call: nothing else may change."""
    m = _model()
    fast = cpu_backend.CpuBackend(m, None, None, "bf16")
    linears = lambda enc: [x for x in enc.modules() if isinstance(x, torch.nn.Linear)]  # noqa: E731
    assert all(x.weight.dtype == torch.bfloat16 for x in linears(fast.encoder))
    assert all(x.weight.dtype == torch.float32 for x in linears(m.encoder))  # the reference's stays fp32
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, m.cfg.num_tokens, m.cfg.token_dim, generator=g)
    cond, mask = tiny_condition(m, ["thunder", "rain"])
    order = torch.randperm(m.cfg.num_tokens, generator=g)
    vis, pred = order[:100].sort().values.expand(2, -1), order[100:140].sort().values.expand(2, -1)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = m.encoder(tokens, cond, mask, vis, pred).float()
        got = fast.encode(tokens, cond, mask, vis, pred)
    assert torch.equal(got, ref)


def test_channels_last_vae_decode_parity():
    """fp32: the same convolutions in another memory layout (oneDNN picks other kernels, hence another
    summation order: measured 1.3e-5 of the largest value, bound 1e-4); bf16: no further from the
    fp32 reference than the reference's own decoder under bf16 autocast (2x + atol, as the design rule)."""
    m, vae = _model(), _vae()
    z = torch.randn(2, 8, 256, 16, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = vae.decode(z)
        got = cpu_backend.CpuBackend(m, vae, None, "fp32").vae_decode(z)
        assert got.shape == ref.shape == (2, 1024, 64) and got.is_contiguous()
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16 = vae.decode(z).float()
            got16 = cpu_backend.CpuBackend(m, vae, None, "bf16").vae_decode(z).float()
        assert (got16 - ref).abs().max() <= 2 * (ref16 - ref).abs().max() + 1e-3 * ref.abs().max()
    # the reference's decoder is untouched (the copies carry the layout)
    assert vae.decoder.conv_in.weight.is_contiguous()


def test_cpu_audio_stage_matches_the_reference():
    from impact_rt.vocoder import GriffinLim
    m, vae = _model(), _vae()
    voc = GriffinLim(n_iter=4)
    tokens = torch.randn(1, m.cfg.num_tokens, m.cfg.token_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = TorchBackend(m, vae, voc).audio(tokens)
        got = cpu_backend.CpuBackend(m, vae, voc, "fp32").audio(tokens)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_cpu_audio_stage_runs_in_chunks_with_the_batch_result():
    """Five clips go through the VAE decoder and the vocoder two at a time (audio.AUDIO_CHUNK: faster
    than one batch once the spectrograms leave the caches); each clip's audio is what one batch of
    five gives, in order, up to the convolutions' summation order (fp32)."""
    from impact_rt import audio
    from impact_rt.vocoder import GriffinLim
    m, vae = _model(), _vae()
    fast = cpu_backend.CpuBackend(m, vae, GriffinLim(n_iter=2), "fp32")
    tokens = torch.randn(5, m.cfg.num_tokens, m.cfg.token_dim, generator=torch.Generator().manual_seed(4))
    sizes = []
    inner = fast._audio
    fast._audio = lambda t: sizes.append(len(t)) or inner(t)
    with torch.inference_mode():
        got = fast.audio(tokens)
        whole = inner(tokens)
    assert audio.AUDIO_CHUNK == 2 and sizes == [2, 2, 1]
    assert got.shape == whole.shape == (5, audio.N_SAMPLES)
    assert (got - whole).abs().max() <= 1e-4 * whole.abs().max()
