"""Add short label captions ("thunder", "a dog barking") to a latent store.

    python -m training.tag_captions --latents /work/runs/latents.safetensors --out /work/runs/latents-tags.safetensors

Every row gets up to two label captions from its clip's manifest categories
(``training.data.captions.tag_captions``: the one event's label and base phrase, two events'
labels joined by "and", a bed's own), encoded by the store's text conditioner and appended to
``text_states``; ``tag_caption_id`` [M, 2] names them (−1: none). ``train_impact
--tag-caption-prob P`` then trains a share P of the captioned rows on one of them in place of the
full caption: a bare label is otherwise seen only on the single-event clips that happen to be
captioned with it (mostly silent ones), and the scenes that hold the event never teach it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .cli import Parser, check_out_file, fail
from .data.captions import tag_captions
from .latent_store import LatentStore


def add_tag_captions(store: LatentStore, encode) -> LatentStore:
    """A copy of ``store`` with the label captions of every captioned row; ``encode(list[str])``
    gives (states [n, L, D], mask [n, L]) as the store's conditioner does."""
    cats = store.clip_categories()
    captions = list(store.meta.get("captions") or [])
    if len(captions) != len(store.text_states):
        raise ValueError(f"the store names {len(captions)} captions for {len(store.text_states)} text states")
    index = {c: i for i, c in enumerate(captions)}
    per_clip = {int(c): tag_captions(cats[int(c)]) for c in store.clip[store.caption_id >= 0].unique()}
    new = sorted({t for tags in per_clip.values() for t in tags} - set(index))
    for t in new:
        index[t] = len(index)
    ids = torch.full((len(store.clip), 2), -1, dtype=torch.long)
    for r, (c, cap) in enumerate(zip(store.clip.tolist(), store.caption_id.tolist())):
        tags = per_clip.get(c, ()) if cap >= 0 else ()
        if tags:
            ids[r] = torch.tensor([index[tags[0]], index[tags[-1]]])
    states, masks = [store.text_states], [store.text_mask]
    for i in range(0, len(new), 64):
        s, m = encode(new[i:i + 64])
        states.append(s.to(store.text_states.dtype))
        masks.append(m.to(store.text_mask.dtype))
    meta = dict(store.meta, captions=captions + new, tag_captions=len(new))
    return LatentStore(store.latents, store.clip, store.caption_id, store.split, torch.cat(states), torch.cat(masks),
                       meta, tag_caption_id=ids)


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="tag_captions")
    ap.add_argument("--latents", required=True, help="store written by training.latents")
    ap.add_argument("--out", required=True, help="the store with label captions (a new file)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    if Path(args.out).resolve() == Path(args.latents).resolve():
        print("tag_captions: error: --out must differ from --latents", file=sys.stderr)
        return 2
    check_out_file(ap, args.out, args.force)
    try:
        store = LatentStore.load(args.latents)
    except ValueError as e:
        return fail("tag_captions", e)
    from impact_rt.text_conditioner import MiniLMConditioner
    cond = MiniLMConditioner()
    if store.meta.get("conditioner") not in (None, cond.spec()):
        print(f"tag_captions: error: the store's conditioner {store.meta.get('conditioner')} is not "
              f"{cond.spec()}", file=sys.stderr)
        return 2
    try:
        out = add_tag_captions(store, cond.encode)
    except ValueError as e:
        return fail("tag_captions", e)
    try:
        out.save(args.out)
    except OSError as e:
        return fail("tag_captions", e, 1)
    tagged = int((out.tag_caption_id[:, 0] >= 0).sum())
    print(f"{tagged} of {int((store.caption_id >= 0).sum())} captioned rows tagged, "
          f"{out.meta['tag_captions']} new captions → {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
