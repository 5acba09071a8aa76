"""Does the generator use its text condition? The loss with the right captions against the loss with
shuffled ones and with the null condition, on the same latents, masks, timesteps and noise.

    python -m training.text_probe --latents RUNS/latents.safetensors --model impact_rt/models/default

A model that ignores text has gain ≈ 0; the gain rises as text-conditional training takes hold
(loss units: the ε-MSE of the training objective, mask ratio 0.7 → fully masked). Cheap (a few
hundred forward passes), so it tracks a run between the expensive YAMNet evaluations.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from impact_rt.fileio import atomic_write_text
from impact_rt.patchify import patchify

from .cli import Parser, at_least, check_out_file, fail
from .latent_store import LatentStore


def load_generator(path: Path):
    """A checkpoint folder (its EMA weights) or a model bundle → IMPACT in eval mode. A missing,
    corrupt or foreign one is a one-line ValueError."""
    from impact_rt import bundle as B
    from impact_rt.config import ModelConfig
    from impact_rt.model import IMPACT

    from .checkpoint import load_checkpoint, unprefixed
    if (path / "impact.safetensors").is_file():
        try:
            cfg = B.read_config(path).model
            state = {k: v.float() for k, v in B.load_generator_state(path).items()}
        except B.BundleError as e:
            raise ValueError(str(e)) from None
    else:
        got = load_checkpoint(path)
        if got is None:
            raise ValueError(f"no checkpoint or bundle at {path}")
        tensors, meta = got
        try:
            cfg, state = ModelConfig.from_dict(meta["model"]), unprefixed("ema", tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} is not a generator's (no model config: {e})") from None
    m = IMPACT(cfg)
    try:
        m.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit its config ({str(e).strip().splitlines()[0]})") from None
    return m.eval()


@torch.no_grad()
def probe(model, store: LatentStore, *, rows: int = 256, batch: int = 32, repeats: int = 2, seed: int = 0,
          mask_ratios=(0.75, 0.9, 1.0)) -> dict:
    g = torch.Generator().manual_seed(seed)
    idx = store.rows("text")
    idx = idx[torch.randperm(len(idx), generator=g)[:rows]]
    caps = store.caption_id[idx]
    # a derangement of captions: every clip gets another clip's caption, and a different one
    perm = torch.roll(torch.arange(len(idx)), 1)
    shuffled = caps[perm]
    tab = model.train_schedule(torch.device("cpu"))
    totals = {"right": 0.0, "shuffled": 0.0, "null": 0.0}
    n = 0
    for r in range(repeats):
        for q in mask_ratios:
            for s in range(0, len(idx), batch):
                sl = slice(s, s + batch)
                tokens = patchify(store.latents[idx[sl]].float(), model.cfg.patch)
                call_seed = seed * 7919 + r * 131 + s + int(q * 1000)
                for name, cid in (("right", caps[sl]), ("shuffled", shuffled[sl]), ("null", None)):
                    gg = torch.Generator().manual_seed(call_seed)  # same masks, timesteps and noise for all three
                    states = None if cid is None else store.text_states[cid].float()
                    mask = None if cid is None else store.text_mask[cid].bool()
                    totals[name] += model.loss(tokens, states, mask, mask_ratio=q, generator=gg, schedule=tab).item()
                n += 1
    out = {k: v / n for k, v in totals.items()}
    out["gain_vs_shuffled"] = out["shuffled"] - out["right"]
    out["gain_vs_null"] = out["null"] - out["right"]
    out["rows"], out["batches"] = len(idx), n
    return out


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="text_probe")
    ap.add_argument("--latents", required=True)
    ap.add_argument("--model", required=True, help="checkpoint folder or model bundle")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the result here (JSON)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    at_least(ap, args, 1, "--rows", "--threads")
    if args.out:
        check_out_file(ap, args.out, args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_generator(Path(args.model))
        store = LatentStore.load(args.latents)
        if len(store.rows("text")) == 0:
            raise ValueError(f"{args.latents} has no captioned training rows to probe")
        if tuple(store.text_states.shape[1:]) != (model.cfg.text_len, model.cfg.text_dim):
            raise ValueError(f"{args.latents} holds text states {list(store.text_states.shape[1:])}, the model "
                             f"takes [{model.cfg.text_len}, {model.cfg.text_dim}]")
    except ValueError as e:
        return fail("text_probe", e)
    res = probe(model, store, rows=args.rows)
    text = json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()})
    if args.out:
        try:
            atomic_write_text(args.out, text + "\n")
        except OSError as e:
            return fail("text_probe", e, 1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
