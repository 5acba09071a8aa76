"""TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API).

UNVERIFIED: TensorRT cannot be installed on the development machine (no GPU); the pure-python
parts (profiles, cache keys, engine folder names, manifest records) are tested, the builder
calls are written against the TensorRT 10 API and have never run. See docs/export.md.

One engine per component, one optimisation profile each, from the descriptor's min/opt/max
(``Descriptor.profile``: TensorRT demo/Diffusion's layout). Precision:
* fp32: fp32 graphs, TF32 off (parity with the reference);
* fp16: the mixed-precision graphs the exporter writes for fp16 (half-precision layers with the
  DDPM update, null condition and latent scale in fp32), built as a STRONGLY_TYPED network so
  TensorRT keeps exactly the graph's types (x₀ reaches 1e5 in the sampler: fp16 would overflow);
* bf16: refused (no checked bf16 graphs yet).
Engines go to ``engines/<gpu-arch>-trt<version>/<component>.plan`` with a timing cache beside
them; the manifest records, per engine folder, the GPU, compute capability, TensorRT version,
precision, profile hash and cache key (model hash, precision, profile, arch, TRT version).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from . import manifest as M
from .descriptors import Descriptor

WORKSPACE_BYTES = 8 << 30
TIMING_CACHE = "timing.cache"


def available() -> tuple[bool, str]:
    try:
        import tensorrt  # type: ignore  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt-cu12; needs an NVIDIA GPU)"
    import torch
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA device and torch sees none"
    return True, f"TensorRT {tensorrt.__version__}"


def trt_version() -> str | None:
    try:
        import tensorrt  # type: ignore
        return tensorrt.__version__
    except ImportError:
        return None


def gpu_arch(device: int = 0) -> str:
    """``sm<major><minor>`` of a CUDA device (sm90 for H100)."""
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return arch_name(major, minor)


def arch_name(major: int, minor: int) -> str:
    return f"sm{major}{minor}"


def engine_dir_name(arch: str, version: str) -> str:
    """``engines/<gpu-arch>-trt<ver>/``: e.g. ``sm90-trt10.7.0``."""
    return f"{arch}-trt{version}"


def profile_hash(descs: list[Descriptor]) -> str:
    prof = {d.name: {k: [list(s) for s in v] for k, v in d.profile().items()} for d in descs}
    return hashlib.sha256(json.dumps(prof, sort_keys=True).encode()).hexdigest()[:16]


def cache_key(model_hash: str, precision: str, descs: list[Descriptor], arch: str, version: str) -> str:
    """What an engine depends on: model, precision, shapes profile, GPU arch, TensorRT version
    (and the exporter's version, which fixes the graphs)."""
    raw = json.dumps({"model": model_hash, "precision": precision, "profile": profile_hash(descs),
                      "arch": arch, "tensorrt": version, "exporter": M.EXPORTER_VERSION}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def dynamic_profile(desc: Descriptor) -> dict[str, tuple]:
    """The optimisation profile entries TensorRT needs: inputs with at least one symbolic axis."""
    dyn = {t.name for t in desc.inputs if any(isinstance(d, str) for d in t.shape)}
    return {k: v for k, v in desc.profile().items() if k in dyn}


def builder_settings(desc: Descriptor, precision: str) -> dict:
    """Everything the builder is told, as plain data (tested without TensorRT)."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"TensorRT precision {precision!r} is not supported (fp32 or fp16)")
    return {"strongly_typed": precision == "fp16", "tf32": False, "workspace_bytes": WORKSPACE_BYTES,
            "profile": dynamic_profile(desc)}


def build_engine(onnx_path: Path, desc: Descriptor, plan_path: Path, *, precision: str,
                 timing_cache: Path, log=print) -> float:
    """Parse the ONNX graph, build a serialized engine with the descriptor's profile, write it.
    Returns the build time in seconds. Raises RuntimeError with the parser's first error."""
    import tensorrt as trt  # type: ignore
    s = builder_settings(desc, precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if s["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errs[0] if errs else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s["workspace_bytes"])
    if not s["tf32"] and not s["strongly_typed"]:   # strongly typed networks take types from the graph
        config.clear_flag(trt.BuilderFlag.TF32)
    if s["profile"]:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in s["profile"].items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {desc.name}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    dt = time.perf_counter() - t0
    log(f"  {desc.name}: engine built in {dt:.1f} s")
    return dt


def engine_record(descs: list[Descriptor], *, model_hash: str, precision: str, arch: str, version: str,
                  gpu: str = "", folder: str | None = None) -> dict:
    """The manifest entry of one engine folder."""
    folder = folder or engine_dir_name(arch, version)
    return {"dir": f"engines/{folder}", "arch": arch, "gpu": gpu, "tensorrt": version, "precision": precision,
            "profile_hash": profile_hash(descs), "cache_key": cache_key(model_hash, precision, descs, arch, version),
            "components": {d.name: f"engines/{folder}/{d.name}.plan" for d in descs}}


def build_engines(root: Path, manifest: dict, *, precision: str, log=print, device: int = 0) -> dict:
    """Build engines for every component of a bundle on this GPU; record them; re-seal."""
    import torch
    root = Path(root)
    version = trt_version()
    arch = gpu_arch(device)
    folder = engine_dir_name(arch, version)
    descs = [Descriptor.from_json(c) for c in manifest["components"]]
    log(f"building TensorRT {version} engines for {arch} ({precision}) ...")
    for d, c in zip(descs, manifest["components"]):
        build_engine(root / c["file"], d, root / "engines" / folder / f"{d.name}.plan", precision=precision,
                     timing_cache=root / "engines" / folder / TIMING_CACHE, log=log)
    m = dict(manifest)
    m["engines"] = dict(m.get("engines", {}))
    m["engines"][folder] = engine_record(descs, model_hash=m["model_hash"], precision=precision, arch=arch,
                                         version=version, gpu=torch.cuda.get_device_name(device), folder=folder)
    return M.write(root, m, known={k: v for k, v in manifest["files"].items()})
