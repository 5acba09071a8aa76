"""training/data/procedural.py: seeded specs, deterministic audio, and wind that sounds like its spec."""
import numpy as np
import pytest
from scipy import signal

from training.data.audio import CLIP_SAMPLES, SR
from training.data.procedural import KINDS, NatureSpec, nature_specs, slow_control, synthesise, varying_bandpass


def test_specs_are_deterministic_in_the_seed_and_captions_follow_the_parameters():
    a, b, c = nature_specs(5, 12), nature_specs(5, 12), nature_specs(6, 12)
    assert a == b and a != c
    assert len(a) == 12 * len(KINDS) and len({s.id for s in a}) == len(a)
    whistling = {"wind whistling", "wind howling"}
    assert {dict(s.params)["whistle"] for s in a} == {True, False}
    for s in a:
        assert s.categories == ("wind",)
        assert (s.caption in whistling) == dict(s.params)["whistle"]


def test_audio_is_a_full_clip_and_the_same_for_the_same_spec():
    s = nature_specs(1, 1)[0]
    y = synthesise(s)
    assert y.dtype == np.float32 and y.shape == (CLIP_SAMPLES,)
    assert abs(float(np.abs(y).max()) - 0.7) < 1e-6
    assert np.array_equal(y, synthesise(s))
    other = NatureSpec(s.id, s.kind, s.seed + 1, s.caption, s.params)
    assert not np.array_equal(y, synthesise(other))
    with pytest.raises(ValueError, match="unknown procedural kind"):
        synthesise(NatureSpec("x", "thunder", 0, "thunder"))


def _band_share(y, lo, hi):
    f, p = signal.welch(y, SR, nperseg=4096)
    return p[(f >= lo) & (f < hi)].sum() / p.sum()


def test_wind_is_low_band_noise_that_gusts():
    for whistle in (False, True):
        y = synthesise(NatureSpec("w", "wind", 3, "", (("whistle", whistle),))).astype(np.float64)
        assert _band_share(y, 0, 2000) > 0.9                   # air, not hiss
        env = np.sqrt(np.convolve(y ** 2, np.ones(SR // 10) / (SR // 10), "valid"))[:: SR // 10]
        assert env.max() / np.median(env) > 1.5                 # gusts: the level moves
    # a narrow band-pass whistles: its spectrum is peakier than the broad one's
    flat = lambda y: np.exp(np.mean(np.log(signal.welch(y, SR, nperseg=4096)[1][5:200] + 1e-20))) / \
        np.mean(signal.welch(y, SR, nperseg=4096)[1][5:200])
    rng = np.random.default_rng(0)
    noise, centre = rng.normal(0, 1, SR * 2), np.full(SR * 2, 600.0)
    assert flat(varying_bandpass(noise, centre, 12.0)) < flat(varying_bandpass(noise, centre, 1.5))


def test_varying_bandpass_passes_its_centre_and_slow_control_stays_in_range():
    t = np.arange(SR) / SR
    on, off = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 4000 * t)
    centre = np.full(SR, 500.0)
    assert np.std(varying_bandpass(on, centre, 4.0)[SR // 2:]) > 5 * np.std(varying_bandpass(off, centre, 4.0)[SR // 2:])
    c = slow_control(np.random.default_rng(1), SR * 4, 0.5, 0.2, 0.9)
    assert c.min() >= 0.2 - 1e-9 and c.max() <= 0.9 + 1e-9 and np.ptp(c) > 0.5
