"""Build an engine bundle: ONNX graphs of every component (+ TensorRT engines), checked against PyTorch.

    python -m export.build_engines --model DIR|random:test|random:small|random:base [--out DIR]
        [--backend onnxruntime|tensorrt] [--precision fp32|fp16|bf16] [--batch-sizes 1,8]
        [--iterations 4,16,64] [--diffusion-steps 100] [--opset 17] [--force] [--no-check]

T and T̂ are checked with the runtime's rule (``DecodeConfig.validate``), the opset against what the
installed torch exporter supports (``opset_range``), all before any graph is exported.

Without ``--out`` the bundle goes where the backends look for it:
``${IMPACT_RT_CACHE:-~/.cache/impact-rt}/engines/<model-hash>-<precision>-<versions-key>/``.
The bundle is built in a temporary folder beside ``--out`` and renamed into place only when
every graph passed its checks, so a failed build never leaves a half-written bundle.

Exit codes: 0 success, 2 usage errors, 1 build or check failures. Errors are one line,
``<prog>: error: ...`` (``impact-rt export: error: ...`` from the ``impact-rt`` command).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from impact_rt.config import ConfigError

from . import descriptors as D
from . import manifest as M

PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("onnxruntime", "tensorrt")
DEFAULT_OPSET = 17
MIN_OPSET = 17              # the graphs use LayerNormalization, an ONNX op from opset 17
TORCH_MAX_OPSET = 20        # torch 2.13's TorchScript exporter; used only if torch does not say


def opset_range() -> tuple[int, int]:
    """The opsets export accepts: MIN_OPSET up to the highest that the installed torch's TorchScript
    exporter (``torch.onnx.export(dynamo=False)``) supports and the installed onnx knows."""
    import onnx.defs
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as hi
    except ImportError:
        hi = TORCH_MAX_OPSET
    return MIN_OPSET, min(int(hi), int(onnx.defs.onnx_opset_version()))


def check_opset(opset) -> int:
    lo, hi = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ConfigError(f"opset must be an integer in {lo}..{hi} (the installed torch exporter's), got {opset}")
    return opset


def check_out(out: Path, what: str = "--out") -> Path:
    """The bundle folder must be a folder, or not exist below a folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {out} exists and is not a folder")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{what} {out}: {parent} is not a folder")
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Source:
    """A model to export: the generator, VAE, vocoder and (when it is MiniLM) the text encoder."""

    def __init__(self, model, vae, vocoder, conditioner=None, *, model_hash: str, name: str,
                 default_steps: int = 100):
        self.model, self.vae, self.vocoder, self.conditioner = model, vae, vocoder, conditioner
        self.model_hash, self.name, self.default_steps = model_hash, name, default_steps

    @classmethod
    def load(cls, spec: str) -> "Source":
        from impact_rt import bundle as B
        from impact_rt.pipeline import Pipeline
        if spec.startswith("random:"):
            pipe = Pipeline.random(spec.split(":", 1)[1])
            h = M.state_hash(pipe.model, pipe.vae, pipe.vocoder)
        else:
            path = Path(spec)
            pipe = Pipeline._load(path, "torch", "cpu")
            h = B.bundle_hash(path)
        return cls(pipe.model, pipe.vae, pipe.vocoder, pipe.conditioner, model_hash=h, name=spec,
                   default_steps=pipe.defaults.diffusion_steps)

    @property
    def bert(self):
        """The BERT of a MiniLM conditioner (exported as ``text_encoder``), else None."""
        from impact_rt.text_conditioner import MiniLMConditioner
        c = self.conditioner
        return c.model if isinstance(c, MiniLMConditioner) else None

    def descriptors(self, profile: D.Profile, sampler_cfg=(True,)) -> list[D.Descriptor]:
        from impact_rt.vae import AutoencoderKL
        from impact_rt.vocoder import HifiGan
        vae_shape = (self.model.cfg.latent_channels, self.model.cfg.latent_time, self.model.cfg.latent_freq)
        bert = self.bert
        return D.build(self.model.cfg, profile, vae=isinstance(self.vae, AutoencoderKL),
                       vocoder=isinstance(self.vocoder, HifiGan), text_encoder=bert is not None,
                       text_tokens=(self.conditioner.length - 1) if bert is not None else 77,
                       sampler_cfg=sampler_cfg, vae_shape=vae_shape,
                       mel_shape=(self.model.cfg.latent_time * 4, self.model.cfg.latent_freq * 4),
                       samples=self.model.cfg.latent_time * 4 * 160)


def _vocab(source: Source) -> int:
    c = source.conditioner
    tok = getattr(c, "tokenizer", None)
    return len(tok) if tok is not None else 30522


def onnx_precision(backend: str, precision: str) -> str:
    """The precision of the ONNX graphs. fp16 graphs are mixed: half-precision layers with fp32
    inputs/outputs and the DDPM update in fp32 (onnxruntime runs them; TensorRT builds them as
    strongly typed networks). bf16 is refused: onnxruntime's CPU MatMul has no bfloat16 kernel,
    so a bf16 graph could not be checked here."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16":
        raise ConfigError("precision bf16 is not available: onnxruntime has no bfloat16 MatMul on CPU, so bf16 "
                          "graphs cannot be checked against PyTorch; use fp32 or fp16")
    return precision


def export_components(root: Path, source: Source, descs: list[D.Descriptor], *, precision: str,
                      opset: int, check: bool = True, log=_stderr) -> list[dict]:
    """Export, check and compare each descriptor's graph into root/onnx/; report rows."""
    from .onnx_export import export_and_check
    rows = []
    for d in descs:
        t0 = time.perf_counter()
        log(f"  exporting {d.name} ...")
        row = export_and_check(d, root / "onnx" / f"{d.name}.onnx", model=source.model, vae=source.vae,
                               vocoder=source.vocoder, bert=source.bert,
                               precision="fp32" if d.kind == "text_encoder" else precision,
                               opset=opset, check=check, vocab=_vocab(source))
        row["total_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        if check:
            log(f"  {d.name}: max abs err {row['max_abs']:.3g}, mean {row['mean_abs']:.3g} "
                f"(tol {row['tol']:.3g}) in {row['total_s']:.1f} s")
        else:
            log(f"  {d.name}: exported in {row['total_s']:.1f} s (not compared)")
    return rows


def _component_entry(d: D.Descriptor, row: dict) -> dict:
    e = d.to_json()
    e["file"] = f"onnx/{d.name}.onnx"
    e["profile"] = {k: [list(s) for s in v] for k, v in d.profile().items()}
    e["bytes"], e["export_s"] = row.get("bytes"), row.get("export_s")
    e["check"] = {k: row.get(k) for k in ("ok", "max_abs", "mean_abs", "precision")}
    e["check"]["compared"] = "ok" in row
    e["check"]["tol"] = row.get("tol")        # onnx_export.compare: the tightest tolerance of its points
    return e


def build(out: Path, source: Source, *, backend: str = "onnxruntime", precision: str = "fp32",
          profile: D.Profile | None = None, opset: int = DEFAULT_OPSET, check: bool = True,
          force: bool = False, log=_stderr) -> dict:
    """Build the bundle into ``out`` (atomically); return its manifest."""
    out = Path(out)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    graph_precision = onnx_precision(backend, precision)
    check_opset(opset)
    check_out(out, "engine bundle folder")
    profile = (profile or D.Profile(diffusion_steps=(source.default_steps,))).validate(source.model.cfg)
    if backend == "tensorrt":
        from . import trt_build
        ok, why = trt_build.available()
        if not ok:
            raise ConfigError(f"cannot build TensorRT engines here: {why}")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} exists and is not empty (use --force to rebuild it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{time.time_ns()}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        # onnxruntime: the no-CFG sampler (guidance 1) is exported on first use; TensorRT needs both up front
        descs = source.descriptors(profile, (True,) if backend == "onnxruntime" else (True, False))
        log(f"exporting {len(descs)} components of {source.name} ({graph_precision}, opset {opset}) to {out}")
        rows = export_components(tmp, source, descs, precision=graph_precision, opset=opset, check=check, log=log)
        manifest = {
            "format": M.FORMAT, "version": M.VERSION, "backend": backend, "exporter_version": M.EXPORTER_VERSION,
            "model_hash": source.model_hash, "model_source": source.name, "model_config": source.model.cfg.to_dict(),
            "precision": precision, "graph_precision": graph_precision, "opset": opset,
            "libraries": M.library_versions(), "profile": profile.to_json(),
            "axes": {k: list(v) for k, v in D.axis_ranges(source.model.cfg, profile).items()},
            "components": [_component_entry(d, r) for d, r in zip(descs, rows)],
            "host_steps": _host_steps(source), "engines": {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        report = {"model_source": source.name, "precision": graph_precision, "components": rows,
                  "export_s": round(time.perf_counter() - t0, 2)}
        manifest = M.write(tmp, manifest, report)
        if backend == "tensorrt":
            from . import trt_build
            manifest = trt_build.build_engines(tmp, manifest, precision=precision, log=log)
        if out.exists():
            old = out.parent / f".tmp-old-{out.name}-{time.time_ns()}"
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(out)
        log(f"engine bundle written to {out} in {time.perf_counter() - t0:.1f} s")
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _host_steps(source: Source) -> dict:
    """What stays in Python/torch outside the graphs."""
    from impact_rt.vocoder import HifiGan
    out = {"tokenizer": "python (transformers)", "unpatchify": "torch (reshape/permute)",
           "decoding_loop": "impact_rt.decoding (python)"}
    if not isinstance(source.vocoder, HifiGan):
        out["vocoder"] = f"torch ({type(source.vocoder).__name__}: STFT/ISTFT, not exported)"
    if source.bert is None:
        out["text_conditioner"] = f"python ({type(source.conditioner).__name__}, not exported)"
    return out


def add_components(root: Path, source: Source, descs: list[D.Descriptor], manifest: dict, *,
                   log=_stderr) -> dict:
    """Export more components (e.g. a head sampler for another T̂) into an existing, verified
    bundle and re-seal its manifest. Call under ``manifest.lock(root)``."""
    root = Path(root)
    current = M.read(root)
    have = {c["name"] for c in current["components"]}
    todo = [d for d in descs if d.name not in have]
    if not todo:
        return current
    rows = export_components(root, source, todo, precision=current["graph_precision"], opset=current["opset"], log=log)
    import json
    report_path = root / M.REPORT
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"components": []}
    report["components"] = report.get("components", []) + rows
    current = dict(current)
    current["components"] = current["components"] + [_component_entry(d, r) for d, r in zip(todo, rows)]
    known = {k: v for k, v in manifest["files"].items() if k != M.REPORT}
    return M.write(root, current, report, known=known)


def print_report(manifest: dict, file=None) -> None:
    """One line per component: size, export time, max and mean abs error against PyTorch."""
    file = file or sys.stdout
    print(f"{'component':<26}{'MB':>9}{'export s':>10}{'max abs err':>13}{'mean abs err':>14}{'tol':>10}  ok",
          file=file)
    for c in manifest["components"]:
        ch = c.get("check", {})
        fmt = lambda v: "-" if v is None else format(v, ".3g")  # noqa: E731
        ok = "-" if not ch.get("compared") else ("yes" if ch.get("ok") else "NO")
        print(f"{c['name']:<26}{(c.get('bytes') or 0) / 1e6:>9.2f}{fmt(c.get('export_s')):>10}"
              f"{fmt(ch.get('max_abs')):>13}{fmt(ch.get('mean_abs')):>14}{fmt(ch.get('tol')):>10}  {ok}", file=file)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{what} is empty")
    return vals


class _ArgumentError(ConfigError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), as ``impact-rt``'s: main reports them."""

    def error(self, message):
        raise _ArgumentError(message)


def main(argv=None, prog: str = "python -m export.build_engines") -> int:
    """Errors are one line, ``<prog>: error: ...`` (``impact-rt export: error: ...`` as a subcommand)."""
    from impact_rt.cli import HelpFormatter
    ap = _Parser(prog=prog, formatter_class=HelpFormatter,
                 description="Export IMPACT components to ONNX (and TensorRT engines), checked against PyTorch.")
    ap.add_argument("--model", required=True, help="model bundle folder, or random:test / random:small / random:base")
    ap.add_argument("--out", default=None, help="engine bundle folder (default: the backends' cache folder)")
    ap.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--batch-sizes", default="1,8", help="prompt batch sizes (TensorRT profile: min/opt/max)")
    ap.add_argument("--iterations", default="4,16,64", help="decoding iterations T the profile covers")
    ap.add_argument("--diffusion-steps", default=None, help="T̂ values: one head_sampler graph each (default: the bundle's)")
    lo, hi = opset_range()
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {lo}..{hi} (default: {DEFAULT_OPSET})")
    ap.add_argument("--force", action="store_true", help="rebuild an existing bundle")
    ap.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch (graphs are still checked)")
    from impact_rt import bundle as B

    def fail(msg: str, code: int) -> int:
        _stderr(f"{prog}: error: {msg}")
        return code

    try:
        args = ap.parse_args(argv)
        # every argument is checked before the model is loaded, the profile right after: before any export
        check_opset(args.opset)
        onnx_precision(args.backend, args.precision)
        batch_sizes, iterations = _ints(args.batch_sizes, "--batch-sizes"), _ints(args.iterations, "--iterations")
        steps = _ints(args.diffusion_steps, "--diffusion-steps") if args.diffusion_steps else None
        if args.out:
            check_out(Path(args.out))
        source = Source.load(args.model)
        profile = D.Profile(batch_sizes, iterations, steps or (source.default_steps,)).validate(source.model.cfg)
        out = Path(args.out) if args.out else check_out(
            M.cache_dir(source.model_hash, args.precision, args.backend, args.opset), "engine bundle folder")
        if out.exists() and (out / M.MANIFEST).is_file() and not args.force:
            try:
                m = M.verify(out, backend=args.backend, model_hash=source.model_hash, precision=args.precision)
                want = {d.name for d in source.descriptors(profile)}
                if want <= {c["name"] for c in m["components"]}:
                    print(f"{out} is up to date (use --force to rebuild)")
                    print_report(m)
                    return 0
            except B.BundleError:
                pass
        m = build(out, source, backend=args.backend, precision=args.precision, profile=profile, opset=args.opset,
                  check=not args.no_check, force=args.force)
        print_report(m)
        print(f"report: {out / M.REPORT}")
        return 0
    except ConfigError as e:
        return fail(str(e), 2)
    except (B.BundleError, ValueError, RuntimeError, OSError) as e:
        return fail(str(e).splitlines()[0] if str(e) else type(e).__name__, 1)


if __name__ == "__main__":
    sys.exit(main())
