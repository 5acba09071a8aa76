"""Which backends this machine can run, and why not where it cannot."""
from __future__ import annotations

import importlib.util


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def availability() -> dict[str, tuple[bool, str]]:
    import torch
    out: dict[str, tuple[bool, str]] = {"torch": (True, f"eager PyTorch {torch.__version__} (reference)")}
    if not _has("onnxruntime"):
        out["onnxruntime"] = (False, "onnxruntime is not installed")
    else:
        out["onnxruntime"] = (False, "the ONNX Runtime backend is not implemented yet (issue 4)")
    if not _has("tensorrt"):
        out["tensorrt"] = (False, "tensorrt is not installed (it cannot be installed from PyPI here)")
    elif not torch.cuda.is_available():
        out["tensorrt"] = (False, "no CUDA device")
    else:
        out["tensorrt"] = (False, "the TensorRT backend is not implemented yet (issue 4)")
    if not torch.cuda.is_available():
        out["cuda"] = (False, "no CUDA device (torch.cuda.is_available() is False)")
    elif not _has("triton"):
        out["cuda"] = (False, "triton is not installed")
    else:
        out["cuda"] = (False, "the CUDA-graph backend is not implemented yet (issue 6)")
    return out
