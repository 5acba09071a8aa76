"""The user-facing pipeline: prompts → waveforms.

    pipe = Pipeline.from_pretrained()            # the shipped bundle, or a folder
    out = pipe.generate(["thunder"], seed=0)     # Generation: audio [B, 163840] float32 @ 16 kHz
    out.save("thunder.wav")
"""
from __future__ import annotations

import os
import secrets
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import bundle as B
from .backends import BACKENDS
from .config import ConfigError, DecodeConfig, preset
from .decoding import DecodeTables, NoiseSource, TorchNoise, decode, pass_sources
from .model import IMPACT, randomize_
from .patchify import tokens_to_latent
from .text_conditioner import HashConditioner, PromptTable, TextConditioner, build_conditioner

SAMPLE_RATE = 16000
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2 ** 63 - 1


def check_prompts(prompts, what: str = "prompt") -> list[str]:
    """Validate prompts; over-long ones are truncated with a warning. ``what`` names them in errors."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (bytes, bytearray)) or not hasattr(prompts, "__iter__"):
        raise ConfigError(f"{what}s must be a string or a list of strings, not {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ConfigError(f"no {what} given")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ConfigError(f"{what} {i + 1} is not text ({type(p).__name__})")
        if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n" for ch in p):
            raise ConfigError(f"{what} {i + 1} contains control characters")
        if not p.strip():
            raise ConfigError(f"{what} {i + 1} is empty")
        if len(p) > MAX_PROMPT_CHARS:
            warnings.warn(f"{what} {i + 1} has {len(p)} characters; truncated to {MAX_PROMPT_CHARS}", stacklevel=3)
            p = p[:MAX_PROMPT_CHARS]
        out.append(" ".join(p.split()))
    return out


def _negatives(negative, n: int) -> list[str] | None:
    """None, one negative prompt for all n prompts, or a list of n."""
    if negative is None:
        return None
    if isinstance(negative, str):
        return check_prompts([negative], "negative prompt") * n
    negative = list(negative)
    if len(negative) != n:
        raise ConfigError(f"{len(negative)} negative prompts for {n} prompts")
    return check_prompts(negative, "negative prompt")


@dataclass
class Generation:
    audio: np.ndarray                # float32 [B, samples]
    sample_rate: int
    prompts: list[str]
    seeds: list[int]
    timings: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    latents: np.ndarray | None = None  # float32 [B, C, T, F]: the scaled latents the VAE decoded

    def save(self, path: str | os.PathLike, index: int = 0, *, format: str | None = None,
             force: bool = False) -> Path:
        """Write clip ``index`` atomically (temp file + rename); refuse to overwrite unless ``force``.
        ``format`` ("wav", "flac", "ogg"): the file's format; by default the one its extension names."""
        from .audio import save_audio
        p = Path(path)
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists (use force=True / --force to overwrite)")
        if not p.absolute().parent.is_dir():
            raise FileNotFoundError(f"folder does not exist: {p.absolute().parent}")
        save_audio(str(p), self.audio[index], self.sample_rate, format=format)
        return p


class Pipeline:
    """Text → audio. Safe to share between threads: per-call state lives in ``generate``."""

    def __init__(self, model: IMPACT, conditioner: TextConditioner, vae, vocoder, defaults: DecodeConfig,
                 backend: str = "torch", name: str = "", device: str = "cpu", bundle_path=None,
                 precision: str | None = None, scorer=None, candidates: int = 1):
        from .backends import loader
        self.model, self.conditioner, self.vae, self.vocoder = model, conditioner, vae, vocoder
        self.scorer, self.default_candidates = scorer, candidates     # best-of-K reranking (impact_rt.rerank)
        self.defaults, self.backend_name, self.name = defaults, backend, name
        self.device = torch.device(device)
        self.backend = loader(backend)(model, vae, vocoder, bundle_path=bundle_path, device=device,
                                       precision=precision)
        if hasattr(self.backend, "wrap_conditioner"):  # e.g. the text encoder as an ONNX graph
            self.conditioner = self.backend.wrap_conditioner(conditioner)
        self._tables: dict[tuple, DecodeTables] = {}

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, backend: str = "auto",
                        device: str | None = None, precision: str | None = None,
                        prompt_table: str | os.PathLike | None = None) -> "Pipeline":
        """Load a model bundle (default: the one shipped in the package).

        ``prompt_table``: a file written by ``text_conditioner.write_prompt_table`` with the bundle's
        own conditioner, used in its place (only the prompts it holds can be generated)."""
        backend = resolve_backend(backend)
        device = check_device(device or "cpu")
        if path is None:
            if not (B.DEFAULT_BUNDLE / "config.json").is_file():
                warnings.warn("no trained model bundle is shipped yet: using random `test` weights "
                              "(the audio is noise); pass --model DIR for a trained bundle", stacklevel=2)
                return cls.random("test", device=device, backend=backend, precision=precision)
            path = B.DEFAULT_BUNDLE
        return cls._load(Path(path), backend, device, precision, prompt_table)

    @classmethod
    def _load(cls, path: Path, backend: str, device: str, precision: str | None = None,
              prompt_table: str | os.PathLike | None = None) -> "Pipeline":
        from .vae import AutoencoderKL
        from .vocoder import from_spec as vocoder_from_spec
        cfg = B.read_config(path)
        try:
            model = B.load_module(lambda: IMPACT(cfg.model), B.load_generator_state(path))
        except RuntimeError as e:
            raise B.BundleError(f"model bundle {path}: weights do not match config.json ({str(e).splitlines()[0]})") from None
        B.check_finite(model, f"model bundle {path}: impact.safetensors")
        if prompt_table is None:
            try:
                conditioner = build_conditioner(cfg.conditioner, device=device)
            except ConfigError as e:
                raise B.BundleError(f"model bundle {path}: config.json: conditioner: {e}") from None
        else:
            conditioner = PromptTable(prompt_table)
            theirs = {k: v for k, v in conditioner.source.items() if not k.endswith("path")}
            ours = {k: v for k, v in cfg.conditioner.items() if not k.endswith("path")}
            if theirs != ours:
                raise B.BundleError(f"prompt table {prompt_table} was written by conditioner {theirs}; "
                                    f"model bundle {path} uses {ours}")
        if (conditioner.length, conditioner.dim) != (cfg.model.text_len, cfg.model.text_dim):
            raise B.BundleError(f"model bundle {path}: conditioner gives [{conditioner.length}, {conditioner.dim}], "
                                f"model expects [{cfg.model.text_len}, {cfg.model.text_dim}]")
        from .rerank import Scorer
        scorer = Scorer.from_bundle(path)
        if cfg.candidates > 1 and scorer is None:
            raise B.BundleError(f"model bundle {path}: config.json asks for {cfg.candidates} candidates "
                                f"but the bundle has no scorer.safetensors")
        try:
            vae = AutoencoderKL.from_pretrained(str(path), "vae")
            vocoder = vocoder_from_spec(str(path), cfg.vocoder)
        except KeyError as e:
            raise B.BundleError(f"model bundle {path}: a component's .json lacks the field {e}") from None
        except (OSError, ValueError, RuntimeError) as e:
            raise B.BundleError(f"model bundle {path}: {str(e).splitlines()[0]}") from None
        B.check_finite(vae, f"model bundle {path}: vae.safetensors")
        B.check_finite(vocoder, f"model bundle {path}: vocoder")
        if scorer is not None:
            B.check_finite(scorer, f"model bundle {path}: scorer.safetensors")
        return cls(model.eval().to(device), conditioner, vae.eval().to(device), vocoder, cfg.decode,
                   backend, name=str(path), device=device, bundle_path=path, precision=precision,
                   scorer=None if scorer is None else scorer.to(device), candidates=cfg.candidates)

    @classmethod
    def random(cls, name: str = "test", seed: int = 0, device: str = "cpu", backend: str = "torch",
               precision: str | None = None) -> "Pipeline":
        """Random weights of a preset (latency runs, tests): HashConditioner, test VAE, Griffin-Lim."""
        from .audio import GriffinLim
        from .vae import AutoencoderKL
        device = check_device(device)
        cfg = preset(name)
        torch.manual_seed(seed)
        model = randomize_(IMPACT(cfg), seed=seed, scale=0.5).eval()
        vae = AutoencoderKL("test").eval()
        conditioner = HashConditioner(cfg.text_len, cfg.text_dim, seed=seed)
        return cls(model.to(device), conditioner, vae.to(device), GriffinLim(),
                   DecodeConfig(iterations=16, diffusion_steps=100), backend, name=f"random:{name}", device=device,
                   precision=precision)

    # -- generation ---------------------------------------------------------------------------
    def decode_config(self, iterations=None, diffusion_steps=None, guidance=None, temperature=None,
                      refine=None) -> DecodeConfig:
        d = self.defaults
        dc = DecodeConfig(iterations=d.iterations if iterations is None else iterations,
                          diffusion_steps=d.diffusion_steps if diffusion_steps is None else diffusion_steps,
                          guidance=d.guidance if guidance is None else _number(guidance, "guidance"),
                          temperature=d.temperature if temperature is None else _number(temperature, "temperature"),
                          refine=d.refine if refine is None else refine, refine_share=d.refine_share)
        return dc.validate(self.model.cfg.num_tokens, self.model.cfg.train_steps)

    def _tables_for(self, dc: DecodeConfig) -> DecodeTables:
        key = (dc.iterations, dc.diffusion_steps, dc.guidance)
        if key not in self._tables:
            self._tables[key] = DecodeTables.build(self.model.cfg, dc)
        return self._tables[key]

    def generate(self, prompts, *, seed: int | list[int] | None = None, iterations: int | None = None,
                 diffusion_steps: int | None = None, guidance: float | None = None,
                 temperature: float | None = None, progress=None, noise: NoiseSource | None = None,
                 negative_prompt: str | list[str] | None = None, candidates: int | None = None,
                 refine: int | None = None) -> Generation:
        """Generate one 10.24 s clip per prompt.

        ``seed``: an int (sample i gets seed + i), a list (one per prompt) or None (random).
        ``negative_prompt``: text whose condition replaces the learned null condition in CFG's
        unconditional branch (one for all prompts, or one per prompt), so guidance steers away from
        it; None keeps the null condition. No effect at guidance 1 (no unconditional branch).
        ``candidates``: decode K clips per prompt (candidate 0 from the seed itself, the others from
        seeds derived from it) and keep the one the bundle's scorer rates closest to the prompt
        (default: the bundle's ``rerank.candidates``, 1 without a scorer). Only the kept clips are
        turned into audio; the decoding costs K times as much.
        ``refine``: re-masking passes after the decode (default: the bundle's ``decode.refine``):
        each re-masks ``refine_share`` of the tokens and decodes them again, at up to one more
        decode's cost a pass (impact_rt.decoding).
        ``progress``: optional callable(iteration, total). ``noise``: injected noise (parity tests;
        it must hold K·B rows when reranking).
        """
        from .rerank import candidate_seeds, choose
        if self.backend is None:
            raise RuntimeError("this Pipeline is closed (close() or the end of its with block); load a new one")
        prompts = check_prompts(prompts)
        dc = self.decode_config(iterations, diffusion_steps, guidance, temperature, refine)
        k = self.candidates(candidates)
        n = len(prompts)
        seeds = _seeds(seed, n)
        negatives = _negatives(negative_prompt, n)
        if negatives is not None and dc.guidance == 1.0:
            warnings.warn("a negative prompt has no effect at guidance 1 (there is no unconditional branch)",
                          stacklevel=2)
        seeds_k = candidate_seeds(seeds, k)     # K rows per prompt, grouped: [p0 c0, p0 c1, …, p1 c0, …]
        timings = {}
        t0 = time.perf_counter()
        with torch.inference_mode():
            states, mask = self.conditioner.encode(prompts)
            if k > 1:
                states, mask = states.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
            cond, cmask = self.backend.project(states.to(self.device), mask.to(self.device))
            if negatives is None:
                null_c, null_m = self.backend.null(n * k)
            else:   # each negative encoded once, then repeated for its prompt's K rows
                n_states, n_mask = self.conditioner.encode(negatives)
                if k > 1:
                    n_states, n_mask = n_states.repeat_interleave(k, 0), n_mask.repeat_interleave(k, 0)
                null_c, null_m = self.backend.project(n_states.to(self.device), n_mask.to(self.device))
            timings["condition_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            if noise is None and hasattr(self.backend, "decode_all"):  # CUDA graphs: the whole loop replayed
                orders = [src.order(n * k, self.model.cfg.num_tokens)
                          for src in pass_sources(TorchNoise(seeds_k, self.device), dc.refine)]
                tokens = self.backend.decode_all(self.model.cfg, dc, cond, cmask, null_c, null_m, seeds_k, orders[0],
                                                 self._tables_for(dc), progress, refine_orders=orders[1:])
            else:
                tokens = decode(self.backend, self.model.cfg, dc, cond, cmask, null_c, null_m,
                                noise or TorchNoise(seeds_k, self.device), self._tables_for(dc), progress)
            timings["decode_s"] = time.perf_counter() - t1
            rerank = {}
            if k > 1:
                t3 = time.perf_counter()
                scores = self.scorer.score(tokens.float(), states.to(self.device), mask.to(self.device))
                pick = choose(scores, k)
                tokens = tokens[pick]
                timings["rerank_s"] = time.perf_counter() - t3
                rerank = {"candidates": k, "chosen": (pick % k).tolist(),
                          "scores": [round(float(x), 4) for x in scores[pick]]}
            t2 = time.perf_counter()
            wav = self.backend.audio(tokens)
            timings["audio_s"] = time.perf_counter() - t2
            if not bool(torch.isfinite(wav).all()):
                raise RuntimeError("the generated audio holds NaN or infinity: the model's weights or the decoding "
                                   "settings are broken")
        timings["total_s"] = time.perf_counter() - t0
        cfg = self.model.cfg
        latents = tokens_to_latent(tokens.float(), cfg)
        # a waveform lives in [-1, 1], as a file must hold it: the vocoder's output beyond it is clipped
        # here, not only on saving, and each clip's clipped share is reported (the shipped model clips
        # ~2 % of its samples: its VAE decoder sometimes decodes frames louder than any training clip)
        audio = wav.float().cpu().numpy()
        magnitude = np.abs(audio)
        clipped = [round(float(x), 6) for x in (magnitude > 1.0).mean(axis=1)]
        peak = [float(f"{x:.4g}") for x in magnitude.max(axis=1)]
        np.clip(audio, -1.0, 1.0, out=audio)
        return Generation(audio, SAMPLE_RATE, prompts, seeds, timings,
                          {"iterations": dc.iterations, "diffusion_steps": dc.diffusion_steps,
                           "guidance": dc.guidance, "temperature": dc.temperature,
                           **({"refine": dc.refine, "refine_share": dc.refine_share} if dc.refine else {}),
                           "backend": self.backend_name,
                           "precision": getattr(self.backend, "precision", "fp32"),
                           **({} if negatives is None else {"negative_prompts": negatives}), **rerank,
                           "clipped": clipped, "peak": peak},
                          latents.cpu().numpy())

    def candidates(self, candidates: int | None = None) -> int:
        """The number of candidates a generation decodes per prompt (validated)."""
        k = self.default_candidates if candidates is None else candidates
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= B.MAX_CANDIDATES:
            raise ConfigError(f"candidates must be an integer in 1..{B.MAX_CANDIDATES}, got {k!r}")
        if k > 1 and self.scorer is None:
            raise ConfigError(f"{k} candidates need a reranking scorer, and model {self.name} has none")
        return int(k)

    # -- resources ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release sessions, engines and device memory held by the backend."""
        if self.backend is not None and hasattr(self.backend, "close"):
            self.backend.close()
        self.backend = None
        self._tables.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _seeds(seed, n: int) -> list[int]:
    if seed is None:
        base = secrets.randbelow(2 ** 31)
        return [base + i for i in range(n)]
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ConfigError(f"got {len(seed)} seeds for {n} prompts")
        return [_check_seed(s) for s in seed]
    base = _check_seed(seed)
    _check_seed(base + n - 1)                   # sample i gets seed + i: the last must fit too
    return [base + i for i in range(n)]


def _check_seed(s) -> int:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= MAX_SEED:
        raise ConfigError(f"seed must be a non-negative integer, got {s!r}")
    return int(s)


def _number(x, name: str) -> float:
    if isinstance(x, bool):
        raise ConfigError(f"{name} must be a number, got {x!r}")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {x!r}") from None


def check_device(device) -> str:
    """``device`` as given, when it names a device that runs here (cpu, cuda, cuda:N); else ConfigError."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"device {device} is not available here: {why}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device} is not available here: {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (use cpu, cuda or cuda:N)")
    return str(device)


def resolve_backend(name: str) -> str:
    from .backends import auto_order, available
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name == "auto":     # the first that runs here; the ones after it are not even imported
        return next(b for b in auto_order() if available(b)[0])
    ok, why = available(name)
    if not ok:
        raise ConfigError(f"backend {name} is not available here: {why}")
    return name
