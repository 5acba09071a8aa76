"""Which autocast dtype a trainer runs under.

bf16 autocast is ~3x faster than fp32 for training on a CPU that multiplies bf16 natively
(AVX-512 BF16 or AMX), and on GPUs. On a CPU without it PyTorch emulates bf16, and it is far
slower than fp32: measured on a 2-core AVX2 EPYC (session 8), the VAE encoder took 116 s for
4 clips under bf16 autocast against 1.5 s in fp32. ``auto`` picks bf16 only where it is native;
an explicit ``bf16`` on such a CPU still runs, with a one-line warning.
"""
from __future__ import annotations

import sys
from functools import lru_cache

import torch

PRECISIONS = ("auto", "bf16", "fp32")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def native_bf16(device: torch.device | str, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 matrix products run natively on ``device`` (GPUs: yes; CPUs: by their flags;
    a CPU whose flags cannot be read: assumed yes, as PyTorch's own default would be)."""
    device = torch.device(device)
    if device.type != "cpu":
        return True
    flags = cpu_flags() if flags is None else flags
    return flags is None or any(f in flags for f in NATIVE_BF16_FLAGS)


def add_argument(ap, note: str = "") -> None:
    """The ``--precision`` option every trainer (and training.latents) takes."""
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="autocast dtype; auto: bf16 on a GPU or a CPU with AVX-512 BF16 / AMX" + note + ", else fp32")


def resolve(requested: str, device: torch.device | str, flags: frozenset[str] | None = None,
            who: str = "training") -> str:
    """'auto' | 'bf16' | 'fp32' → 'bf16' | 'fp32' for ``device``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    native = native_bf16(device, flags)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        print(f"{who}: warning: bf16 autocast on a CPU without AVX-512 BF16 or AMX is emulated and "
              f"much slower than fp32 here (use --precision auto or fp32)", file=sys.stderr)
    return requested
