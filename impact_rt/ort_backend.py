"""The ONNX Runtime backend: the compute steps of ``decoding.Backend`` as ONNX sessions.

Sessions are created once per backend and reused: ``project``, ``encoder``, ``vae_decoder``,
``vocoder`` (HiFi-GAN only; Griffin-Lim stays in torch) at load, one ``head_sampler_t<T̂>``
session per T̂ (and with/without CFG) on first use.

Where the graphs come from (first that applies):
1. ``engine_path=`` / ``$IMPACT_RT_ENGINES``: an engine bundle built by ``python -m export.build_engines``;
2. the cache ``${IMPACT_RT_CACHE:-~/.cache/impact-rt}/engines/<model-hash>-<precision>-<versions-key>/``,
   exported there on first use (a message on stderr) and reused afterwards. The model hash is
   ``bundle.bundle_hash`` of the model bundle, or a hash of the state dicts for random weights.
Every load verifies the bundle (``export.manifest.verify``): a changed or missing file, another
model or another onnxruntime version is refused with a one-line ``BundleError`` — or rebuilt
when ``IMPACT_RT_REBUILD=1`` (or ``rebuild=True``).

A head sampler for a T̂ the bundle lacks is exported into it on first use when the bundle is
writable; otherwise (or for a schedule other than the respaced cosine one) the T̂ steps run as
a python loop over the ``head_step`` graph with ``ddpm.p_sample_step``.

Session settings (measured on the 2-core dev machines, see docs/export.md): one intra-op thread per
CPU, no spinning, ORT_ENABLE_ALL. ``$IMPACT_RT_ORT_THREADS`` overrides the thread count.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from . import ddpm
from .audio import in_chunks
from .bundle import BundleError
from .config import ConfigError
from .patchify import tokens_to_latent

PRECISIONS = ("fp32", "fp16")
OPSET = 17


def available() -> tuple[bool, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed (pip install onnxruntime)"
    try:
        import export.build_engines  # noqa: F401  (the exporter ships beside impact_rt)
    except ImportError as e:
        return False, f"the exporter package is missing ({e})"
    return True, f"onnxruntime {ort.__version__} ({', '.join(p for p in ort.get_available_providers() if p != 'AzureExecutionProvider')})"


def session_options(threads: int | None = None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    env = os.environ.get("IMPACT_RT_ORT_THREADS")
    # default: one intra-op thread per CPU (docs/export.md, session 16: on an idle 2-core Zen 4,
    # 2.35 s a clip against 3.29 s with a single thread)
    n = threads if threads is not None else (int(env) if env else (os.cpu_count() or 1))
    so.intra_op_num_threads = max(1, n)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _providers(device: str) -> list[str]:
    import onnxruntime as ort
    dev = torch.device(device)
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("device cuda needs onnxruntime-gpu (the CUDA execution provider is not available)")
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    if dev.type != "cpu":
        raise ConfigError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
    return ["CPUExecutionProvider"]


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


def _progress(msg: str) -> None:
    print(f"impact-rt: {msg}", file=sys.stderr, flush=True)


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model, vae, vocoder, root: Path, manifest: dict, *, device="cpu", precision="fp32",
                 source=None, threads: int | None = None):
        import onnxruntime as ort
        self.model, self.vae, self.vocoder = model, vae, vocoder
        self.cfg = model.cfg
        self.root, self.manifest, self.source = Path(root), manifest, source
        self.device, self.precision = torch.device(device), precision
        self.providers = _providers(device)
        self.options = session_options(threads)
        self._ort = ort
        self._lock = threading.RLock()          # sessions are created (and samplers exported) once
        self._sessions: dict[str, object] = {}
        self._tables: dict[int, dict] = {}
        self._fallback_warned: set = set()
        for name in ("project", "encoder", "vae_decoder", "vocoder"):
            if self._component(name) is not None:
                self._session(name)
        if self._component("project") is None or self._component("encoder") is None:
            raise BundleError(f"engine bundle {root} has no project/encoder graph")
        _, null = self._run("project", {"text_states": np.zeros((1, self.cfg.text_len, self.cfg.text_dim), np.float32)})
        self._null = torch.from_numpy(null).to(self.device)                # [1, L, D]

    # -- sessions ---------------------------------------------------------------------------
    def _component(self, name: str) -> dict | None:
        return next((c for c in self.manifest["components"] if c["name"] == name), None)

    def _session(self, name: str):
        s = self._sessions.get(name)
        if s is None:
            with self._lock:
                s = self._sessions.get(name)
                if s is None:
                    c = self._component(name)
                    s = self._ort.InferenceSession(str(self.root / c["file"]), self.options, providers=self.providers)
                    self._sessions[name] = s
        return s

    def _run(self, name: str, feed: dict) -> list[np.ndarray]:
        return self._session(name).run(None, feed)

    def _out(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        return t if self.device.type == "cpu" else t.to(self.device)

    # -- compute steps ----------------------------------------------------------------------
    def project(self, states, mask):
        cfg = self.cfg
        if states.dim() != 3 or tuple(states.shape[1:]) != (cfg.text_len, cfg.text_dim):
            raise ConfigError(f"text condition must be [B, {cfg.text_len}, {cfg.text_dim}], got {tuple(states.shape)}")
        if mask.shape != states.shape[:2]:
            raise ConfigError(f"text mask {tuple(mask.shape)} does not match states {tuple(states.shape)}")
        cond, _ = self._run("project", {"text_states": _np(states.float())})
        return self._out(cond), mask.bool()

    def null(self, batch: int):
        c = self._null.expand(batch, -1, -1)
        return c, torch.ones(batch, self.cfg.text_len, dtype=torch.bool, device=c.device)

    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        (h,) = self._run("encoder", {"tokens": _np(tokens.float()), "cond": _np(cond.float()),
                                     "cond_mask": _np(cond_mask.bool()), "visible_idx": _np(visible_idx.long()),
                                     "predicted_idx": _np(predicted_idx.long())})
        return self._out(h)

    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule: ddpm.Schedule):
        use_cfg = h_uncond is not None
        name = self._sampler(schedule, use_cfg)
        if name is None:
            return self._sample_steps(h_cond, h_uncond, noise, guidance, temperature, schedule)
        feed = {"h_cond": _np(h_cond.float())}
        if use_cfg:
            feed["h_uncond"] = _np(h_uncond.float())
        feed["noise"] = _np(noise.float())
        if use_cfg:
            feed["guidance"] = np.array(guidance, dtype=np.float32)
        feed["temperature"] = np.array(temperature, dtype=np.float32)
        (x0,) = self._run(name, feed)
        return self._out(x0)

    def audio(self, tokens):
        return in_chunks(self._audio, tokens)

    def _audio(self, tokens):
        cfg = self.cfg
        latent = tokens_to_latent(tokens.float(), cfg)
        if self._component("vae_decoder") is None:
            raise BundleError(f"engine bundle {self.root} has no vae_decoder graph")
        (mel,) = self._run("vae_decoder", {"latent": _np(latent)})
        if self._component("vocoder") is not None:
            (wav,) = self._run("vocoder", {"mel": mel})
            return self._out(wav)
        with torch.inference_mode():  # Griffin-Lim (or any vocoder that was not exported) stays in torch
            return self.vocoder(self._out(mel))

    def wrap_conditioner(self, conditioner):
        """An ONNX-backed stand-in for a MiniLM conditioner when the bundle has its graph, else as is."""
        from .text_conditioner import MiniLMConditioner
        if isinstance(conditioner, MiniLMConditioner) and self._component("text_encoder") is not None:
            return OrtTextConditioner(conditioner, self)
        return conditioner

    def close(self):
        self._sessions.clear()
        self._tables.clear()

    # -- head sampler selection ---------------------------------------------------------------
    def _sampler(self, schedule: ddpm.Schedule, use_cfg: bool) -> str | None:
        """The head_sampler graph for this schedule (exported on demand), or None for the step loop."""
        from export.descriptors import sampler_name
        steps = schedule.num_steps
        name = sampler_name(steps, use_cfg)
        if not self._standard(schedule):
            self._warn_fallback(name, "the schedule is not the respaced cosine schedule the graphs bake in")
            return None
        if self._component(name) is None:
            with self._lock:
                if self._component(name) is None and not self._extend(steps, use_cfg):
                    return None
        return name

    def _standard(self, schedule: ddpm.Schedule) -> bool:
        return ddpm.sampling_schedule(self.cfg.train_steps, schedule.num_steps).key == schedule.key

    def _extend(self, steps: int, use_cfg: bool) -> bool:
        from export import build_engines, descriptors, manifest as M
        name = descriptors.sampler_name(steps, use_cfg)
        if self.source is None or not os.access(self.root, os.W_OK):
            self._warn_fallback(name, f"engine bundle {self.root} has no {name} graph and is not writable")
            return False
        _progress(f"exporting the head sampler for {steps} diffusion steps into {self.root} (once) ...")
        ax = {k: tuple(v) for k, v in self.manifest.get("axes", {}).items()}
        desc = descriptors.sampler_descriptor(self.cfg, ax or descriptors.axis_ranges(
            self.cfg, descriptors.Profile()), steps, use_cfg)
        with M.lock(self.root):
            try:
                self.manifest = build_engines.add_components(self.root, self.source, [desc], self.manifest,
                                                             log=lambda m: None)
            except (ValueError, RuntimeError, OSError) as e:
                if isinstance(e, BundleError):
                    raise
                raise M.EngineBundleError(f"exporting {name} into {self.root} failed: "
                                          f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
        return self._component(name) is not None

    def _warn_fallback(self, name: str, why: str) -> None:
        if name not in self._fallback_warned:
            self._fallback_warned.add(name)
            warnings.warn(f"onnxruntime backend: {why}; running the steps as a loop over head_step", stacklevel=4)

    def _sample_steps(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        """The reference sampler (sampler.sample_head) with the head body from the head_step graph."""
        tab = self._tables.get(schedule.key)
        if tab is None:
            tab = self._tables[schedule.key] = schedule.tensors()
        r = h_cond.shape[0]
        hc = h_cond.float().cpu()
        cc = hc if h_uncond is None else torch.cat([hc, h_uncond.float().cpu()])
        cc_np = _np(cc)
        noise = noise.float().cpu()
        x = noise[0]
        steps = schedule.num_steps
        for j, i in enumerate(reversed(range(steps))):
            xx = x if h_uncond is None else torch.cat([x, x])
            t = np.full((xx.shape[0],), int(tab["timestep_map"][i]), dtype=np.int64)
            eps_all, v_all = (torch.from_numpy(a) for a in self._run("head_step", {"x": _np(xx), "t": t, "c": cc_np}))
            eps, v = eps_all[:r], v_all[:r]
            if h_uncond is not None:
                eps = eps_all[r:] + guidance * (eps - eps_all[r:])
            x = ddpm.p_sample_step(tab, x, i, eps, v, noise[j + 1] if i > 0 else None, temperature)
        return self._out(x.numpy())


class OrtTextConditioner:
    """MiniLMConditioner.encode with the BERT in ONNX Runtime (the tokenizer stays in Python)."""

    def __init__(self, conditioner, backend: OrtBackend):
        self.inner, self.backend = conditioner, backend
        self.length, self.dim, self.kind = conditioner.length, conditioner.dim, conditioner.kind

    def spec(self):
        return self.inner.spec()

    def to(self, device):
        return self

    def encode(self, prompts):
        ids, am = (t.numpy() for t in self.inner.tokenize(prompts))
        (states,) = self.backend._run("text_encoder", {"input_ids": ids, "attention_mask": am})
        mask = np.concatenate([am.astype(bool), np.ones((len(prompts), 1), bool)], 1)
        return torch.from_numpy(states), torch.from_numpy(mask)


# ---------------------------------------------------------------------------------------------- loading

def _bundle_minilm(bundle_path):
    """The bundle's MiniLM conditioner (whose BERT becomes the text_encoder graph), else None."""
    from .bundle import read_config
    from .text_conditioner import MiniLMConditioner, build_conditioner
    try:
        spec = read_config(bundle_path).conditioner
        if spec.get("kind") != "minilm":
            return None
        c = build_conditioner(spec)
        return c if isinstance(c, MiniLMConditioner) else None
    except (BundleError, ConfigError, OSError):
        return None


def load_backend(model, vae, vocoder, *, bundle_path=None, device="cpu", precision=None,
                 engine_path=None, rebuild: bool | None = None, profile=None, threads: int | None = None,
                 conditioner=None) -> OrtBackend:
    """An OrtBackend for ``model`` (+ VAE, vocoder), its engine bundle found, verified or exported.

    engine_path: an engine bundle folder (default ``$IMPACT_RT_ENGINES``, else the cache).
    rebuild: re-export a bundle that fails verification (default ``$IMPACT_RT_REBUILD == "1"``).
    profile: ``export.descriptors.Profile`` for a first export (default: T̂ of the model bundle, or 100).
    """
    from export import build_engines, manifest as M
    from .bundle import bundle_hash, read_config
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not available for the onnxruntime backend "
                          f"(choose {' or '.join(PRECISIONS)}; bf16 has no onnxruntime CPU kernels)")
    _providers(device)
    if rebuild is None:
        rebuild = os.environ.get("IMPACT_RT_REBUILD") == "1"
    model_hash = bundle_hash(bundle_path) if bundle_path is not None else M.state_hash(model, vae, vocoder)
    engine_path = engine_path or os.environ.get("IMPACT_RT_ENGINES")
    root = Path(engine_path) if engine_path else M.cache_dir(model_hash, precision, "onnxruntime", OPSET)

    default_steps = 100
    if bundle_path is not None:
        try:
            default_steps = read_config(bundle_path).decode.diffusion_steps
        except BundleError:
            pass
    name = str(bundle_path) if bundle_path is not None else "random weights"
    source = build_engines.Source(model, vae, vocoder, conditioner, model_hash=model_hash, name=name,
                                  default_steps=default_steps)

    with M.lock(root):
        manifest = None
        if (root / M.MANIFEST).is_file():
            try:
                manifest = M.verify(root, backend="onnxruntime", model_hash=model_hash, precision=precision)
            except M.EngineBundleError:
                if not rebuild:
                    raise
                _progress(f"engine bundle {root} failed verification; rebuilding (IMPACT_RT_REBUILD)")
        elif root.exists() and any(root.iterdir()) and not rebuild:
            raise M.ManifestError(f"engine bundle {root}: no {M.MANIFEST}; {M.REBUILD_HINT}")
        if manifest is None:
            from export.descriptors import Profile
            if source.conditioner is None and bundle_path is not None:
                source.conditioner = _bundle_minilm(bundle_path)   # its BERT is exported too
            prof = profile or Profile(diffusion_steps=(default_steps,))
            _progress(f"exporting ONNX graphs for {name} ({precision}) into {root} (once; reused next time) ...")
            try:
                manifest = build_engines.build(root, source, backend="onnxruntime", precision=precision,
                                               profile=prof, opset=OPSET, force=True,
                                               log=lambda m: _progress(m.strip()))
            except (ValueError, RuntimeError, OSError) as e:
                if isinstance(e, BundleError):
                    raise
                raise M.EngineBundleError(f"exporting ONNX graphs for {name} failed: "
                                          f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    writable_source = source if os.access(root, os.W_OK) else None
    return OrtBackend(model, vae, vocoder, root, manifest, device=device, precision=precision,
                      source=writable_source, threads=threads)
