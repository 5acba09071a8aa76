"""The TensorRT backend (TensorRT 10 Python API).

UNVERIFIED: written against the TensorRT 10 API but never run — TensorRT cannot be installed on
the development machine and no GPU was available. ``available()`` says why it cannot run here.
What is tested without TensorRT: profiles, cache keys, engine folder names, the manifest
records and their verification (tests/test_trt.py).

Engines come from the engine bundle of the model (``engine_path=`` / ``$IMPACT_RT_ENGINES``, else
``${IMPACT_RT_CACHE:-~/.cache/impact-rt}/engines/<model-hash>-<precision>-<versions-key>/``), in
``engines/<gpu-arch>-trt<version>/``; missing ones are exported and built on first use (a message
on stderr). Each engine runs by tensor name on static device buffers sized by the profile's
maximum shapes, addresses bound once (``set_tensor_address``), so an iteration can be captured
in a CUDA graph (``TrtEngine.run(..., graph=True)``, opt-in with ``$IMPACT_RT_TRT_CUDA_GRAPHS=1``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from . import ddpm
from .bundle import BundleError
from .config import ConfigError
from .patchify import tokens_to_latent

PRECISIONS = ("fp32", "fp16")
OPSET = 17
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "bool": torch.bool}


def available() -> tuple[bool, str]:
    from export import trt_build
    return trt_build.available()


def _progress(msg: str) -> None:
    print(f"impact-rt: {msg}", file=sys.stderr, flush=True)


def check_engine_entry(manifest: dict, folder: str, installed_version: str | None, root: Path | str = "") -> dict | None:
    """The manifest record of one engine folder, None when absent; refuses (one line) a record
    whose TensorRT version is not the installed one."""
    from export import manifest as M
    rec = manifest.get("engines", {}).get(folder)
    if rec is None:
        return None
    if rec.get("tensorrt") != installed_version:
        raise M.VersionMismatchError(f"engine bundle {root}: engines in {folder} were built with TensorRT "
                                     f"{rec.get('tensorrt')}, installed {installed_version}; {M.REBUILD_HINT}")
    return rec


class TrtEngine:
    """One engine with static device buffers: inputs are copied in, outputs are views."""

    def __init__(self, runtime, plan: bytes, desc, device: torch.device):
        import tensorrt as trt  # type: ignore
        self.trt, self.desc, self.device = trt, desc, device
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialize the {desc.name} engine")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        self.inputs, self.outputs = [], []
        self.limits = desc.max_shapes()
        for spec in (*desc.inputs, *desc.outputs):
            n = 1
            for s in self.limits[spec.name]:
                n *= int(s)
            buf = torch.empty(max(n, 1), dtype=_TORCH_DTYPES[spec.dtype], device=device)
            self.buffers[spec.name] = buf
            self.context.set_tensor_address(spec.name, buf.data_ptr())
            mode = self.engine.get_tensor_mode(spec.name)
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append(spec.name)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}

    def _bind(self, feed: dict[str, torch.Tensor]) -> tuple:
        key = []
        for name in self.inputs:
            x = feed[name]
            hi = self.limits[name]
            if x.dim() != len(hi) or any(a > b for a, b in zip(x.shape, hi)):
                raise ConfigError(f"{self.desc.name}: input {name} {tuple(x.shape)} is outside the engine profile "
                                  f"(max {tuple(hi)}); rebuild with larger --batch-sizes")
            buf = self.buffers[name][:x.numel()].view(x.shape)
            buf.copy_(x.to(device=self.device, dtype=buf.dtype), non_blocking=True)
            self.context.set_input_shape(name, tuple(x.shape))
            key.append(tuple(x.shape))
        return tuple(key)

    def _outputs(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            n = 1
            for s in shape:
                n *= s
            out[name] = self.buffers[name][:n].view(shape)
        return out

    def run(self, feed: dict[str, torch.Tensor], stream: torch.cuda.Stream, graph: bool = False) -> dict[str, torch.Tensor]:
        with torch.cuda.stream(stream):
            key = self._bind(feed)
            if graph:
                g = self.graphs.get(key)
                if g is None:
                    # enqueue once after a shape change (TensorRT defers some work to the first run), then capture
                    self.context.execute_async_v3(stream.cuda_stream)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=stream):
                        self.context.execute_async_v3(stream.cuda_stream)
                    self.graphs[key] = g
                g.replay()
            elif not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run the {self.desc.name} engine")
        return self._outputs()

    def close(self):
        self.graphs.clear()
        self.buffers.clear()
        self.context = None
        self.engine = None


class TrtBackend:
    name = "tensorrt"

    def __init__(self, model, vae, vocoder, root: Path, manifest: dict, folder: str, *, device="cuda", precision="fp16"):
        import tensorrt as trt  # type: ignore
        from export.descriptors import Descriptor
        self.model, self.vae, self.vocoder, self.cfg = model, vae, vocoder, model.cfg
        self.root, self.manifest, self.folder = Path(root), manifest, folder
        self.device = torch.device(device)
        self.precision = precision
        self.stream = torch.cuda.Stream(device=self.device)
        self.use_graphs = os.environ.get("IMPACT_RT_TRT_CUDA_GRAPHS") == "1"
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        rec = manifest["engines"][folder]
        self.engines: dict[str, TrtEngine] = {}
        for c in manifest["components"]:
            plan = rec["components"].get(c["name"])
            if plan is not None:
                self.engines[c["name"]] = TrtEngine(self.runtime, (self.root / plan).read_bytes(),
                                                    Descriptor.from_json(c), self.device)
        for need in ("project", "encoder"):
            if need not in self.engines:
                raise BundleError(f"engine bundle {root} has no {need} engine")
        z = torch.zeros(1, self.cfg.text_len, self.cfg.text_dim, device=self.device)
        self._null = self._run("project", {"text_states": z})["null_cond"].clone()
        self._tables: dict[int, dict] = {}

    def _run(self, name, feed):
        out = self.engines[name].run(feed, self.stream, graph=self.use_graphs)
        self.stream.synchronize()
        return out

    def project(self, states, mask):
        cfg = self.cfg
        if states.dim() != 3 or tuple(states.shape[1:]) != (cfg.text_len, cfg.text_dim):
            raise ConfigError(f"text condition must be [B, {cfg.text_len}, {cfg.text_dim}], got {tuple(states.shape)}")
        return self._run("project", {"text_states": states.float()})["cond"].clone(), mask.bool().to(self.device)

    def null(self, batch: int):
        c = self._null.expand(batch, -1, -1)
        return c, torch.ones(batch, self.cfg.text_len, dtype=torch.bool, device=self.device)

    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        return self._run("encoder", {"tokens": tokens.float(), "cond": cond.float(), "cond_mask": cond_mask.bool(),
                                     "visible_idx": visible_idx.long(), "predicted_idx": predicted_idx.long()})["h"].clone()

    def sample(self, h_cond, h_uncond, noise, guidance, temperature, schedule: ddpm.Schedule):
        from export.descriptors import sampler_name
        name = sampler_name(schedule.num_steps, h_uncond is not None)
        if name not in self.engines:
            return self._sample_steps(h_cond, h_uncond, noise, guidance, temperature, schedule)
        feed = {"h_cond": h_cond.float()}
        if h_uncond is not None:
            feed["h_uncond"] = h_uncond.float()
        feed["noise"] = noise.float()
        if h_uncond is not None:
            feed["guidance"] = torch.tensor(float(guidance), device=self.device)
        feed["temperature"] = torch.tensor(float(temperature), device=self.device)
        return self._run(name, feed)["x0"].clone()

    def _sample_steps(self, h_cond, h_uncond, noise, guidance, temperature, schedule):
        """A T̂ without its sampler engine: the reference loop over the head_step engine."""
        if "head_step" not in self.engines:
            raise BundleError(f"engine bundle {self.root} has no head_sampler for {schedule.num_steps} steps "
                              f"and no head_step engine; rebuild with --diffusion-steps {schedule.num_steps}")
        tab = self._tables.setdefault(schedule.key, schedule.tensors(device=self.device))
        r = h_cond.shape[0]
        cc = h_cond.float() if h_uncond is None else torch.cat([h_cond, h_uncond]).float()
        x = noise[0].float()
        for j, i in enumerate(reversed(range(schedule.num_steps))):
            xx = x if h_uncond is None else torch.cat([x, x])
            t = tab["timestep_map"][i].expand(xx.shape[0]).contiguous()
            out = self._run("head_step", {"x": xx, "t": t, "c": cc})
            eps_all, v_all = out["eps"].clone(), out["v"].clone()
            eps, v = eps_all[:r], v_all[:r]
            if h_uncond is not None:
                eps = eps_all[r:] + guidance * (eps - eps_all[r:])
            x = ddpm.p_sample_step(tab, x, i, eps, v, noise[j + 1].float() if i > 0 else None, temperature)
        return x

    def audio(self, tokens):
        cfg = self.cfg
        latent = tokens_to_latent(tokens.float(), cfg)
        mel = self._run("vae_decoder", {"latent": latent})["mel"].clone()
        if "vocoder" in self.engines:
            return self._run("vocoder", {"mel": mel})["waveform"].clone()
        with torch.inference_mode():
            return self.vocoder(mel)

    def close(self):
        for e in self.engines.values():
            e.close()
        self.engines.clear()


def load_backend(model, vae, vocoder, *, bundle_path=None, device="cuda", precision=None, engine_path=None,
                 rebuild: bool | None = None, profile=None) -> TrtBackend:
    ok, why = available()
    if not ok:
        raise ConfigError(f"backend tensorrt is not available here: {why}")
    from export import build_engines, manifest as M, trt_build
    from .bundle import bundle_hash
    precision = precision or "fp16"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not available for the tensorrt backend ({' or '.join(PRECISIONS)})")
    dev = torch.device(device if device and device != "cpu" else "cuda")
    if dev.type != "cuda":
        raise ConfigError(f"the tensorrt backend runs on cuda devices, not {device}")
    if rebuild is None:
        rebuild = os.environ.get("IMPACT_RT_REBUILD") == "1"
    model_hash = bundle_hash(bundle_path) if bundle_path is not None else M.state_hash(model, vae, vocoder)
    engine_path = engine_path or os.environ.get("IMPACT_RT_ENGINES")
    root = Path(engine_path) if engine_path else M.cache_dir(model_hash, precision, "tensorrt", OPSET)
    version = trt_build.trt_version()
    folder = trt_build.engine_dir_name(trt_build.gpu_arch(dev.index or 0), version)
    source = build_engines.Source(model, vae, vocoder, None, model_hash=model_hash,
                                  name=str(bundle_path) if bundle_path else "random weights")
    with M.lock(root):
        manifest = None
        if (root / M.MANIFEST).is_file():
            try:
                manifest = M.verify(root, backend="tensorrt", model_hash=model_hash, precision=precision)
                if check_engine_entry(manifest, folder, version, root) is None:
                    _progress(f"building TensorRT engines for {folder} into {root} (once) ...")
                    manifest = trt_build.build_engines(root, manifest, precision=precision, log=_progress,
                                                       device=dev.index or 0)
            except M.EngineBundleError:
                if not rebuild:
                    raise
                manifest = None
        if manifest is None:
            _progress(f"exporting ONNX graphs and building TensorRT engines into {root} (once) ...")
            manifest = build_engines.build(root, source, backend="tensorrt", precision=precision, profile=profile,
                                           opset=OPSET, force=True, log=_progress)
    return TrtBackend(model, vae, vocoder, root, manifest, folder, device=str(dev), precision=precision)
