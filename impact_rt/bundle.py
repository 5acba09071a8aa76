"""Model bundles: a folder with ``config.json``, safetensors weights and a model card.

    config.json          format, version, model config, conditioner spec, VAE / vocoder, defaults
    impact.safetensors   text projection, null condition, latent encoder, diffusion head
    vae.safetensors      the VAE (+ vae.json; only the decoder is used at inference)
    vocoder.safetensors  a trained vocoder, HiFi-GAN or Vocos (+ vocoder.json), absent for Griffin-Lim
    scorer.safetensors   optional: the best-of-K reranking scorer (+ scorer.json; impact_rt.rerank)
    MODEL_CARD.md

Weights are safetensors, never pickle. ``bundle_hash`` is the sha256 over every file's name and
content: the key of every cache built from a bundle.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, DecodeConfig, ModelConfig
from .fileio import atomic_write_bytes

FORMAT = "impact-rt-bundle"
VERSION = 1
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "models" / "default"
MAX_CANDIDATES = 64


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or corrupt. One-line message."""


@dataclass
class BundleConfig:
    model: ModelConfig
    conditioner: dict
    vocoder: dict                 # {"kind": "hifigan" | "vocos"} or {"kind": "griffinlim", "n_iter": 4, ...}
    decode: DecodeConfig
    vae: dict | None = None       # {"kind": "file"} or {"kind": "random", "preset": "test"}
    rerank: dict | None = None    # {"candidates": K}: best of K by scorer.safetensors (impact_rt.rerank)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": self.model.to_dict(),
                "conditioner": self.conditioner, "vae": self.vae or {"kind": "file"}, "vocoder": self.vocoder,
                "decode": {k: getattr(self.decode, k) for k in ("iterations", "diffusion_steps", "guidance", "temperature")
                           + (("refine", "refine_share") if self.decode.refine else ())},
                **({"rerank": self.rerank} if self.rerank else {})}

    @property
    def candidates(self) -> int:
        """The default number of candidates per clip (1: no reranking)."""
        return int((self.rerank or {}).get("candidates", 1))

    @classmethod
    def from_json(cls, d: dict) -> "BundleConfig":
        if not isinstance(d, dict):
            raise BundleError(f"config.json must hold a JSON object, not a {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise BundleError(f"not an impact-rt bundle (format {d.get('format')!r})")
        if d.get("version") != VERSION:
            raise BundleError(f"bundle version {d.get('version')} is not supported (expected {VERSION})")
        rerank = d.get("rerank")
        if rerank is not None:
            k = rerank.get("candidates") if isinstance(rerank, dict) else None
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CANDIDATES:
                raise BundleError(f"config.json: rerank.candidates must be an integer in 1..{MAX_CANDIDATES}, got {k!r}")
        for key, optional in (("model", False), ("conditioner", False), ("vocoder", False), ("decode", True),
                              ("vae", True)):
            if not (isinstance(d.get(key), dict) or (optional and d.get(key) is None)):
                raise BundleError(f"config.json: {key!r} must be a JSON object, got {_short(d.get(key))}")
        try:
            model = ModelConfig.from_dict(d["model"])
            decode = DecodeConfig(**(d.get("decode") or {})).validate(model.num_tokens, model.train_steps)
        except (ConfigError, TypeError) as e:
            raise BundleError(f"config.json: {e}") from None
        return cls(model, d["conditioner"], d["vocoder"], decode, d.get("vae"), rerank)


def _short(value, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def load_module(factory, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``factory()`` built on the meta device (no allocation, no random initialisation: ~0.2 s of a
    CLI run went to initialising weights that the files then overwrote), every tensor then taken
    from ``state``, cast to the dtype the module declares. Strict: missing, unexpected or
    mis-shaped keys raise load_state_dict's RuntimeError, and so does a tensor the state does not
    give (a non-persistent buffer), rather than leaving it on the meta device."""
    with torch.device("meta"):
        module = factory()
    declared = module.state_dict()
    state = {k: v.to(declared[k].dtype) if k in declared and v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__}: {len(left)} tensors not given by the weights ({', '.join(left[:3])})")
    return module


def save_generator(model: torch.nn.Module, directory: Path, dtype: torch.dtype | None = None) -> None:
    from safetensors.torch import save
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(directory) / "impact.safetensors", save(tensors))


def write_config(cfg: BundleConfig, directory: Path) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(directory) / "config.json", (json.dumps(cfg.to_json(), indent=2) + "\n").encode())


def read_config(directory: str | Path) -> BundleConfig:
    d = Path(directory)
    p = d / "config.json"
    if d.is_file():
        raise BundleError(f"model bundle {d} is a file; pass the bundle's folder")
    if not d.is_dir():
        raise BundleError(f"model bundle not found: {d}")
    if not p.is_file():
        raise BundleError(f"model bundle {d} has no config.json")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"model bundle {d}: config.json is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    try:
        return BundleConfig.from_json(raw)
    except (KeyError, TypeError) as e:
        raise BundleError(f"model bundle {d}: config.json is incomplete ({e})") from None
    except BundleError as e:
        raise BundleError(f"model bundle {d}: {e}") from None


def check_finite(module: torch.nn.Module, what: str) -> None:
    """Refuse weights holding NaN or infinity (a corrupt file that still parses): they would give
    silent or full-scale garbage audio, not an error."""
    for name, t in module.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise BundleError(f"{what}: {bad} non-finite value(s) (NaN or infinity) in {name}")


def load_generator_state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    p = Path(directory) / "impact.safetensors"
    if not p.is_file():
        raise BundleError(f"model bundle {directory} has no impact.safetensors")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"model bundle {directory}: impact.safetensors is corrupt ({str(e).splitlines()[0]})") from None


def bundle_hash(directory: str | Path) -> str:
    d = Path(directory)
    h = hashlib.sha256()
    for p in sorted(q for q in d.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(d)).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
