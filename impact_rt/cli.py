"""The ``impact-rt`` command line.

Exit codes: 0 success, 2 usage errors (bad arguments, bad input), 1 runtime errors (missing or
corrupt weights, unwritable output). Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from .config import PRECISIONS, ConfigError

FORMATS = ("wav", "flac", "ogg")


class UsageError(ConfigError):
    pass


def _prompt_slug(prompt: str, limit: int = 60) -> str:
    """A file-name stem that is safe on every filesystem (ASCII letters, digits, dashes)."""
    import unicodedata
    s = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:limit].strip("-")
    return s or "clip"


def _read_prompts_file(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"prompts file {path} is a folder")
    if not p.is_file():
        raise UsageError(f"prompts file not found: {path}")
    try:   # utf-8-sig: a byte-order mark (Excel, Notepad) is not part of the first prompt or column name
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"prompts file {path} is not UTF-8 (byte {e.start})") from None
    if p.suffix.lower() == ".csv":
        import csv
        import io
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if "caption" not in (reader.fieldnames or ()):
                raise UsageError(f"prompts file {path}: a CSV needs a 'caption' column")
            prompts = []
            for r in reader:
                if r["caption"] is None:
                    raise UsageError(f"prompts file {path}, line {reader.line_num}: no caption field")
                prompts.append(r["caption"])
        except csv.Error as e:
            raise UsageError(f"prompts file {path}: malformed CSV ({e})") from None
        if not prompts:
            raise UsageError(f"prompts file {path} has a header but no rows")
        return prompts
    return [line for line in text.splitlines() if line.strip()]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): 'impact-rt: error: ...', exit code 2."""

    def error(self, message):
        self.exit(2, f"impact-rt: error: {message}\n")


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", "-T", type=int, default=None, help="decoding iterations T (default: the bundle's)")
    p.add_argument("--diffusion-steps", "-K", type=int, default=None, help="DDPM steps per iteration T̂ (default: the bundle's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG β_max (default: the bundle's)")
    p.add_argument("--temperature", type=float, default=None, help="noise temperature (default: the bundle's)")
    p.add_argument("--refine", type=int, default=None,
                   help="re-masking passes after the decode, each up to one more decode's time (default: the bundle's)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default where it says something: not None or False, nor where the help gives it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .backends import BACKENDS
    ap = _Parser(prog="impact-rt", description="Fast IMPACT text-to-audio runtime.",
                                 formatter_class=HelpFormatter)
    ap.add_argument("--version", action="version", version=f"impact-rt {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate 10.24 s clips from text prompts",
                       formatter_class=HelpFormatter)
    g.add_argument("prompts", nargs="*", metavar="PROMPT")
    g.add_argument("--prompts-file", help="text file (one prompt a line) or AudioCaps-style CSV (caption column)")
    g.add_argument("-n", "--num", type=int, default=1, help="clips per prompt")
    g.add_argument("--seed", type=int, default=None, help="seed of the first clip (then +1 per clip); random if absent")
    g.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="steer guidance away from this text (replaces the null condition in CFG)")
    g.add_argument("--candidates", type=int, default=None, metavar="K",
                   help="decode K clips per prompt and keep the one the bundle's scorer rates closest "
                        "(default: the bundle's; 1 = no reranking)")
    _add_decode_args(g)
    g.add_argument("--backend", default="auto", choices=BACKENDS)
    g.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="compute precision (default: the backend's; cpu: bf16 where the CPU was measured "
                        "faster in it (AMX, AMD AVX-512 BF16), else fp32)")
    g.add_argument("--model", default=None, help="model bundle folder (default: the shipped model)")
    g.add_argument("--batch-size", type=int, default=8, help="clips generated together")
    g.add_argument("-o", "--output", default=None, help="output file (one clip only)")
    g.add_argument("--out-dir", default=None, help="output folder (file names derived from prompts; default: .)")
    g.add_argument("--format", default=None, choices=FORMATS, help="audio format (default: from -o, else wav)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")
    g.add_argument("--spectrogram", action="store_true", help="write a PNG spectrogram beside each clip")
    g.add_argument("--json", action="store_true", help="print one JSON record per clip")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    sub.add_parser("export", add_help=False,
                   help="export a model bundle to ONNX / TensorRT (same as python -m export.build_engines)")

    i = sub.add_parser("info", help="presets, parameter counts and available backends",
                       formatter_class=HelpFormatter)
    i.add_argument("--json", action="store_true")

    from . import bench
    bp = sub.add_parser("bench", help="latency / RTF / peak memory grid against the eager reference",
                        formatter_class=HelpFormatter)
    bench.add_arguments(bp)
    bp.set_defaults(_run=bench.run)

    try:
        from .evaluation import cli as eval_cli
        e = sub.add_parser("eval", help="evaluate generated clips (YAMNet FD, KL, IS, prompt adherence)",
                           formatter_class=HelpFormatter)
        eval_cli.add_arguments(e)
        e.set_defaults(_run=eval_cli.run)
    except ImportError:  # pragma: no cover - evaluation is part of the package
        pass
    return ap


def _output_format(output: str | None, fmt: str | None) -> str:
    """The audio format: --format, else -o's extension, else wav. An -o extension must name a known
    format, and the one --format names when both are given (a .wav holding FLAC would mislead)."""
    ext = Path(output).suffix.lstrip(".").lower() if output else ""
    if output and ext and ext not in FORMATS:
        raise UsageError(f"-o/--output {output}: unknown audio extension .{ext}; use one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    if output and ext and fmt and fmt != ext:
        raise UsageError(f"-o/--output {output} names a .{ext} file but --format says {fmt}")
    if output and not ext and not fmt:
        raise UsageError(f"-o/--output {output} has no file extension; add one of "
                         f"{', '.join('.' + f for f in FORMATS)} or pass --format")
    return fmt or ext or "wav"


def _plan_outputs(args, prompts: list[str], fmt: str) -> list[Path]:
    n_clips = len(prompts) * args.num
    if args.output:
        if n_clips != 1:
            raise UsageError(f"-o/--output names one file but {n_clips} clips were asked for; use --out-dir")
        if args.out_dir is not None:
            raise UsageError("-o/--output and --out-dir both name where to write; give one")
        paths = [Path(args.output)]
    else:
        out_dir = Path(args.out_dir or ".")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out-dir {out_dir} is a file, not a folder")
        if not out_dir.is_dir():
            raise UsageError(f"output folder does not exist: {out_dir}")
        paths, used = [], set()
        for p in prompts:
            for k in range(args.num):
                stem = _prompt_slug(p) + (f"-{k + 1}" if args.num > 1 else "")
                name, j = stem, 2
                while name in used:
                    name, j = f"{stem}-{j}", j + 1
                used.add(name)
                paths.append(out_dir / f"{name}.{fmt}")
    extra = [p.with_suffix(".png") for p in paths] if args.spectrogram else []
    for p in paths + extra:
        if p.exists() and not args.force:
            raise UsageError(f"{p} exists (use --force to overwrite)")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"output folder does not exist: {parent}")
    for parent in {p.parent for p in paths}:
        _probe_writable(parent)
    return paths


def _probe_writable(folder: Path) -> None:
    from .fileio import probe_writable
    try:
        probe_writable(folder)
    except OSError as e:
        raise OutputError(f"output folder is not writable: {folder} ({e.strerror or e})") from None


class OutputError(OSError):
    pass


def cmd_generate(args) -> int:
    from .pipeline import MAX_SEED, Pipeline, check_prompts
    prompts = list(args.prompts)
    if args.prompts_file:
        prompts += _read_prompts_file(args.prompts_file)
    if not prompts:
        raise UsageError("no prompt given (pass PROMPT or --prompts-file)")
    prompts = check_prompts(prompts)
    if args.negative_prompt is not None:
        check_prompts([args.negative_prompt], "negative prompt")
    if args.num < 1:
        raise UsageError(f"-n must be at least 1, got {args.num}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    last = MAX_SEED + 1 - len(prompts) * args.num      # clip i gets seed + i
    if args.seed is not None and not 0 <= args.seed <= last:
        raise UsageError(f"--seed must be in 0..{last} for {len(prompts) * args.num} clip(s), got {args.seed}")
    from .bundle import MAX_CANDIDATES
    if args.candidates is not None and not 1 <= args.candidates <= MAX_CANDIDATES:
        raise UsageError(f"--candidates must be in 1..{MAX_CANDIDATES}, got {args.candidates}")
    if args.output and Path(args.output).is_dir():
        raise UsageError(f"-o/--output names a file, and {args.output} is a folder (use --out-dir for a folder)")
    fmt = _output_format(args.output, args.format)
    from .config import DecodeConfig
    early = DecodeConfig(**{k: v for k, v in (("iterations", args.iterations), ("diffusion_steps", args.diffusion_steps),
                                              ("guidance", args.guidance), ("temperature", args.temperature),
                                              ("refine", args.refine))
                            if v is not None})
    early.validate(256)  # the token count of every bundle's latent geometry; re-checked once loaded
    paths = _plan_outputs(args, prompts, fmt)
    pipe = Pipeline.from_pretrained(args.model, backend=args.backend, precision=args.precision)
    pipe.decode_config(args.iterations, args.diffusion_steps, args.guidance, args.temperature,
                       args.refine)  # validate early
    pipe.candidates(args.candidates)
    jobs = [(p, k) for p in prompts for k in range(args.num)]
    import secrets
    base_seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), unit="clip", disable=args.quiet or args.json, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} clips [{elapsed}<{remaining}, {rate_inv_fmt}]")
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start:start + args.batch_size]
        seeds = [base_seed + start + j for j in range(len(batch))]
        out = pipe.generate([p for p, _ in batch], seed=seeds, iterations=args.iterations,
                            diffusion_steps=args.diffusion_steps, guidance=args.guidance,
                            temperature=args.temperature, refine=args.refine, negative_prompt=args.negative_prompt,
                            candidates=args.candidates, progress=batch_progress(bar, start, len(batch)))
        for j in range(len(batch)):
            path = paths[start + j]
            with _interrupts_deferred():   # a clip on disk is always a clip reported (SIGINT waits)
                _save_and_report(args, out, j, path, fmt, seeds, batch, bar)
        bar.n = start + len(batch)
        bar.refresh()
    bar.close()
    return 0


def batch_progress(bar, done: int, size: int):
    """The pipeline's per-iteration callback for a batch of ``size`` clips after ``done``: the bar moves
    by fractions of a clip while the batch decodes (a batch of 8 takes ~9 s on a 2-core CPU), and
    reaches done + size only once the batch's audio is written."""
    def on_iteration(t: int, total: int) -> None:
        bar.n = done + size * (t + 1) / (total + 1)    # the audio stage counts as one more step
        bar.refresh()
    return on_iteration


def _interrupts_deferred():
    """Hold SIGINT back for a short critical section (main thread); a no-op elsewhere.

    A Python-level handler swap, not ``pthread_sigmask``: a mask covers only the calling thread, and a
    process-directed SIGINT is then delivered to one of torch's or tqdm's threads, whose C handler
    still trips the interpreter's flag, so the KeyboardInterrupt came in the middle of the section.
    Python runs whatever handler is installed when it checks the flag, so an interrupt that arrives
    just before, or during, the section is recorded here and raised as soon as the section ends."""
    import contextlib
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def held():
        pending = []
        old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
        if pending:
            raise KeyboardInterrupt
    return held()


def _save_and_report(args, out, j, path, fmt, seeds, batch, bar):
    """Write clip j of ``out`` in format ``fmt`` (and its spectrogram) and report it."""
    out.save(path, index=j, format=fmt, force=args.force)
    if args.spectrogram:
        from .spectrogram import spectrogram_png
        spectrogram_png(out.audio[j], str(path.with_suffix(".png")))
    if args.json:
        per_clip = {k: v[j] for k, v in out.settings.items() if k in ("chosen", "scores", "negative_prompts", "clipped", "peak")}
        rec = {"file": str(path), "prompt": out.prompts[j], "seed": seeds[j], **out.settings, **per_clip,
               "sample_rate": out.sample_rate, "seconds": out.audio.shape[1] / out.sample_rate,
               "latency_s": round(out.timings["total_s"] / len(batch), 4)}
        print(json.dumps(rec), flush=True)
    elif args.quiet:
        pass
    else:
        bar.write(f"wrote {path}")


def cmd_info(args) -> int:
    import torch

    from . import __version__
    from .backends import availability
    from .config import PRESETS
    from .model import IMPACT
    presets = {}
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            c = IMPACT(cfg).param_counts()
        presets[name] = {"latent_encoder": c.latent_encoder, "diffusion_head": c.diffusion_head, "total": c.total,
                         "dim": cfg.dim, "blocks": f"{cfg.enc_depth}+{cfg.dec_depth}",
                         "head": f"w={cfg.head_width} d={cfg.head_depth}"}
    backends = {k: {"available": ok, "detail" if ok else "reason": why} for k, (ok, why) in availability().items()}
    info = {"version": __version__, "torch": torch.__version__, "presets": presets, "backends": backends}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"impact-rt {__version__} (torch {torch.__version__})\n")
    print(f"{'preset':8} {'encoder':>12} {'head':>12} {'total':>12}  shape")
    for name, p in presets.items():
        print(f"{name:8} {p['latent_encoder']:>12,} {p['diffusion_head']:>12,} {p['total']:>12,}  "
              f"D={p['dim']} {p['blocks']} blocks, head {p['head']}")
    print("\nbackends:")
    for k, b in backends.items():
        print(f"  {k:12} {'yes' if b['available'] else 'no '}  {b.get('detail') or b.get('reason')}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        from export.build_engines import main as export_main
        return export_main(argv[1:], prog="impact-rt export")
    ap = _build_parser()
    args = ap.parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"impact-rt: warning: {msg}\n"
    from .bundle import BundleError
    run = getattr(args, "_run", None) or {"generate": cmd_generate, "info": cmd_info}[args.command]
    try:
        return run(args)
    except ConfigError as e:
        print(f"impact-rt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impact-rt: interrupted", file=sys.stderr)
        return 130
    except (BundleError, OSError, RuntimeError, FileExistsError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"impact-rt: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
