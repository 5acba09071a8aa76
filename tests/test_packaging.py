"""The top-level `kernels/` package (the design card's) must be the `kernels` Python imports.

Hugging Face publishes a package of the same import name, `kernels`, which transformers >= 5.25
requires. Installed beside ours it shadows `kernels.fused_sampler` outside the repository root, and
inside it transformers imports our package in its place and fails (`cannot import name
'CUDAProperties' from 'kernels'`). pyproject.toml pins transformers below 5.25 for that reason."""
import importlib.metadata
from pathlib import Path

import pytest


def test_kernels_resolves_to_this_repository():
    import impact_rt
    import kernels
    assert Path(kernels.__file__).resolve().parent == Path(impact_rt.__file__).resolve().parent.parent / "kernels"


def test_no_hugging_face_kernels_distribution_is_installed():
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return
    pytest.fail(f"the `kernels` distribution {dist.version} is installed (pulled in by transformers >= 5.25?); "
                f"it shares its import name with our kernels/ package: pip uninstall kernels")
