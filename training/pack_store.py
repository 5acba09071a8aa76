"""Pack part of a latent store small enough to travel to a remote GPU, and unpack it there.

The lent GPU machine receives at most 64 MiB a call; our store is ~670 MB (fp16 latents of every
clip, 78×384 fp16 text states of every caption). A pack keeps the captioned training rows that fit
a byte budget, at one byte a latent value and one byte a text-state value:

- latents: companded with asinh(x / 0.5) and quantised uniformly over each channel's range in
  the whole store (256 levels). The latents are heavy-tailed (std ~0.7, |x| up to ~40); the
  companding keeps the step ~0.02 near zero. Error on our store: 0.9 % of the std (rms).
- latent codes compressed row by row (xz/LZMA2 after a delta filter along time; stdlib ``lzma``):
  ~0.38 of their size on our store (silence padding and steady beds repeat), so a pack holds
  ~2.6x the rows of plain codes. ``--no-compress`` stores them plain.
- text states: only the masked (real) positions, int8 with one scale per position (1.1 % rms).
- categories and kinds of the packed clips ride in the header, so that ``--category-balance``
  and ``--kind-weights`` work on the unpacked store without the corpus manifest.

    python -m training.pack_store pack --latents L.safetensors --out A.pack --max-mb 38
    python -m training.pack_store pack --latents L.safetensors --out B.pack --max-mb 38 --exclude A.pack
    python -m training.pack_store unpack --out store.safetensors A.pack B.pack     # on the GPU machine

Rows are drawn without replacement with weight count(category)^-a (``--category-balance``, as the
trainer's), so that a small pack still holds every kind of sound. Session 5 trained the shipped
model from two packs this way (docs/training.md); its exact selection script is kept in
docs/runs/2026-11-26-h100-train/.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import lzma
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from impact_rt.fileio import atomic_write_text

from .cli import Parser, check_out_file, fail
from .latent_store import LatentStore

COMPAND = 0.5       # asinh(x / COMPAND): linear below ~0.5, logarithmic above
FORMAT = "impact-rt latent pack 1"


def channel_book(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[C, 256] reconstruction levels: uniform in asinh(x / COMPAND) between each channel's min and max."""
    a, b = torch.asinh(lo.float() / COMPAND), torch.asinh(hi.float() / COMPAND)
    u = torch.linspace(0, 1, 256)
    return COMPAND * torch.sinh(a[:, None] + (b - a)[:, None] * u[None])


def encode_latents(lat: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Nearest level (in the companded domain) of each value: uint8 codes of lat [N, C, ...]."""
    codes = torch.empty(lat.shape, dtype=torch.uint8)
    for ch in range(lat.shape[1]):
        mid = (book[ch, 1:] + book[ch, :-1]) / 2
        codes[:, ch] = torch.bucketize(lat[:, ch].float().contiguous(), mid).to(torch.uint8)
    return codes


def decode_latents(codes: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    return torch.stack([book[ch][codes[:, ch].long()] for ch in range(codes.shape[1])], 1)


def row_bytes(store: LatentStore) -> int:
    return store.latents[0].numel()


def _filters(row_shape) -> list[dict]:
    """Delta along time (one latent frame = freq bytes apart in a [C, T, F] row), then LZMA2."""
    return [{"id": lzma.FILTER_DELTA, "dist": int(row_shape[-1])}, {"id": lzma.FILTER_LZMA2, "preset": 6}]


def compress_row(codes: torch.Tensor) -> bytes:
    """One row's uint8 codes [C, T, F] → raw LZMA2 stream."""
    return lzma.compress(codes.contiguous().numpy().tobytes(), format=lzma.FORMAT_RAW, filters=_filters(codes.shape))


def decompress_rows(blob: torch.Tensor, lengths: torch.Tensor, row_shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``compress_row`` for the concatenated streams ``blob`` (uint8) of ``lengths``."""
    data, out, at = blob.numpy().tobytes(), [], 0
    n = 1
    for d in row_shape:
        n *= d
    for ln in lengths.tolist():
        raw = lzma.decompress(data[at:at + ln], format=lzma.FORMAT_RAW, filters=_filters(row_shape))
        if len(raw) != n:
            raise ValueError(f"corrupt latent pack: a row decompressed to {len(raw)} bytes, expected {n}")
        out.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(row_shape))
        at += ln
    return torch.stack(out) if out else torch.empty((0, *row_shape), dtype=torch.uint8)


class RowCodes:
    """Each row's codes (and, with ``compress``, its compressed stream), computed once on demand."""

    def __init__(self, store: LatentStore, compress: bool = True):
        self.store, self.compress = store, compress
        self.book = store_book(store)
        self._codes: dict[int, torch.Tensor] = {}
        self._blobs: dict[int, bytes] = {}

    def codes(self, r: int) -> torch.Tensor:
        if r not in self._codes:
            self._codes[r] = encode_latents(self.store.latents[r:r + 1].float(), self.book)[0]
        return self._codes[r]

    def blob(self, r: int) -> bytes:
        if r not in self._blobs:
            self._blobs[r] = compress_row(self.codes(r))
        return self._blobs[r]

    def cost(self, r: int) -> int:
        return len(self.blob(r)) + 8 if self.compress else row_bytes(self.store)


def store_book(store: LatentStore) -> torch.Tensor:
    return channel_book(store.latents.amin(dim=(0, 2, 3)), store.latents.amax(dim=(0, 2, 3)))   # exact in fp16


def select_rows(store: LatentStore, max_bytes: int, balance: float = 0.5, exclude: set[int] = frozenset(),
                seed: int = 0, row_codes: RowCodes | None = None, first: frozenset[str] = frozenset()) -> torch.Tensor:
    """Captioned training rows, drawn without replacement by weight count(category)^-balance, until
    the latents (plain codes, or their compressed size with ``row_codes``) and the text states of
    their captions would pass ``max_bytes``. Rows of a category in ``first`` (a scene's categories
    joined by ';' count each) come before all others, in their drawn order."""
    from .train_impact import category_weights
    rows = store.rows("text")
    clips = store.clip[rows]
    keep = torch.tensor([int(c) not in exclude for c in clips], dtype=torch.bool)
    rows = rows[keep]
    if len(rows) == 0:
        return rows
    w = category_weights(store, rows, balance) if balance else torch.ones(len(rows), dtype=torch.double)
    order = torch.multinomial(w, len(rows), replacement=False, generator=torch.Generator().manual_seed(seed))
    if first:
        cats = store.clip_categories()
        row_cats = [set(cats[int(c)].split(";")) for c in store.clip[rows]]
        unknown = set(first) - set().union(*row_cats)
        if unknown:
            raise ValueError(f"--first: no captioned row of category {', '.join(sorted(unknown))}")
        ahead = torch.tensor([bool(row_cats[i] & first) for i in order.tolist()])
        order = torch.cat([order[ahead], order[~ahead]])
    lengths = store.text_mask.sum(1)
    per_row, dim = row_bytes(store), store.text_dim
    used, seen, picked = 0, set(), []
    tags = store.tag_caption_id
    for i in order.tolist():
        r = int(rows[i])
        caps = {int(store.caption_id[r])} | ({int(t) for t in tags[r] if t >= 0} if tags is not None else set())
        text = sum(int(lengths[c]) * (dim + 2) + store.text_mask.shape[1] for c in caps - seen)
        cost = (row_codes.cost(r) if row_codes is not None else per_row) + text
        if used + cost > max_bytes:
            break
        used += cost
        seen |= caps
        picked.append(r)
    return torch.tensor(sorted(picked), dtype=torch.long)


def pack(store: LatentStore, rows: torch.Tensor, path: str | Path, compress: bool = True,
         row_codes: RowCodes | None = None) -> dict:
    """Write rows of ``store`` to ``path``; returns what it holds and the round-trip error.
    ``row_codes`` (whose compressed streams ``select_rows`` may have made already) decides the
    compression; without it, ``compress`` does."""
    rc = row_codes if row_codes is not None else RowCodes(store, compress)
    compress, book = rc.compress, rc.book
    lat = store.latents[rows].float()
    codes = encode_latents(lat, book)
    caps = store.caption_id[rows]
    if (caps < 0).any():
        raise ValueError("pack holds captioned rows only")
    tags = store.tag_caption_id[rows] if store.tag_caption_id is not None else None
    uniq = torch.cat([caps, tags[tags >= 0]]).unique() if tags is not None else caps.unique()
    inv = torch.searchsorted(uniq, caps)
    mask = store.text_mask[uniq].bool()
    states = store.text_states[uniq].float()[mask]               # [positions, D]
    scale = states.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127
    q = (states / scale).round().to(torch.int8)
    cats = store.clip_categories() if store.meta.get("manifest") else None
    kinds = store.clip_kinds() if store.meta.get("manifest") else None
    clips = store.clip[rows]
    header = {"format": FORMAT,
              "store_meta": json.dumps({k: v for k, v in store.meta.items() if k not in ("manifest", "clip_ids")}),
              "categories": json.dumps({int(c): cats[int(c)] for c in clips.unique()} if cats else {}),
              "kinds": json.dumps({int(c): kinds[int(c)] for c in clips.unique()} if kinds else {}),
              "codes": "lzma-delta" if compress else "plain", "row_shape": json.dumps(list(codes.shape[1:]))}
    if compress:
        blobs = [rc.blob(int(r)) for r in rows]
        stored = {"codes_lzma": torch.frombuffer(bytearray(b"".join(blobs)) or bytearray(1), dtype=torch.uint8),
                  "codes_len": torch.tensor([len(b) for b in blobs], dtype=torch.int64)}
    else:
        stored = {"codes": codes}
    save_file({**stored, "book": book, "clip": clips, "caption_id": inv, "split": store.split[rows].to(torch.int8),
               "text_q": q, "text_scale": scale.half(), "text_mask": mask.to(torch.uint8),
               **({"tag_caption_id": torch.where(tags >= 0, torch.searchsorted(uniq, tags.clamp_min(0)), -1)}
                  if tags is not None else {})}, str(path), metadata=header)
    err = decode_latents(codes, book) - lat
    return {"rows": len(rows), "captions": len(uniq), "bytes": Path(path).stat().st_size,
            "latent_rel_rms_error": float(err.pow(2).mean().sqrt() / lat.std().clamp_min(1e-12))}


def _header(path: str | Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            head = f.metadata() or {}
    except Exception as e:   # safetensors raises its own error types for foreign files
        raise ValueError(f"{path} is not a latent pack ({str(e).splitlines()[0]})") from None
    if head.get("format") != FORMAT:
        raise ValueError(f"{path} is not a latent pack ({FORMAT})")
    return head


def packed_clips(path: str | Path) -> set[int]:
    _header(path)
    with safe_open(str(path), "pt") as f:
        return set(f.get_tensor("clip").tolist())


def unpack(paths: list[str | Path], out: str | Path) -> LatentStore:
    """One fp16 LatentStore (text states padded back to full length) from packs; writes ``out``
    and, for the category balance and kind weights, ``out``'s manifest (id, category, kind) beside it."""
    lat, clip, cap, split, states, masks, cats, kinds, meta = [], [], [], [], [], [], {}, {}, {}
    tag = []                      # label captions (training.tag_captions) where a pack holds them, else −1
    ncap = 0
    for p in paths:
        head = _header(p)
        t = load_file(str(p))
        if head.get("codes", "plain") == "lzma-delta":
            codes = decompress_rows(t["codes_lzma"], t["codes_len"], tuple(json.loads(head["row_shape"])))
        else:
            codes = t["codes"]
        lat.append(decode_latents(codes, t["book"]).half())
        clip.append(t["clip"])
        cap.append(t["caption_id"] + ncap)
        tg = t.get("tag_caption_id", torch.full((len(t["caption_id"]), 2), -1, dtype=torch.long))
        tag.append(torch.where(tg >= 0, tg + ncap, -1))
        split.append(t["split"].long())
        m = t["text_mask"].bool()
        s = torch.zeros(m.shape + (t["text_q"].shape[-1],), dtype=torch.float16)
        s[m] = (t["text_q"].float() * t["text_scale"].float()).half()
        states.append(s)
        masks.append(m)
        ncap += m.shape[0]
        cats.update({int(k): v for k, v in json.loads(head["categories"]).items()})
        kinds.update({int(k): v for k, v in json.loads(head.get("kinds", "{}")).items()})
        meta = json.loads(head["store_meta"])
    clip_t = torch.cat(clip)
    per_pack = [set(c.tolist()) for c in clip]   # a clip's variants (training.latents --variants) share it
    uniq = sorted(set().union(*per_pack))
    if len(uniq) != sum(len(c) for c in per_pack):
        raise ValueError("packs overlap: a clip is in more than one (pack the second with --exclude)")
    local = {c: i for i, c in enumerate(uniq)}
    out = Path(out)
    man = out.with_suffix(".manifest.csv")
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["id", "category", "kind"])
    for c in uniq:
        w.writerow([f"c{c}", cats.get(c, ""), kinds.get(c, "")])
    atomic_write_text(man, text.getvalue())
    meta.update({"manifest": str(man), "clip_ids": [f"c{c}" for c in uniq], "packs": [str(p) for p in paths]})
    store = LatentStore(torch.cat(lat), torch.tensor([local[c] for c in clip_t.tolist()]), torch.cat(cap),
                        torch.cat(split), torch.cat(states), torch.cat(masks), meta, str(out),
                        torch.cat(tag) if any((t >= 0).any() for t in tag) else None)
    store.save(out)
    return store


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="pack_store")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", who="pack_store")
    p.add_argument("--latents", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-mb", type=float, default=38.0, help="size budget of the pack (MB)")
    p.add_argument("--category-balance", type=float, default=0.5)
    p.add_argument("--exclude", nargs="*", default=[], help="packs whose clips to leave out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", nargs="*", default=[], help="categories whose rows are packed before the drawn rest")
    p.add_argument("--no-compress", action="store_true", help="store the latent codes plain (no LZMA)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    u = sub.add_parser("unpack", who="pack_store")
    u.add_argument("--out", required=True)
    u.add_argument("--force", action="store_true", help="replace an existing --out")
    u.add_argument("packs", nargs="+")
    a = ap.parse_args(argv)
    check_out_file(ap, a.out, a.force)
    if a.cmd == "pack" and not a.max_mb > 0:
        ap.error(f"--max-mb must be above 0, got {a.max_mb}")
    try:
        if a.cmd == "pack":
            store = LatentStore.load(a.latents)
            exclude = set().union(*(packed_clips(x) for x in a.exclude)) if a.exclude else set()
            rc = RowCodes(store, compress=not a.no_compress)
            rows = select_rows(store, int(a.max_mb * 1e6), a.category_balance, exclude, a.seed, rc, frozenset(a.first))
            if len(rows) == 0:
                raise ValueError("no captioned training rows left to pack")
            print(json.dumps(pack(store, rows, a.out, row_codes=rc)))
        else:
            st = unpack(a.packs, a.out)
            print(json.dumps({"out": a.out, "rows": len(st.clip), "text_rows": len(st.rows("text"))}))
    except (ValueError, OSError) as e:
        return fail("pack_store", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
