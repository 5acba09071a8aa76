"""What the training command lines share: one-line errors, as impact_rt.cli's.

Bad arguments or input: ``<who>: error: <what>`` on stderr and exit status 2, before any output is
written; a failure while working: the same line and exit status 1. No traceback either way.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from impact_rt.fileio import output_file_problem


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): '<who>: error: ...', exit status 2.
    ``who`` defaults to the program's module name (train_impact for training/train_impact.py)."""

    def __init__(self, *args, who: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.who = who or Path(self.prog.split()[0]).stem

    def error(self, message):
        self.exit(2, f"{self.who}: error: {message}\n")


def fail(who: str, message, code: int = 2) -> int:
    """Print ``who: error: message`` (its first line) to stderr; return ``code`` for main to return."""
    text = str(message).strip()
    print(f"{who}: error: {text.splitlines()[0] if text else type(message).__name__}", file=sys.stderr)
    return code


def at_least(ap: argparse.ArgumentParser, args, minimum, *options: str) -> None:
    """``ap.error`` for the first of ``options`` ("--batch-size") given below ``minimum``."""
    for opt in options:
        v = getattr(args, opt.lstrip("-").replace("-", "_"))
        if v is not None and v < minimum:
            ap.error(f"{opt} must be at least {minimum}, got {v}")


def share(ap: argparse.ArgumentParser, args, *options: str) -> None:
    """``ap.error`` for the first of ``options`` given outside [0, 1]."""
    for opt in options:
        v = getattr(args, opt.lstrip("-").replace("-", "_"))
        if v is not None and not 0.0 <= v <= 1.0:
            ap.error(f"{opt} must be in [0, 1], got {v}")


def check_out_file(ap: argparse.ArgumentParser, path, force: bool, what: str = "--out") -> None:
    """``ap.error`` where ``path`` cannot be written as an output file (impact_rt.fileio.output_file_problem:
    a folder, an existing file without --force, a missing folder)."""
    problem = output_file_problem(path, force, what)
    if problem:
        ap.error(problem)


def check_run_folder(ap: argparse.ArgumentParser, path, what: str = "--out") -> None:
    """``ap.error`` where ``path`` exists but is not a folder (a run folder is created or resumed)."""
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        ap.error(f"{what} {path} is a file, not a folder")


def check_device(ap: argparse.ArgumentParser, name: str) -> None:
    """``ap.error`` for a device torch does not know, or a CUDA device on a machine without one."""
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        ap.error(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {name}: no CUDA device here")


def load_component(loader, directory, what: str):
    """``loader(directory)`` (e.g. ``AutoencoderKL.from_pretrained``), with a missing, corrupt or
    mismatched component folder turned into a one-line ValueError naming ``what`` (--vae, --init)."""
    from safetensors import SafetensorError
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{what} {directory} is not a folder" if d.exists() else f"{what} not found: {directory}")
    try:
        return loader(str(d))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what} {directory}: cannot load it ({msg})") from None


def read_manifest(path, columns=("file",)) -> list[dict]:
    """The rows of a manifest CSV; a folder, a missing, unreadable or non-UTF-8 file, or one without
    ``columns`` is a one-line ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"manifest {path} is a folder, not a CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), reader.fieldnames or []
    except UnicodeDecodeError:
        raise ValueError(f"manifest {path} is not a UTF-8 text file") from None
    except FileNotFoundError:
        raise ValueError(f"manifest not found: {path}") from None
    except (OSError, csv.Error) as e:
        raise ValueError(f"cannot read manifest {path}: {e}") from None
    lacking = [c for c in columns if c not in fields]
    if lacking:
        raise ValueError(f"manifest {path} has no {', '.join(repr(c) for c in lacking)} column"
                         + ("s" if len(lacking) > 1 else ""))
    return rows
