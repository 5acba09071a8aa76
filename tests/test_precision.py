"""The trainers' autocast choice: bf16 only where the hardware multiplies it natively."""
import pytest
import torch

from training import precision

AVX2 = frozenset({"sse2", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_bf16", "amx_tile"}


def test_auto_is_bf16_only_on_cpus_that_have_it():
    assert precision.resolve("auto", "cpu", flags=AVX2) == "fp32"
    assert precision.resolve("auto", "cpu", flags=AVX512_BF16) == "bf16"
    assert precision.resolve("auto", "cpu", flags=AMX) == "bf16"
    assert precision.resolve("auto", torch.device("cuda", 0), flags=AVX2) == "bf16"


def test_explicit_choices_are_kept_and_emulated_bf16_is_warned(capsys):
    assert precision.resolve("fp32", "cpu", flags=AMX) == "fp32"
    assert precision.resolve("bf16", "cpu", flags=AVX512_BF16) == "bf16"
    assert capsys.readouterr().err == ""
    assert precision.resolve("bf16", "cpu", flags=AVX2, who="train_vae") == "bf16"
    err = capsys.readouterr().err
    assert err.startswith("train_vae: warning: bf16") and err.count("\n") == 1


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        precision.resolve("fp16", "cpu", flags=AVX2)


def test_cpu_flags_parse_proc_cpuinfo(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 avx512_bf16\n\n")
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_flags(str(p)) == {"fpu", "sse2", "avx2", "avx512_bf16"}
        assert precision.cpu_flags(str(tmp_path / "missing")) is None
    finally:
        precision.cpu_flags.cache_clear()
    own = precision.cpu_flags()                                          # this machine's own flags
    assert precision.native_bf16("cpu") == (own is None or bool(own & set(precision.NATIVE_BF16_FLAGS)))
