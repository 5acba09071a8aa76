"""The engine bundle: ``manifest.json``, ``onnx/`` and ``engines/<gpu-arch>-trt<ver>/``.

    <bundle>/manifest.json        format, model hash, components (descriptors), profile, opset,
                                  precision, library versions, export report, sha256 of every file
    <bundle>/report.json          the export check: max / mean abs error per component
    <bundle>/onnx/<name>.onnx     one graph per component
    <bundle>/engines/sm90-trt10.7.0/<name>.plan   TensorRT engines for one GPU arch + TRT version

``manifest.json`` carries a sha256 of its own canonical content (``manifest_sha256``), so an
edited manifest is told apart from one written by ``write``. Every file the manifest lists is
hashed at load (``verify``); files it does not list are never loaded. Every failure is a
one-line ``EngineBundleError`` (a ``BundleError``), raised before any engine is touched.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from impact_rt.bundle import BundleError
from impact_rt.fileio import atomic_write_text

FORMAT = "impact-rt-engines"
VERSION = 1
EXPORTER_VERSION = 3           # bump when the exported graphs change: part of every cache key (2: sampling starts at t=992;
                               # 3: fp16 heads stay fp16 through adaLN modulate, onnx_export._addcmul_symbolic)
MANIFEST = "manifest.json"
REPORT = "report.json"


class EngineBundleError(BundleError):
    """An engine bundle is missing, corrupt, stale or built for another library version."""


class ManifestError(EngineBundleError):
    pass


class IntegrityError(EngineBundleError):
    pass


class VersionMismatchError(EngineBundleError):
    pass


class ModelMismatchError(EngineBundleError):
    pass


REBUILD_HINT = "rebuild with `python -m export.build_engines --force` or set IMPACT_RT_REBUILD=1"


# ------------------------------------------------------------------------------------------ hashing

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(d: dict) -> bytes:
    return json.dumps({k: v for k, v in d.items() if k != "manifest_sha256"}, sort_keys=True,
                      separators=(",", ":")).encode()


def seal(d: dict) -> dict:
    d = dict(d)
    d["manifest_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()
    return d


def state_hash(*modules) -> str:
    """sha256 over the state dicts of torch modules (names, dtypes, shapes and bytes): the model
    hash of pipelines that have no bundle folder (random weights)."""
    import torch
    h = hashlib.sha256()
    for i, m in enumerate(modules):
        if m is None or not isinstance(m, torch.nn.Module):
            h.update(f"#{i}:none".encode())
            continue
        h.update(f"#{i}:{type(m).__name__}".encode())
        for k, v in sorted(m.state_dict().items()):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ versions

def library_versions() -> dict:
    import onnx
    import torch
    out = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": None, "tensorrt": None}
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import tensorrt  # type: ignore
        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    try:
        from impact_rt import __version__
        out["impact_rt"] = __version__
    except ImportError:
        out["impact_rt"] = None
    return out


def versions_key(backend: str, opset: int, versions: dict | None = None) -> str:
    """What the exported graphs depend on, short: ``ort1.32.0-<hash>`` / ``trt10.7.0-<hash>``."""
    v = versions or library_versions()
    runtime = f"ort{v.get('onnxruntime')}" if backend == "onnxruntime" else f"trt{v.get('tensorrt')}"
    raw = f"torch={v.get('torch')};onnx={v.get('onnx')};{runtime};opset={opset};exporter={EXPORTER_VERSION}"
    return f"{runtime}-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"


def cache_root() -> Path:
    return Path(os.environ.get("IMPACT_RT_CACHE") or Path.home() / ".cache" / "impact-rt").expanduser()


def cache_dir(model_hash: str, precision: str, backend: str, opset: int, versions: dict | None = None) -> Path:
    """``${IMPACT_RT_CACHE:-~/.cache/impact-rt}/engines/<model-hash>-<precision>-<versions-key>``."""
    return cache_root() / "engines" / f"{model_hash[:16]}-{precision}-{versions_key(backend, opset, versions)}"


def runtime_compatible(recorded: dict, installed: dict, backend: str) -> str | None:
    """None when the installed runtime may load what ``recorded`` built; else why not (one line).

    onnxruntime: the same major.minor (the graphs were checked against it; a newer opset or a
    different kernel set is refused rather than run). tensorrt: the exact version (plans are not
    portable across TensorRT releases)."""
    if backend == "onnxruntime":
        r, i = recorded.get("onnxruntime"), installed.get("onnxruntime")
        if i is None:
            return "onnxruntime is not installed"
        if r is None or r.split(".")[:2] != i.split(".")[:2]:
            return f"built with onnxruntime {r}, installed {i}"
        return None
    if backend == "tensorrt":
        r, i = recorded.get("tensorrt"), installed.get("tensorrt")
        if i is None:
            return "tensorrt is not installed"
        if r != i:
            return f"engines built with TensorRT {r}, installed {i}"
        return None
    raise ValueError(backend)


# ------------------------------------------------------------------------------------------ write


def listed_files(root: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """sha256 of every file under root except the manifest itself and temp/lock files. ``known``:
    digests already verified in this process (files added to a verified bundle), not re-hashed."""
    out = {}
    known = known or {}
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel == MANIFEST or p.name.startswith(".tmp-") or p.name.endswith(".lock"):
            continue
        out[rel] = known[rel] if rel in known and rel != REPORT else sha256_file(p)
    return out


def write(root: Path, manifest: dict, report: dict | None = None, known: dict[str, str] | None = None) -> dict:
    """Write report.json (if given), hash every file, seal and write manifest.json atomically."""
    root = Path(root)
    if report is not None:
        atomic_write_text(root / REPORT, json.dumps(report, indent=2, sort_keys=True) + "\n")
    m = dict(manifest)
    m.setdefault("format", FORMAT)
    m.setdefault("version", VERSION)
    m["files"] = listed_files(root, known)
    m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    m = seal(m)
    atomic_write_text(root / MANIFEST, json.dumps(m, indent=2, sort_keys=True) + "\n")
    return m


# ------------------------------------------------------------------------------------------ read

def read(root: Path) -> dict:
    """The sealed manifest, or a one-line ManifestError."""
    root = Path(root)
    p = root / MANIFEST
    if not p.is_file():
        raise ManifestError(f"engine bundle {root}: no {MANIFEST}")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"engine bundle {root}: {MANIFEST} is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ManifestError(f"engine bundle {root}: not an impact-rt engine bundle")
    if m.get("version") != VERSION:
        raise ManifestError(f"engine bundle {root}: manifest version {m.get('version')} is not supported "
                            f"(expected {VERSION}); {REBUILD_HINT}")
    if m.get("manifest_sha256") != hashlib.sha256(_canonical(m)).hexdigest():
        raise IntegrityError(f"engine bundle {root}: {MANIFEST} was modified after it was written; {REBUILD_HINT}")
    for key in ("model_hash", "precision", "opset", "libraries", "components", "files"):
        if key not in m:
            raise ManifestError(f"engine bundle {root}: {MANIFEST} has no {key!r}")
    return m


def verify(root: Path, *, backend: str, model_hash: str | None = None, precision: str | None = None,
           installed: dict | None = None, files: list[str] | None = None) -> dict:
    """Check a bundle before anything is loaded from it; return its manifest.

    Refuses (one-line EngineBundleError): no/invalid/modified manifest, a listed file that is
    missing or whose sha256 differs, another model, another precision, another runtime version.
    ``files`` limits hashing to some listed files (e.g. one GPU's engines); default: all."""
    root = Path(root)
    m = read(root)
    exporter = m.get("exporter_version", 1)     # manifests before the field were written by version 1
    if exporter != EXPORTER_VERSION:
        raise VersionMismatchError(f"engine bundle {root} was written by exporter version {exporter}, "
                                   f"this runtime's graphs are version {EXPORTER_VERSION}; {REBUILD_HINT}")
    if model_hash is not None and m["model_hash"] != model_hash:
        raise ModelMismatchError(f"engine bundle {root} was built for model {m['model_hash'][:16]}, "
                                 f"not {model_hash[:16]}; {REBUILD_HINT}")
    if precision is not None and m["precision"] != precision:
        raise ModelMismatchError(f"engine bundle {root} holds {m['precision']} graphs, {precision} was asked for")
    # onnxruntime runs the graphs of the bundle itself; TensorRT versions are checked per engine
    # folder (impact_rt.trt_backend.check_engine_entry), since one bundle may hold several.
    why = runtime_compatible(m["libraries"], installed or library_versions(), backend) if backend == "onnxruntime" else None
    if why:
        raise VersionMismatchError(f"engine bundle {root}: {why}; {REBUILD_HINT}")
    names = m["files"] if files is None else {f: m["files"].get(f) for f in files}
    for rel, digest in names.items():
        p = root / rel
        if digest is None:
            raise IntegrityError(f"engine bundle {root}: {rel} is not listed in {MANIFEST}; {REBUILD_HINT}")
        if not p.is_file():
            raise IntegrityError(f"engine bundle {root}: {rel} is missing; {REBUILD_HINT}")
        if sha256_file(p) != digest:
            raise IntegrityError(f"engine bundle {root}: {rel} was changed (sha256 mismatch); {REBUILD_HINT}")
    return m


def component(m: dict, name: str) -> dict | None:
    return next((c for c in m["components"] if c["name"] == name), None)


# ------------------------------------------------------------------------------------------ locking

@contextlib.contextmanager
def lock(root: Path):
    """An exclusive advisory lock beside a bundle (two processes never export into it at once)."""
    import fcntl
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
