"""The backend registry: which backends exist, which run on this machine, and why not.

Each backend lives in its own module exposing ``available() -> (ok, reason)`` and
``load_backend(model, vae, vocoder, *, bundle_path, device, precision)`` returning an object
with the compute steps of ``decoding.Backend``.
"""
from __future__ import annotations

import importlib

MODULES = {
    "torch": "impact_rt.reference",
    "cpu": "impact_rt.cpu_backend",
    "onnxruntime": "impact_rt.ort_backend",
    "tensorrt": "impact_rt.trt_backend",
    "cuda": "impact_rt.cuda_backend",
}
BACKENDS = ("auto", *MODULES)    # what --backend takes (torch-free, so that the CLI's parser is quick)
ISSUE = {"cpu": 5, "onnxruntime": 4, "tensorrt": 4, "cuda": 6}


def _module(name: str):
    try:
        return importlib.import_module(MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == MODULES[name]:
            return None
        raise


def available(name: str) -> tuple[bool, str]:
    """Whether one backend runs here, and why not (imports only that backend's module)."""
    mod = _module(name)
    if mod is None:
        return False, f"the {name} backend is not implemented yet (issue {ISSUE[name]})"
    ok, why = mod.available()
    return bool(ok), why


def precisions(name: str) -> tuple[str, ...]:
    """The compute precisions one backend accepts (its module's ``PRECISIONS``; fp32 only without one)."""
    mod = _module(name)
    return tuple(getattr(mod, "PRECISIONS", ("fp32",))) if mod is not None else ()


def availability() -> dict[str, tuple[bool, str]]:
    return {name: available(name) for name in MODULES}


def loader(name: str):
    mod = _module(name)
    if mod is None:
        raise KeyError(name)
    return mod.load_backend


def auto_order() -> list[str]:
    """Preference of ``--backend auto``: the fastest that runs here."""
    return ["tensorrt", "cuda", "cpu", "torch"]
