"""impact-rt: a fast deployment runtime for IMPACT text-to-audio generation.

    from impact_rt import Pipeline

The public names load on first use, so that ``import impact_rt`` (and ``impact-rt --help``)
does not import torch.
"""
__version__ = "0.1.0"

_PUBLIC = {
    "Pipeline": ("impact_rt.pipeline", "Pipeline"),
    "Generation": ("impact_rt.pipeline", "Generation"),
    "ConfigError": ("impact_rt.config", "ConfigError"),
    "BundleError": ("impact_rt.bundle", "BundleError"),
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib
        module, attr = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'impact_rt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
