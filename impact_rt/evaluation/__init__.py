"""Evaluation of generated audio: YAMNet-based FD, KL, IS and prompt adherence (`impact-rt eval`).

Cheap to import (the CLI builds its parser from here): everything but the exceptions is loaded on
first use, and the YAMNet model only when a `YamNet` is built.
"""

from importlib import import_module

from .errors import EvalError, UsageError

_LAZY = {
    "YamNet": "yamnet", "YamNetOutput": "yamnet", "load_class_names": "yamnet", "log_mel_patches": "yamnet",
    "evaluate": "evaluator", "analyse_folder": "evaluator",
    "frechet_distance": "metrics", "inception_score": "metrics", "kl_divergence": "metrics", "paired_kl": "metrics",
    "load_prompts_tsv": "adherence", "load_sidecar": "adherence", "default_prompts_path": "adherence",
    "load_audio": "audio",
}
__all__ = ["EvalError", "UsageError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
