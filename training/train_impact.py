"""Train the IMPACT generator on precomputed VAE latents (paper §3.1, §4.2).

Two phases, as the paper: ``--phase uncond`` (unconditional pre-training on all audio, null
condition always), then ``--phase text`` (text-conditional, caption dropout for CFG), started
from the pre-trained weights with ``--init``. MAR's masking: per step a ratio drawn from a
truncated normal on [q, 1] (loc 1, scale 0.25), q = 0.7. AdamW, linear warm-up, EMA weights.

Resumable: ``--out DIR`` holds ``ckpt/`` (saved on a timer and at the end) and ``log.csv``;
rerunning the same command continues where it stopped. Runs on one CPU or GPU, or under
``torchrun`` (DDP: gloo on CPU, nccl on GPU).

    python -m training.train_impact --latents L.safetensors --out runs/uncond --phase uncond --minutes 120
    python -m training.train_impact --latents L.safetensors --out runs/text --phase text \
        --init runs/uncond/ckpt --minutes 300
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from impact_rt.config import ModelConfig, preset
from impact_rt.model import IMPACT
from impact_rt.patchify import patchify

from .cli import Parser, at_least, check_device, check_run_folder, fail, share
from .checkpoint import (load_checkpoint, load_optimizer, optimizer_tensors, prefixed, refuse_other_options,
                         save_checkpoint, trim_log, unprefixed)
from . import precision
from .grow import deepen_encoder_state, encoder_depths, is_encoder_block, widen_head_state
from .latent_store import LatentStore


@dataclass
class TrainConfig:
    phase: str = "uncond"            # uncond | text
    preset: str = "small"
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.02
    warmup_steps: int = 500
    mask_ratio_min: float = 0.7      # q
    mask_bucket: int = 8             # masked-token counts rounded up to a multiple of this (see bucketed)
    mask_ratio_uniform: float = 0.0  # share of steps whose ratio is drawn uniformly from (0, 1] instead (see mask_ratio)
    caption_drop: float = 0.1
    tag_caption_prob: float = 0.0    # share of rows trained on a short label caption instead (training.tag_captions)
    diffusion_batch_mul: int = 4
    ema_decay: float = 0.999
    category_balance: float = 0.0    # sample rows with weight count(category)^-a (0: uniform over clips)
    kind_weights: str = ""           # e.g. "event=0.25": row weights times these, by manifest kind
    category_weights: str = ""       # e.g. "thunder=3": row weights times these, by caption category
    source_weights: str = ""         # e.g. "scorched3d-data=0": row weights times these, by source package
    clip_weights: str = ""           # a CSV file (columns id, weight): row weights times these, by manifest id
    grad_clip: float = 3.0
    ema_warmup: bool = True          # EMA decay ramps (1+s)/(10+s) → ema_decay; off: full decay from step 0
    trainable: str = ""              # e.g. "text_proj,null_condition": train only parameters under these names
    reinit: str = ""                 # e.g. "head": with --init, these parameters start fresh (not loaded)
    head_width: int = 0              # 0: the preset's; else the diffusion head's width w (with --reinit or --grow head)
    head_depth: int = 0              # 0: the preset's; else the head's ResBlocks d
    enc_depth: int = 0               # 0: the preset's; else Enc1's blocks (with --grow encoder)
    dec_depth: int = 0               # 0: the preset's; else Enc2's blocks (with --grow encoder)
    grow: str = ""                   # with --init: "head" widens the head to --head-width, "encoder" deepens the
                                     # latent encoder to --enc-depth/--dec-depth, "head,encoder" both (training.grow)
    bf16: bool = True
    seed: int = 0


def bucketed(ratio: float, n: int, bucket: int) -> float:
    """The ratio with its masked-token count rounded up to a multiple of ``bucket`` (at most n).

    Every distinct count is a new set of matrix shapes: on the CPU, oneDNN builds (JIT-compiles)
    and caches primitives per shape, and ~80 counts × every layer × forward/backward overflowed its
    cache. The trainer's memory grew past 13 GB and its speed halved within an hour (session 5);
    with counts in steps of 8 tokens (3 % of the ratio at 256 tokens) it stays flat."""
    if bucket <= 1:
        return ratio
    k = min(n, max(bucket, -(-round(ratio * n) // bucket) * bucket))
    return k / n


def mask_ratio(q: float, g: torch.Generator, uniform: float = 0.0) -> float:
    """MAR: truncated normal on [q, 1], loc 1, scale 0.25 (rejection sampling).

    With ``uniform`` > 0, that share of the draws is uniform on (0, 1] instead. Decoding visits
    every ratio: a token is decoded while a share r of the clip is still masked, with r spread
    evenly over (0, 1] (the last r·N tokens are decoded at ratios ≤ r). At T = 16, 63 % of a clip's
    tokens are decoded below q = 0.7 and 29 % below 0.3, where a model trained on [q, 1] alone has
    never been.
    No extra draw is made when ``uniform`` is 0, so runs without it keep their random stream."""
    if uniform > 0.0 and torch.rand((), generator=g).item() < uniform:
        return 1.0 - torch.rand((), generator=g).item()       # (0, 1]
    while True:
        r = 1.0 - abs(torch.randn((), generator=g).item()) * 0.25
        if r >= q:
            return r


def category_weights(store: LatentStore, rows: torch.Tensor, a: float) -> torch.Tensor:
    """Sampling weight of each row: the mean of count(c)^-a over its categories c (a scene's are joined by
    ';'), counts taken over ``rows``. a=0.5 evens out a corpus where speech and music outnumber each
    kind of effect tenfold, without starving the big categories."""
    from collections import Counter
    cats = store.clip_categories()
    row_cats = [[c for c in cats[int(store.clip[r])].split(";") if c] or [""] for r in rows]
    count = Counter(c for cs in row_cats for c in cs)
    return torch.tensor([sum(count[c] ** -a for c in cs) / len(cs) for cs in row_cats], dtype=torch.double)


def parse_kind_weights(spec: str, what: str = "kind") -> dict[str, float]:
    """'event=0.25,steps=0.5' → {'event': 0.25, 'steps': 0.5} (weights finite and >= 0)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, eq, val = part.partition("=")
        try:
            w = float(val)
        except ValueError:
            w = float("nan")
        if not eq or not kind.strip() or not math.isfinite(w) or w < 0:
            raise ValueError(f"{what} weights: expected {what}=weight (weight >= 0), got {part!r}")
        out[kind.strip()] = w
    return out


def kind_weights(store: LatentStore, rows: torch.Tensor, spec: str) -> torch.Tensor:
    """Each row's factor from ``spec`` by its clip's manifest kind (1 for kinds not named). Every
    named kind must occur among ``rows``, so that a misspelt kind cannot pass unnoticed.

    Single events are padded with silence (their kind is ``event``); the generator learnt to pad
    event prompts with silence (session 5), which down-weighting them addresses."""
    want = parse_kind_weights(spec)
    kinds = store.clip_kinds()
    row_kinds = [kinds[int(store.clip[r])] for r in rows]
    absent = sorted(set(want) - set(row_kinds))
    if absent:
        raise ValueError(f"kind weights: no training row of kind {', '.join(map(repr, absent))} "
                         f"(kinds here: {', '.join(sorted(set(row_kinds)))})")
    w = torch.tensor([want.get(k, 1.0) for k in row_kinds], dtype=torch.double)
    if not (w > 0).any():
        raise ValueError("kind weights: every training row has weight 0")
    return w


def _joined_factors(values: list[str], rows: torch.Tensor, store: LatentStore, spec: str, what: str,
                    absent_msg: str) -> torch.Tensor:
    """Each row's factor: the product of ``spec``'s weights over its clip's ';'-joined ``values``
    (1 for values not named). Every named value must occur among ``rows``."""
    want = parse_kind_weights(spec, what)
    row_vals = [[v for v in values[int(store.clip[r])].split(";") if v] for r in rows]
    absent = sorted(set(want) - {v for vs in row_vals for v in vs})
    if absent:
        raise ValueError(f"{what} weights: no training row {absent_msg} {', '.join(map(repr, absent))}")
    w = torch.tensor([math.prod(want.get(v, 1.0) for v in vs) for vs in row_vals], dtype=torch.double)
    if not (w > 0).any():
        raise ValueError(f"{what} weights: every training row has weight 0")
    return w


def category_factors(store: LatentStore, rows: torch.Tensor, spec: str) -> torch.Tensor:
    """Each row's factor from ``spec`` by its clip's caption categories: the product of the named
    categories' weights (a scene's categories are joined by ';'; 1 for categories not named, so
    "thunder=3" triples every clip where thunder is heard). Every named category must occur among
    ``rows``, so that a misspelt one cannot pass unnoticed."""
    return _joined_factors(store.clip_categories(), rows, store, spec, "category", "of category")


def source_factors(store: LatentStore, rows: torch.Tensor, spec: str) -> torch.Tensor:
    """Each row's factor from ``spec`` by its clip's source packages: the product of the named
    packages' weights (a scene's packages are joined by ';'), 1 for packages not named; so
    "scorched3d-data=0" leaves out every clip with a sound from that package. Every named package
    must occur among ``rows``."""
    return _joined_factors(store.clip_sources(), rows, store, spec, "source", "from package")


def load_clip_weights(path: str) -> tuple[dict[str, float], str]:
    """A clip-weight file: CSV with the columns ``id`` (manifest id) and ``weight`` (finite, >= 0), and
    the sha256 of the very bytes parsed (a checkpoint records it: a file edited after the parse cannot
    give a digest of other weights than those trained on)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"clip weights: cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"clip weights {path}: not a UTF-8 text file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"id", "weight"} <= set(reader.fieldnames or ()):
        raise ValueError(f"clip weights {path}: expected the columns id and weight, got {reader.fieldnames}")
    out: dict[str, float] = {}
    for line, r in enumerate(reader, start=2):
        try:
            w = float(r["weight"])
        except (TypeError, ValueError):
            w = float("nan")
        if not r["id"] or not math.isfinite(w) or w < 0:
            raise ValueError(f"clip weights {path}, line {line}: expected an id and a weight >= 0")
        if r["id"] in out:
            raise ValueError(f"clip weights {path}, line {line}: clip {r['id']!r} listed twice")
        out[r["id"]] = w
    return out, hashlib.sha256(data).hexdigest()


def clip_factors(store: LatentStore, rows: torch.Tensor, path: str,
                 weights: dict[str, float] | None = None) -> torch.Tensor:
    """Each row's factor from a clip-weight file (``load_clip_weights``; ``weights``, when given, is
    that file already parsed) by its clip's manifest id, 1 for
    clips not listed. Every listed id must be a clip of the store, so that a file written for another
    manifest cannot pass unnoticed; a selection that names clips by what they hold (a sound over a
    particular bed, say) is written as such a file by a script that records the rule."""
    want = load_clip_weights(path)[0] if weights is None else weights
    ids = store.meta.get("clip_ids")
    if not ids:
        raise ValueError("clip weights need a store that records its clips' manifest ids (training.latents)")
    absent = sorted(set(want) - set(ids))
    if absent:
        raise ValueError(f"clip weights {path}: {len(absent)} ids are not clips of the store "
                         f"(first: {absent[0]!r})")
    w = torch.tensor([want.get(ids[int(store.clip[r])], 1.0) for r in rows], dtype=torch.double)
    if not (w > 0).any():
        raise ValueError("clip weights: every training row has weight 0")
    return w


def name_filter(spec: str, names, what: str):
    """The parameter names that ``spec`` ("text_proj,null_condition") selects, as a predicate: a name
    equal to or under one of its comma-separated prefixes; None for an empty spec. A prefix that names
    none of ``names`` is an error (``what`` says which option), so that a misspelt one cannot pass
    unnoticed."""
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    if not prefixes:
        return None

    def under(name, prefix):
        return name == prefix or name.startswith(prefix + ".")
    names = list(names)
    unknown = [p for p in prefixes if not any(under(n, p) for n in names)]
    if unknown:
        raise ValueError(f"{what}: no parameter under {', '.join(map(repr, unknown))} "
                         f"(top-level names: {', '.join(sorted({n.split('.')[0] for n in names}))})")
    return lambda name: any(under(name, p) for p in prefixes)


def trainable_parameters(model: torch.nn.Module, spec: str) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates: all, or (``spec`` "text_proj,null_condition") those whose
    names equal or lie under one of the given prefixes (``name_filter``); the others are frozen
    (requires_grad off)."""
    params = dict(model.named_parameters())
    selected = name_filter(spec, params, "trainable")
    if selected is None:
        return list(params.values())
    keep = []
    for n, p in params.items():
        p.requires_grad_(selected(n))
        if p.requires_grad:
            keep.append(p)
    return keep


def reinit_state(model: torch.nn.Module, loaded: dict, spec: str) -> dict:
    """The state to load from ``--init``: ``loaded``, except that tensors under the prefixes of
    ``spec`` (e.g. "head") keep the model's fresh initialisation, so that a part can be retrained,
    also at another size (``--head-width``). Every other tensor must be in ``loaded`` with the model's
    shape; a prefix that names no tensor is an error (``name_filter``)."""
    own = model.state_dict()
    fresh = name_filter(spec, own, "reinit")
    out = {}
    for name, t in own.items():
        if fresh is not None and fresh(name):
            out[name] = t.detach().clone()
            continue
        if name not in loaded:
            hint = " (deepen it with --grow encoder)" if is_encoder_block(name) else ""
            raise ValueError(f"init: {name} is missing from the weights to start from{hint}")
        if tuple(loaded[name].shape) != tuple(t.shape):
            raise ValueError(f"init: {name} has shape {tuple(loaded[name].shape)}, the model "
                             f"{tuple(t.shape)} (retrain it with --reinit)")
        out[name] = loaded[name]
    extra = sorted(set(loaded) - set(own))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ValueError(f"init: {extra[0]} is not a tensor of this model{more}")
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig, store: LatentStore, out: Path, model_cfg: ModelConfig | None = None,
                 device: str = "cpu", rank: int = 0, world: int = 1):
        self.cfg, self.store, self.out, self.rank, self.world = cfg, store, Path(out), rank, world
        self.device = torch.device(device)
        mc = model_cfg or preset(cfg.preset)
        if cfg.head_width or cfg.head_depth or cfg.enc_depth or cfg.dec_depth:
            mc = ModelConfig(**{**mc.to_dict(), "head_width": cfg.head_width or mc.head_width,
                                "head_depth": cfg.head_depth or mc.head_depth,
                                "enc_depth": cfg.enc_depth or mc.enc_depth,
                                "dec_depth": cfg.dec_depth or mc.dec_depth}).validate()
        if store.text_dim and mc.text_dim != store.text_dim:
            mc = ModelConfig(**{**mc.to_dict(), "text_dim": store.text_dim})
        self.model = IMPACT(mc).to(self.device)
        self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        self.opt = torch.optim.AdamW(trainable_parameters(self.model, cfg.trainable), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        self.step = 0
        self.schedule = self.model.train_schedule(self.device)
        self.ddp = None
        if world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(_LossModule(self.model),
                                                                 find_unused_parameters=True)
        if self.device.type != "cpu":
            # the store's tensors on the GPU, so that batches are gathered there: gathering and
            # converting on the host held an H100 to ~1,000 samples/s (session 5)
            store = dataclasses.replace(store, latents=store.latents.to(self.device),
                                        text_states=store.text_states.to(self.device),
                                        text_mask=store.text_mask.to(self.device))
            self.store = store
        if cfg.tag_caption_prob and (cfg.phase != "text" or store.tag_caption_id is None
                                     or not 0 < cfg.tag_caption_prob <= 1):
            raise ValueError(f"--tag-caption-prob {cfg.tag_caption_prob} needs the text phase, a share in (0, 1] "
                             "and a store with label captions (python -m training.tag_captions)")
        self.rows = store.rows(cfg.phase)
        if len(self.rows) == 0:
            raise ValueError(f"no training rows for phase {cfg.phase} in {store.path}")
        self.row_weights = None
        if cfg.category_balance:
            self.row_weights = category_weights(store, self.rows, cfg.category_balance)
        # the checkpoint records which clip selection it trained on (the digest of the bytes parsed),
        # not only the file's path
        clip_w, self.clip_weights_sha256 = load_clip_weights(cfg.clip_weights) if cfg.clip_weights else (None, None)
        for spec, factors in ((cfg.kind_weights, kind_weights), (cfg.category_weights, category_factors),
                              (cfg.source_weights, source_factors),
                              (cfg.clip_weights, functools.partial(clip_factors, weights=clip_w))):
            if spec:
                w = factors(store, self.rows, spec)
                self.row_weights = w if self.row_weights is None else self.row_weights * w
        if self.row_weights is not None and not (self.row_weights > 0).any():
            raise ValueError("row weights: every training row has weight 0")

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        opt_t, opt_meta = optimizer_tensors(self.opt)
        tensors = {**prefixed("model", self.model.state_dict()), **prefixed("ema", self.ema), **opt_t,
                   "rng": self.gen.get_state()}
        meta = {"step": self.step, "train": asdict(self.cfg), "model": self.model.cfg.to_dict(), **opt_meta}
        if self.clip_weights_sha256:
            meta["clip_weights_sha256"] = self.clip_weights_sha256
        return tensors, meta

    def save(self, directory: Path | None = None) -> None:
        if self.rank == 0:
            t, m = self.state()
            save_checkpoint(directory or self.out / "ckpt", t, m)

    # options that set what a step trains on and toward: a resumed run must keep them (lr, steps, minutes
    # and checkpoint timing may change between invocations)
    RESUME_FIXED = ("phase", "batch_size", "mask_ratio_min", "mask_ratio_uniform", "mask_bucket", "caption_drop",
                    "tag_caption_prob", "diffusion_batch_mul", "category_balance", "kind_weights",
                    "category_weights", "source_weights", "trainable")

    def resume(self) -> bool:
        got = load_checkpoint(self.out / "ckpt")
        if got is None:
            return False
        tensors, meta = got
        weights = meta.get("clip_weights_sha256") != self.clip_weights_sha256
        refuse_other_options(self.out, self.RESUME_FIXED, meta.get("train", {}), self.cfg, "the model",
                             meta.get("model", {}), self.model.cfg.to_dict(),
                             ("the --clip-weights selection",) if weights else ())
        self.model.load_state_dict(unprefixed("model", tensors))
        self.ema = {k: v.float().to(self.device) for k, v in unprefixed("ema", tensors).items()}
        load_optimizer(self.opt, tensors, meta)
        self.gen.set_state(tensors["rng"])
        self.step = meta["step"]
        return True

    def init_from(self, directory: Path) -> None:
        """Start a phase from another run's EMA weights (unconditional → text-conditional), or from a
        model bundle's generator (``impact.safetensors``: continue training a shipped model)."""
        if (directory / "impact.safetensors").is_file() and (directory / "config.json").is_file():
            from impact_rt import bundle as B
            ema = {k: v.float() for k, v in B.load_generator_state(directory).items()}
        else:
            got = load_checkpoint(directory)
            if got is None:
                raise ValueError(f"no checkpoint or model bundle at {directory}")
            ema = unprefixed("ema", got[0])
        parts = [p for p in self.cfg.grow.split(",") if p]
        for part in parts:
            if part not in ("head", "encoder") or parts.count(part) > 1:
                raise ValueError(f"grow: {self.cfg.grow!r} is not head, encoder or head,encoder")
        mc = self.model.cfg
        if "head" in parts:
            old = int(ema["head.input_proj.weight"].shape[0])
            if old == mc.head_width:
                raise ValueError(f"grow: the head is already {old} wide (give a wider --head-width)")
            ema = widen_head_state(ema, old, mc.head_width, seed=self.cfg.seed)
        if "encoder" in parts:
            old = encoder_depths(ema)
            if old == (mc.enc_depth, mc.dec_depth):
                raise ValueError(f"grow: the encoder already has {old[0]}+{old[1]} blocks "
                                 "(give a deeper --enc-depth or --dec-depth)")
            ema = deepen_encoder_state(ema, mc.enc_depth, mc.dec_depth)
        ema = reinit_state(self.model, ema, self.cfg.reinit)
        self.model.load_state_dict(ema)
        self.ema = {k: v.float().to(self.device, copy=True) for k, v in ema.items()}

    # -- one step ------------------------------------------------------------------------------
    def batch(self):
        if self.row_weights is None:
            pick = torch.randint(0, len(self.rows), (self.cfg.batch_size,), generator=self.gen)
        else:
            pick = torch.multinomial(self.row_weights, self.cfg.batch_size, replacement=True, generator=self.gen)
        idx = self.rows[pick]
        lat = self.store.latents[idx.to(self.store.latents.device)].float()
        tokens = patchify(lat, self.model.cfg.patch).to(self.device)
        if self.cfg.phase == "uncond":
            return tokens, None, None, None
        cap = self.store.caption_id[idx]
        if self.cfg.tag_caption_prob > 0:   # no draw otherwise: the default keeps the same random stream
            tags = self.store.tag_caption_id[idx, torch.randint(0, 2, (len(idx),), generator=self.gen)]
            use = (torch.rand(len(idx), generator=self.gen) < self.cfg.tag_caption_prob) & (tags >= 0)
            cap = torch.where(use, tags, cap)
        cap = cap.to(self.store.text_states.device)
        states = self.store.text_states[cap].float().to(self.device)
        mask = self.store.text_mask[cap].bool().to(self.device)
        drop = (torch.rand(len(idx), generator=self.gen) < self.cfg.caption_drop).to(self.device)
        return tokens, states, mask, drop

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))

    def train_step(self) -> float:
        cfg = self.cfg
        self.model.train()
        tokens, states, mask, drop = self.batch()
        q = bucketed(mask_ratio(cfg.mask_ratio_min, self.gen, cfg.mask_ratio_uniform), self.model.cfg.num_tokens,
                     cfg.mask_bucket)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        fn = self.ddp if self.ddp is not None else _LossModule(self.model)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = fn(tokens, states, mask, mask_ratio=q, drop=drop, generator=self.gen,
                      diffusion_batch_mul=cfg.diffusion_batch_mul, schedule=self.schedule)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.update_ema()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of the weights. The warm-up ramp suits random initial weights; a run that continues
        trained weights (``--init``) can keep the full decay from its first step (``--no-ema-warmup``),
        so that its EMA starts as the trained model and moves at the decay's pace instead of
        following the raw weights for the first few hundred steps."""
        d = self.cfg.ema_decay
        if self.cfg.ema_warmup:
            d = min(d, (1 + self.step) / (10 + self.step))
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].mul_(d).add_(v.float(), alpha=1 - d)
            else:
                self.ema[k].copy_(v)

    def ema_model(self) -> IMPACT:
        m = IMPACT(self.model.cfg)
        m.load_state_dict(self.ema)
        return m.eval()


class _LossModule(torch.nn.Module):
    """DDP needs forward(): this one is the model's training loss."""

    def __init__(self, model: IMPACT):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.loss(*args, **kwargs)


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="train_impact")
    ap.add_argument("--latents", required=True, help="latent store written by training.latents")
    ap.add_argument("--out", required=True, help="run folder (checkpoints, log.csv)")
    ap.add_argument("--init", default=None,
                    help="checkpoint folder (its EMA weights) or model bundle to start from")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps in total")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (this invocation)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint period")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    precision.add_argument(ap)
    ap.add_argument("--no-bf16", action="store_true", help="the same as --precision fp32")
    ap.add_argument("--no-ema-warmup", action="store_true",
                    help="full EMA decay from the first step (continuing trained weights with --init)")
    for f in ("phase", "preset", "batch_size", "lr", "warmup_steps", "mask_ratio_min", "mask_ratio_uniform",
              "mask_bucket", "caption_drop", "tag_caption_prob", "diffusion_batch_mul", "ema_decay",
              "category_balance", "kind_weights", "category_weights", "source_weights", "clip_weights", "trainable", "reinit",
              "head_width", "head_depth", "enc_depth", "dec_depth", "grow", "seed"):
        default = getattr(TrainConfig, f)
        ap.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    args = ap.parse_args(argv)
    if args.phase not in ("uncond", "text"):
        ap.error("--phase must be uncond or text")
    if args.steps is None and args.minutes is None:
        ap.error("give --steps or --minutes")
    at_least(ap, args, 1, "--batch-size", "--threads", "--diffusion-batch-mul")
    at_least(ap, args, 0, "--steps", "--minutes")
    share(ap, args, "--mask-ratio-min", "--mask-ratio-uniform", "--caption-drop", "--ema-decay")
    check_run_folder(ap, args.out)
    try:
        parse_kind_weights(args.kind_weights)
        parse_kind_weights(args.category_weights, "category")
        parse_kind_weights(args.source_weights, "source")
        if args.clip_weights:
            load_clip_weights(args.clip_weights)
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = args.device
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    check_device(ap, device)
    if world > 1:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    prec = precision.resolve("fp32" if args.no_bf16 else args.precision, device, who="train_impact")
    cfg = TrainConfig(**{f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if hasattr(args, f)},
                      bf16=prec == "bf16", ema_warmup=not args.no_ema_warmup)
    from impact_rt.bundle import BundleError
    out = Path(args.out)
    try:
        store = LatentStore.load(args.latents)
        # e.g. a kind weight naming no row, a store without its manifest
        tr = Trainer(cfg, store, out, device=device, rank=rank, world=world)
        resumed = tr.resume()   # refuses a run folder that holds a run of another recipe
        if not resumed and args.init:
            tr.init_from(Path(args.init))
    except (ValueError, BundleError) as e:
        return fail("train_impact", e)
    if resumed:
        print(f"resumed at step {tr.step}", file=sys.stderr)
    elif args.init:
        print(f"initialised from {args.init}", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _train(tr, args, cfg, out, rank, world)
    except OSError as e:        # e.g. a full disk while checkpointing
        return fail("train_impact", e, 1)
    except KeyboardInterrupt:
        return fail("train_impact", f"interrupted at step {tr.step}; the last checkpoint stands "
                    "(rerun the same command to resume)", 130)


def _train(tr: Trainer, args, cfg: TrainConfig, out: Path, rank: int, world: int) -> int:
    log_path = out / "log.csv"
    if rank == 0:
        trim_log(log_path, tr.step)    # rows past the checkpoint a crash left, and a partial last line
    new_log = not log_path.exists()
    from tqdm import tqdm
    t_start = last_ckpt = time.time()
    bar = tqdm(initial=tr.step, total=args.steps, unit="step", disable=rank != 0, file=sys.stderr)
    try:
        with open(log_path, "a", newline="") as f:
            w = csv.writer(f)
            if new_log and rank == 0:
                w.writerow(["step", "phase", "loss", "lr", "samples_per_s", "wall_s"])
            acc, n_acc, t_acc = 0.0, 0, time.time()
            while True:
                if args.steps is not None and tr.step >= args.steps:
                    break
                if args.minutes is not None and time.time() - t_start > args.minutes * 60:
                    break
                loss = tr.train_step()
                if not math.isfinite(loss):
                    tr.save(out / "ckpt-nonfinite")
                    bar.close()
                    return fail("train_impact", f"loss is {loss} at step {tr.step}; stopped (last good checkpoint kept)", 1)
                acc, n_acc = acc + loss, n_acc + 1
                bar.update(1)
                if tr.step % 20 == 0 and rank == 0:
                    sps = n_acc * cfg.batch_size * world / (time.time() - t_acc)
                    w.writerow([tr.step, cfg.phase, f"{acc / n_acc:.5f}", f"{tr.lr_at(tr.step):.2e}", f"{sps:.1f}",
                                f"{time.time() - t_start:.0f}"])
                    f.flush()
                    bar.set_postfix(loss=f"{acc / n_acc:.4f}", sps=f"{sps:.1f}")
                    acc, n_acc, t_acc = 0.0, 0, time.time()
                if time.time() - last_ckpt > args.ckpt_minutes * 60:
                    tr.save()
                    last_ckpt = time.time()
        tr.save()
    finally:
        bar.close()
    if world > 1:
        dist.destroy_process_group()
    print(json.dumps({"step": tr.step, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
