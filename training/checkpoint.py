"""Training checkpoints without pickle: tensors in safetensors, scalars in JSON.

A checkpoint folder holds ``state.safetensors`` (model, EMA, optimizer moments, RNG states) and
``state.json`` (step, optimizer hyper-parameters, anything else). Writes are atomic (temp folder,
then rename), so an interrupted save never corrupts the last good checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from impact_rt.fileio import atomic_write_text


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"opt.{idx}.{name}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    d = Path(directory)
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    old = d.with_name(d.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if d.exists():
        os.replace(d, old)
    os.replace(tmp, d)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) of the checkpoint folder, None where there is none; a corrupt or incomplete
    one is a one-line ValueError."""
    from safetensors import SafetensorError
    d = Path(directory)
    if not (d / "state.json").is_file():
        old = d.with_name(d.name + ".old")  # a save interrupted between the two renames
        if (old / "state.json").is_file():
            d = old
        else:
            return None
    try:
        meta = json.loads((d / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {d}: unreadable state.json ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {d}: state.json does not hold a JSON object")
    if not (d / "state.safetensors").is_file():
        raise ValueError(f"checkpoint {d} has state.json but no state.safetensors")
    try:
        tensors = load_file(str(d / "state.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {d}: state.safetensors is corrupt ({str(e).splitlines()[0]})") from None
    return tensors, meta


def prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in sd.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def refuse_other_options(out, fixed, saved: dict, cfg, what: str, saved_shape: dict, now_shape: dict,
                         extra: tuple[str, ...] = ()) -> None:
    """Resuming the run in ``out`` with other options is a one-line ValueError naming each: the ``fixed``
    fields of ``cfg`` that differ from the checkpoint's ``saved`` ones, ``extra`` differences already
    found, and the ``what`` ("the model") whose ``saved_shape`` differs from ``now_shape``."""
    differ = [f"{f} ({saved[f]!r} in the checkpoint, {getattr(cfg, f)!r} now)" for f in fixed
              if f in saved and saved[f] != getattr(cfg, f)] + list(extra)
    shape = sorted((k, v) for k, v in saved_shape.items() if now_shape.get(k) != v)
    if shape:
        differ.append(f"{what} (" + ", ".join(f"{k} {v!r} in the checkpoint, {now_shape.get(k)!r} now"
                                              for k, v in shape) + ")")
    if differ:
        raise ValueError(f"{out} holds a run trained with other options: {'; '.join(differ)}; "
                         "resume it with the same ones or give another --out")


def trim_log(path: str | Path, step: int) -> int:
    """Make a run's CSV log (first column: the step) end where the run resumes, at ``step``.

    A crash leaves rows of the steps after the last checkpoint, which the resumed run logs again,
    and may leave a partial last line. Both are dropped, atomically (a log whose header line is
    partial is removed, so that the run writes it again). Returns the lines dropped.
    """
    p = Path(path)
    if not p.is_file():
        return 0
    text = p.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    partial = lines.pop()                  # '' when the file ends with a newline
    dropped = int(partial != "")
    header, rows = (lines[0], lines[1:]) if lines else (None, [])
    kept = []
    for row in rows:
        first = row.split(",", 1)[0]
        if first.isdigit() and int(first) <= step:
            kept.append(row)
        else:
            dropped += 1
    if dropped == 0:
        return 0
    if header is None:
        p.unlink()
        return dropped
    atomic_write_text(p, "".join(line + "\n" for line in [header, *kept]))
    return dropped
