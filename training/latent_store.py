"""Precomputed training data for the generator: scaled VAE latents and text-encoder states.

One safetensors file (+ a JSON sidecar, ``meta``; the safetensors header holds the sidecar's
SHA-256, so that a save interrupted between the two files is found on load, not trained on):

    latents      fp16 [M, 8, 256, 16]   scaled VAE latents, several augmented variants per clip
    clip         int64 [M]              manifest row of each latent
    caption_id   int64 [M]              row of text_states, −1 where the clip has no caption
    split        int8 [M]               0 train, 1 val, 2 test
    text_states  fp16 [C, L, D_text]    conditioner output per distinct caption
    text_mask    uint8 [C, L]
    tag_caption_id int64 [M, 2]         optional: short label captions of each row (training.tag_captions),
                                        −1 where none; rows of text_states too
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from impact_rt.fileio import atomic_write_bytes

SPLITS = {"train": 0, "val": 1, "test": 2}
TENSORS = ("latents", "clip", "caption_id", "split", "text_states", "text_mask")   # tag_caption_id optional


@dataclass
class LatentStore:
    latents: torch.Tensor
    clip: torch.Tensor
    caption_id: torch.Tensor
    split: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    meta: dict = field(default_factory=dict)
    path: str = ""
    tag_caption_id: torch.Tensor | None = None

    @property
    def text_dim(self) -> int:
        return int(self.text_states.shape[-1]) if self.text_states.numel() else 0

    def rows(self, phase: str, split: str = "train") -> torch.Tensor:
        """Row indices for a phase: every clip for ``uncond``, captioned clips for ``text``."""
        keep = self.split == SPLITS[split]
        if phase == "text":
            keep &= self.caption_id >= 0
        return keep.nonzero().flatten()

    def clip_categories(self) -> list[str]:
        """The manifest category of each clip index (``clip``); see ``clip_column``."""
        return self.clip_column("category")

    def clip_kinds(self) -> list[str]:
        """The manifest kind of each clip index (crop, loop, event, scene, speech, render, steps)."""
        return self.clip_column("kind")

    def clip_sources(self) -> list[str]:
        """The manifest source_package of each clip index (a scene's packages joined by ';')."""
        return self.clip_column("source_package")

    def clip_column(self, column: str) -> list[str]:
        """A manifest column of each clip index (``clip``), from the manifest the store was built from.

        Stores record the manifest id of every clip (``clip_ids``); older ones are matched by order
        (``training.latents`` numbers clips in manifest order after keeping the encoded splits), with the
        row count and every clip's split checked so that an edited manifest cannot shift categories."""
        import csv
        man = Path(self.meta.get("manifest", ""))
        if not man.is_file():
            raise ValueError(f"the clips' {column} needs the store's manifest, not found: {man}")
        try:
            with open(man, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except UnicodeDecodeError:
            raise ValueError(f"the store's manifest {man} is not a UTF-8 text file") from None
        except (OSError, csv.Error) as e:
            raise ValueError(f"cannot read the store's manifest {man}: {e}") from None
        ids = self.meta.get("clip_ids")
        if ids:
            by_id = {r.get("id"): r for r in rows}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise ValueError(f"manifest {man} no longer matches the store ({len(missing)} clip ids missing)")
            return [by_id[i].get(column) or "" for i in ids]
        names = {v: k for k, v in SPLITS.items()}
        kept = {names[int(s)] for s in self.split.unique()}
        rows = [r for r in rows if (r.get("split") or "train") in kept]
        n = int(self.clip.max()) + 1 if self.clip.numel() else 0
        clip_split = torch.full((n,), -1, dtype=torch.long)
        clip_split[self.clip] = self.split.long()
        if len(rows) != n or any(int(clip_split[i]) >= 0 and SPLITS[rows[i].get("split") or "train"] != int(clip_split[i])
                                 for i in range(n)):
            raise ValueError(f"manifest {man} no longer matches the store ({len(rows)} rows of splits "
                             f"{sorted(kept)}, the store numbers {n} clips)")
        return [r.get(column) or "" for r in rows]

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tensors = {"latents": self.latents.half().contiguous(), "clip": self.clip, "caption_id": self.caption_id,
                   "split": self.split.to(torch.int8), "text_states": self.text_states.half().contiguous(),
                   "text_mask": self.text_mask.to(torch.uint8)}
        if self.tag_caption_id is not None:
            tensors["tag_caption_id"] = self.tag_caption_id.long().contiguous()
        sidecar = json.dumps(self.meta, indent=1).encode("utf-8")
        tmp = p.with_suffix(".tmp")
        try:
            save_file(tensors, str(tmp), metadata={"sidecar_sha256": hashlib.sha256(sidecar).hexdigest()})
            tmp.replace(p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic_write_bytes(p.with_suffix(".json"), sidecar)

    @classmethod
    def load(cls, path: str | Path) -> "LatentStore":
        """The store at ``path``; a missing, unreadable or foreign file is a one-line ValueError."""
        from safetensors import SafetensorError
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"latent store {p} is a folder, not a .safetensors file")
        if not p.is_file():
            raise ValueError(f"latent store not found: {p}")
        try:
            with safe_open(str(p), "pt") as f:   # the tensors and, in one read of the header, the sidecar's hash
                t = {k: f.get_tensor(k) for k in f.keys()}
                want = (f.metadata() or {}).get("sidecar_sha256")   # None in stores saved before session 31
        except (SafetensorError, OSError) as e:
            raise ValueError(f"latent store {p} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
        missing = [k for k in TENSORS if k not in t]
        if missing:
            raise ValueError(f"{p} is not a latent store (no {', '.join(missing)}; written by training.latents?)")
        meta_p = p.with_suffix(".json")
        try:
            sidecar = meta_p.read_bytes() if meta_p.is_file() else None
            if want is not None and (sidecar is None or hashlib.sha256(sidecar).hexdigest() != want):
                found = "is missing" if sidecar is None else "belongs to another save"
                raise ValueError(f"latent store {p}: its sidecar {meta_p.name} {found} (a save interrupted "
                                 "between the two files?); rebuild the store")
            meta = json.loads(sidecar.decode("utf-8")) if sidecar is not None else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"latent store {p}: unreadable sidecar {meta_p.name} ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"latent store {p}: its sidecar {meta_p.name} does not hold a JSON object")
        return cls(t["latents"], t["clip"], t["caption_id"], t["split"].long(), t["text_states"],
                   t["text_mask"].bool(), meta, str(p), t.get("tag_caption_id"))
