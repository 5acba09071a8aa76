"""Data and training plumbing shared by train_vae and train_vocoder.

Data: a manifest CSV with a `file` column (relative paths are relative to the CSV) or a folder of
audio files; random crops of n_samples (10.24 s by default), AudioLDM's normalisation (mean removed,
peak 0.5), returned with their log-mel. Batches are a pure function of (seed, rank, step): item
`step` of StepBatches is the batch for that step, so resuming at step k sees exactly the batches an
uninterrupted run would have seen, whatever the number of loader workers, and with no RNG state
to save.

Checkpoints: one folder `checkpoint/` holding `checkpoint.safetensors` (module weights and every
optimizer tensor) and `state.json` (step, scalars, optimizer param groups, run arguments). Never
pickle. Written to `checkpoint.tmp/` and swapped in, so a crash leaves the previous one intact.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from impact_rt.audio import HOP, N_SAMPLES, MelSpectrogram, load_audio, normalize_waveform, pad_or_trim

from . import precision
from .checkpoint import trim_log

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# ----------------------------------------------------------------------------- data


def list_audio_files(manifest: str | None = None, folder: str | None = None) -> list[str]:
    """Audio files from a manifest CSV (`file` column) or a folder (searched recursively), sorted."""
    if (manifest is None) == (folder is None):
        raise ValueError("give exactly one of manifest and folder")
    if manifest is not None:
        from .cli import read_manifest
        if Path(manifest).is_dir():
            raise ValueError(f"manifest {manifest} is a folder (give a CSV file, or the folder with --folder)")
        base = Path(manifest).resolve().parent
        files = [str(base / row["file"]) for row in read_manifest(manifest) if (row["file"] or "").strip()]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"manifest {manifest} lists {len(missing)} audio files that do not exist "
                             f"(first: {missing[0]})")
    else:
        if not Path(folder).is_dir():
            raise ValueError(f"audio folder not found: {folder}")
        files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"no audio files found in {manifest or folder}")
    return files


def random_crop(wav: torch.Tensor, n_samples: int, rng: np.random.Generator) -> torch.Tensor:
    """A random n_samples window of a 1-D waveform; shorter ones are zero-padded at the end."""
    if wav.shape[0] <= n_samples:
        return pad_or_trim(wav, n_samples)
    start = int(rng.integers(0, wav.shape[0] - n_samples + 1))
    return wav[start:start + n_samples]


class StepBatches(torch.utils.data.Dataset):
    """Item `step` -> {"wav": [B, n_samples], "mel": [B, n_samples / 160, 64]} drawn with
    np.random.default_rng([seed, rank, step]). Decoded files are cached (up to cache_mb)."""

    def __init__(self, files: list[str], batch_size: int, n_samples: int = N_SAMPLES, seed: int = 0,
                 rank: int = 0, cache_mb: float = 2048.0):
        if n_samples % HOP:
            raise ValueError(f"n_samples must be a multiple of {HOP}")
        self.files, self.batch_size, self.n_samples = list(files), batch_size, n_samples
        self.seed, self.rank, self.cache_bytes = seed, rank, cache_mb * 2 ** 20
        self.mel = MelSpectrogram(n_frames=n_samples // HOP)
        self._cache: dict[int, torch.Tensor] = {}
        self._cached = 0

    def __len__(self) -> int:
        return 2 ** 62  # steps are unbounded; a sampler picks which ones

    def load(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        try:
            wav = load_audio(self.files[index])
        except Exception as e:  # soundfile's errors for unreadable or foreign files
            raise ValueError(f"cannot read audio {self.files[index]}: {str(e).splitlines()[0] if str(e) else e!r}") from None
        if self._cached + wav.numel() * 4 <= self.cache_bytes:
            self._cache[index] = wav
            self._cached += wav.numel() * 4
        return wav

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, int(step)])
        picks = rng.integers(0, len(self.files), size=self.batch_size)
        wav = torch.stack([normalize_waveform(random_crop(self.load(int(i)), self.n_samples, rng))
                           for i in picks])
        with torch.no_grad():
            mel = self.mel(wav)
        return {"wav": wav, "mel": mel, "step": torch.tensor(int(step))}


class StepSampler(torch.utils.data.Sampler):
    """Yields step numbers start, start + 1, ... (stop exclusive; None for endless)."""

    def __init__(self, start: int, stop: int | None = None):
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield step
            step += 1


def make_loader(batches: StepBatches, start: int, stop: int | None, workers: int):
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=StepSampler(start, stop),
                                       num_workers=workers, persistent_workers=False,
                                       prefetch_factor=2 if workers else None)


# ----------------------------------------------------------------------------- devices, seeds, DDP


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun (WORLD_SIZE > 1) joins the process group and
    picks cuda:LOCAL_RANK; otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed for one training step (noise, dropout): a pure function of (seed, step, rank)."""
    return int(np.random.default_rng([seed, rank, step, 7]).integers(0, 2 ** 62))


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CPU or GPU (precision 'bf16'), or nothing ('fp32')."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_lr(optimizer: torch.optim.Optimizer, lr: float, step: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then constant: stateless, so resuming needs nothing."""
    value = lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr
    for group in optimizer.param_groups:
        group["lr"] = value
    return value


# ----------------------------------------------------------------------------- checkpoints


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, info: dict, prefix: str) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in info["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(directory: str, step: int, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], extra: dict | None = None) -> None:
    """Write <directory>/checkpoint.safetensors + state.json atomically (tmp folder, then swap)."""
    from safetensors.torch import save_file

    tmp, old = directory + ".tmp", directory + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tensors, optim_info = {}, {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value
    for name, opt in optimizers.items():
        t, info = optimizer_tensors(opt, f"optim.{name}")
        tensors.update(t)
        optim_info[name] = info
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(tmp, "checkpoint.safetensors"))
    state = {"step": step, "optimizers": optim_info, "time": time.time(), **(extra or {})}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(directory: str) -> str | None:
    for d in (directory, directory + ".old"):  # .old survives a crash between the two renames
        if os.path.isfile(os.path.join(d, "state.json")):
            return d
    return None


def load_checkpoint(directory: str, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore modules and optimizers in place; returns state.json's content."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with open(os.path.join(directory, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {directory}: unreadable state.json ({e})") from None
    try:
        tensors = load_file(os.path.join(directory, "checkpoint.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {directory}: checkpoint.safetensors is missing or corrupt "
                         f"({str(e).splitlines()[0]})") from None
    for name, module in modules.items():
        prefix = f"model.{name}."
        device = next(iter(module.state_dict().values())).device
        module.load_state_dict({k[len(prefix):]: v.to(device) for k, v in tensors.items()
                                if k.startswith(prefix)})
    for name, opt in optimizers.items():
        load_optimizer(opt, tensors, state["optimizers"][name], f"optim.{name}")
    return state


# ----------------------------------------------------------------------------- the loop


class CsvLog:
    """Appends one row per step to a CSV; the header comes from the first row's keys."""

    def __init__(self, path: str):
        self.path, self.fields = path, None
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f))

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def read_log(path: str) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def start(args) -> tuple[int, int, torch.device]:
    """What every trainer's main does first: check the data source, set threads, join the
    process group (torchrun), seed. Returns (rank, world, device)."""
    if (args.manifest is None) == (args.folder is None):
        raise SystemExit("give --manifest or --folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = setup_distributed(resolve_device(args.device))
    args.precision = precision.resolve(args.precision, device)
    torch.manual_seed(args.seed)
    return rank, world, device


def check_common_args(ap, args) -> None:
    """``ap.error`` (one line, exit 2) for common arguments no run can use: no data source or two,
    counts below 1, negative limits, an --out that is a file, a device torch lacks."""
    from .cli import at_least, check_device, check_run_folder
    if (args.manifest is None) == (args.folder is None):
        ap.error("give --manifest or --folder")
    at_least(ap, args, 1, "--batch-size", "--crop-frames", "--threads")
    at_least(ap, args, 0, "--steps", "--minutes", "--workers")
    check_run_folder(ap, args.out)
    if args.device != "auto":
        check_device(ap, args.device)


def add_common_args(ap) -> None:
    ap.add_argument("--manifest", help="CSV with a 'file' column")
    ap.add_argument("--folder", help="folder of audio files (instead of --manifest)")
    ap.add_argument("--out", required=True, help="run folder: checkpoint/, log.csv, export/")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop-frames", type=int, default=1024, help="crop length in mel frames (x160 samples)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--steps", type=int, default=None, help="stop at this (absolute) step")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--ckpt-minutes", type=float, default=15.0, help="checkpoint every N minutes")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    precision.add_argument(ap)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--workers", type=int, default=0, help="data loader processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def check_resumable(directory: str, trainer) -> None:
    """A one-line ValueError where the checkpoint in ``directory`` was made with another configuration
    than ``trainer``'s: another kind, architecture or model config (``extra_state``), other modules
    (discriminators on or off), or another set of trained parameters (--freeze-encoder)."""
    try:
        with open(os.path.join(directory, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {directory}: unreadable state.json ({e})") from None
    extra = json.loads(json.dumps(trainer.extra_state()))
    # another kind or architecture says it all; else the config's differing fields
    differ = [f"{key} ({state[key]!r} in the checkpoint, {now!r} now)" for key, now in extra.items()
              if key in state and state[key] != now and not isinstance(now, dict)]
    for key, now in extra.items():
        if not differ and isinstance(now, dict) and isinstance(state.get(key), dict) and state[key] != now:
            keys = sorted(k for k in set(now) | set(state[key]) if now.get(k) != state[key].get(k))
            differ.append(f"{key} (" + ", ".join(f"{k} {state[key].get(k)!r} in the checkpoint, "
                                                  f"{now.get(k)!r} now" for k in keys) + ")")
    saved = state.get("optimizers", {})
    if not differ and set(saved) != set(trainer.optimizers):
        differ.append(f"modules ({', '.join(sorted(saved)) or 'none'} in the checkpoint, "
                      f"{', '.join(sorted(trainer.optimizers))} now)")
    if not differ:
        for name, opt in trainer.optimizers.items():
            had = sum(len(g.get("params", ())) for g in saved[name].get("param_groups", ()))
            has = sum(len(g["params"]) for g in opt.param_groups)
            if had != has:
                differ.append(f"the trained parameters of {name} ({had} tensors in the checkpoint, {has} now)")
    if differ:
        raise ValueError(f"{directory} holds a run of another configuration: {'; '.join(differ)}; resume it with "
                         "the same options, or give another --out or --no-resume")


def run_training(trainer, args, rank: int = 0, world: int = 1) -> int:
    """Resume if a checkpoint exists, train until --steps or --minutes, checkpoint on a timer and
    at the end. `trainer` has .modules, .optimizers (dicts), .train_step(batch) -> dict of floats,
    and .extra_state() -> dict (JSON). Returns the step reached."""
    from tqdm import tqdm

    files = list_audio_files(args.manifest, args.folder)
    ckpt_dir = os.path.join(args.out, "checkpoint")
    step = 0
    found = None if args.no_resume else find_checkpoint(ckpt_dir)
    if found:
        check_resumable(found, trainer)
        step = load_checkpoint(found, trainer.modules, trainer.optimizers)["step"]
        print(f"resumed from {found} at step {step}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    batches = StepBatches(files, args.batch_size, args.crop_frames * HOP, args.seed, rank)
    if rank == 0:
        trim_log(os.path.join(args.out, "log.csv"), step)   # rows past the checkpoint a crash left
    log = CsvLog(os.path.join(args.out, "log.csv")) if rank == 0 else None
    start = time.monotonic()
    last_ckpt = start

    def checkpoint(at: int) -> None:
        if rank == 0:
            save_checkpoint(ckpt_dir, at, trainer.modules, trainer.optimizers,
                            {"args": vars(args), **trainer.extra_state()})

    if args.steps is not None and step >= args.steps:
        return step
    in_step = False
    bar = tqdm(total=args.steps, initial=step, disable=args.quiet or rank != 0, mininterval=2.0,
               dynamic_ncols=True, file=sys.stderr)
    try:
        for batch in make_loader(batches, step, args.steps, args.workers):
            assert int(batch["step"]) == step
            torch.manual_seed(step_seed(args.seed, step, rank))
            in_step = True
            losses = trainer.train_step(batch, step)
            in_step = False
            step += 1
            now = time.monotonic()
            if log is not None:
                log.write({"step": step, "seconds": round(now - start, 3), **losses})
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
            if args.minutes is not None and now - start >= args.minutes * 60:
                break
            if now - last_ckpt >= args.ckpt_minutes * 60:
                checkpoint(step)
                last_ckpt = now
    except ValueError as e:    # a loader worker's error comes as 'Caught ValueError in DataLoader worker ...' + traceback
        bar.close()
        lines = str(e).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught "):
            raise ValueError(lines[-1].split(": ", 1)[-1]) from None
        raise
    except KeyboardInterrupt:  # Ctrl-C between steps: checkpoint; inside one: keep the last one
        bar.close()
        if in_step:
            print(f"interrupted during step {step}; the last checkpoint stands", file=sys.stderr)
            return step
        print(f"interrupted; checkpointing step {step}", file=sys.stderr)
    bar.close()
    checkpoint(step)
    return step
