"""Atomic file writes: a temporary file in the target's folder, then a rename.

No reader ever sees a partial file, and an interrupted write leaves the old file (or nothing).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def output_file_problem(path: str | os.PathLike, force: bool, what: str = "--out") -> str | None:
    """Why ``path`` cannot be written as an output file (``what`` names the option), or None: a
    folder, an existing file (or link) without ``force``, a folder that does not exist. One line."""
    p = Path(path)
    if p.is_dir():
        return f"{what} {path} is a folder"
    if (p.exists() or p.is_symlink()) and not force:
        return f"{path} exists (use --force to overwrite)"
    if not p.absolute().parent.is_dir():
        return f"folder of {what} does not exist: {p.absolute().parent}"
    return None


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a temporary file in ``folder``: catches read-only filesystems even for root
    (permission bits alone do not). Raises OSError."""
    fd, tmp = tempfile.mkstemp(prefix=".impact-rt-probe-", dir=folder)
    os.close(fd)
    os.remove(tmp)
