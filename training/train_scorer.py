"""Train the reranking scorer (``impact_rt.rerank.Scorer``) on the generator's latent store.

    python -m training.train_scorer --latents runs/latents.safetensors --out runs/scorer --minutes 20
    python -m training.train_scorer --latents runs/latents.safetensors --out runs/scorer --export BUNDLE_DIR

A contrastive (CLIP-style) pair of towers: the audio tower reads a clip's latent tokens, the text
tower the conditioner's states of a caption. Positives are pairs of the same manifest category (a
scene's categories joined), so "a clap of thunder" is not a negative for a clip captioned "thunder
rumbling in the distance"; both directions use soft targets over the positives in the batch.
Rows are drawn with the generator trainer's category balance. Augmentations keep the scorer from
keying on the exact latents of the corpus: a time shift (a whole patch row at a time) and Gaussian
noise of a random level. Only captions and audio of our corpus are used: no outside classifier.

Resumable (``--out`` holds ``ckpt`` and ``log.csv``); ``--export DIR`` writes the trained scorer
into a model bundle folder (fp16 ``scorer.safetensors`` + ``scorer.json``), with the text-tower
embeddings of every training caption as its references (the zero-shot form of the score).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from impact_rt.patchify import patchify
from impact_rt.rerank import Scorer, ScorerConfig
from training import precision
from training.cli import Parser, at_least, check_run_folder, fail
from training.checkpoint import (load_checkpoint, load_optimizer, optimizer_tensors, refuse_other_options,
                                 save_checkpoint, trim_log)
from training.latent_store import LatentStore
from training.train_impact import category_weights


@dataclass
class ScorerTrainConfig:
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    total_steps: int = 3000          # the cosine decay's length
    noise_max: float = 0.5           # Gaussian noise σ drawn from U(0, noise_max) per clip
    category_balance: float = 0.5
    seed: int = 0
    bf16: bool = False


def tokens_of(latents: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """Store latents [B, C, T, F] → the generator's tokens [B, N, C·p·p]."""
    return patchify(latents.float(), patch)


def positives(groups: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i, j share a group (category)."""
    return groups[:, None] == groups[None, :]


def contrastive_loss(a: torch.Tensor, t: torch.Tensor, pos: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric soft-target InfoNCE over a batch whose row i pairs audio a[i] with text t[i];
    ``pos`` marks every (audio, text) pair of the same group as a positive."""
    logits = log_scale.exp().clamp(max=100.0) * a @ t.T
    target = pos.float() / pos.float().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ScorerTrainer:
    def __init__(self, cfg: ScorerTrainConfig, store: LatentStore, out: Path, scorer_cfg: ScorerConfig | None = None):
        self.cfg, self.store, self.out = cfg, store, out
        self.scorer = Scorer(scorer_cfg or ScorerConfig(text_dim=store.text_dim))
        self.opt = torch.optim.AdamW(self.scorer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.rows = store.rows("text", "train")
        if len(self.rows) < 2:
            raise ValueError("the latent store has fewer than 2 captioned training rows")
        cats = store.clip_categories()
        names = sorted(set(cats))
        self.group = torch.tensor([names.index(c) for c in cats])          # per clip
        self.weights = category_weights(store, self.rows, cfg.category_balance) if cfg.category_balance else None

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        frac = min(1.0, (step - c.warmup_steps) / max(1, c.total_steps - c.warmup_steps))
        return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def batch(self):
        c, s = self.cfg, self.store
        n = min(c.batch_size, len(self.rows))
        if self.weights is None:
            pick = self.rows[torch.randperm(len(self.rows), generator=self.gen)[:n]]
        else:
            pick = self.rows[torch.multinomial(self.weights, n, replacement=False, generator=self.gen)]
        lat = s.latents[pick].float()
        shift = torch.randint(0, lat.shape[2] // 4, (n,), generator=self.gen) * 4
        lat = torch.stack([torch.roll(x, int(k), dims=1) for x, k in zip(lat, shift)])
        sigma = torch.rand(n, 1, 1, 1, generator=self.gen) * c.noise_max
        lat = lat + sigma * torch.randn(lat.shape, generator=self.gen)
        cap = s.caption_id[pick]
        return tokens_of(lat), s.text_states[cap].float(), s.text_mask[cap].bool(), self.group[s.clip[pick]]

    def train_step(self) -> float:
        tokens, states, mask, groups = self.batch()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16):
            a = self.scorer.embed_audio(tokens)
            t = self.scorer.embed_text(states, mask)
        loss = contrastive_loss(a.float(), t.float(), positives(groups), self.scorer.log_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.scorer.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def validate(self, split: str = "val", limit: int = 2048) -> dict:
        """Audio → category retrieval on a held-out split: the share of captioned clips whose best
        text, among one caption per category of the split, is of their own category."""
        s = self.store
        rows = s.rows("text", split)[:limit]
        if len(rows) == 0:
            return {}
        self.scorer.eval()
        groups = self.group[s.clip[rows]]
        first = {}
        for r, g in zip(rows.tolist(), groups.tolist()):
            first.setdefault(g, r)
        keys = list(first)
        cap = s.caption_id[torch.tensor([first[g] for g in keys])]
        t = self.scorer.embed_text(s.text_states[cap].float(), s.text_mask[cap].bool())
        a = torch.cat([self.scorer.embed_audio(tokens_of(s.latents[rows[i:i + 256]])) for i in range(0, len(rows), 256)])
        best = torch.tensor(keys)[(a @ t.T).argmax(1)]
        self.scorer.train()
        return {"clips": len(rows), "categories": len(keys), "top1": float((best == groups).float().mean())}

    # -- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        opt_t, opt_meta = optimizer_tensors(self.opt)
        tensors = {f"scorer.{k}": v for k, v in self.scorer.state_dict().items()}
        tensors.update(opt_t)
        tensors["rng"] = self.gen.get_state()
        save_checkpoint(self.out / "ckpt", tensors, {"step": self.step, "config": asdict(self.cfg),
                                                     "scorer": self.scorer.cfg.to_dict(), **opt_meta})

    # options that set what a step trains on: a resumed run must keep them (lr and its schedule may change)
    RESUME_FIXED = ("batch_size", "weight_decay", "noise_max", "category_balance")

    def resume(self, recipe: bool = True) -> bool:
        """Continue the run in ``out`` (False where it holds none). A checkpoint of another scorer shape,
        or (with ``recipe``) of other RESUME_FIXED options, is a one-line ValueError."""
        got = load_checkpoint(self.out / "ckpt")
        if got is None:
            return False
        tensors, meta = got
        refuse_other_options(self.out, self.RESUME_FIXED if recipe else (), meta.get("config", {}), self.cfg,
                             "the scorer", meta.get("scorer", {}), self.scorer.cfg.to_dict())
        self.scorer.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("scorer.")})
        load_optimizer(self.opt, tensors, meta)
        self.gen.set_state(tensors["rng"])
        self.step = int(meta["step"])
        return True


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="train_scorer")
    ap.add_argument("--latents", required=True, help="latent store written by training.latents")
    ap.add_argument("--out", required=True, help="run folder (ckpt, log.csv)")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps in total")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (this invocation)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--export", default=None, metavar="DIR",
                    help="write the trained scorer into this model bundle folder and stop")
    ap.add_argument("--no-references", action="store_true",
                    help="with --export: score by the plain cosine instead of the zero-shot form over the "
                         "training captions (impact_rt.rerank.Scorer.score)")
    ap.add_argument("--candidates", type=int, default=None, metavar="K",
                    help="with --export: also set the bundle's default number of candidates (config.json rerank)")
    ap.add_argument("--force", action="store_true", help="with --export: replace a scorer the bundle already has")
    precision.add_argument(ap)
    for f in ("batch_size", "lr", "weight_decay", "warmup_steps", "total_steps", "noise_max", "category_balance", "seed"):
        default = getattr(ScorerTrainConfig, f)
        ap.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    args = ap.parse_args(argv)
    if args.export is None and args.steps is None and args.minutes is None:
        ap.error("give --steps, --minutes or --export")
    at_least(ap, args, 1, "--batch-size", "--threads")
    at_least(ap, args, 0, "--steps", "--minutes", "--noise-max")
    check_run_folder(ap, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    prec = precision.resolve(args.precision, "cpu", who="train_scorer")
    cfg = ScorerTrainConfig(**{f: getattr(args, f) for f in ScorerTrainConfig.__dataclass_fields__ if hasattr(args, f)},
                            bf16=prec == "bf16")
    out = Path(args.out)
    try:
        store = LatentStore.load(args.latents)
        tr = ScorerTrainer(cfg, store, out)
        # refuses a run folder that holds a run of another recipe (an export needs only the scorer's shape)
        resumed = tr.resume(recipe=args.export is None)
    except ValueError as e:
        return fail("train_scorer", e)
    if args.export is not None:
        if not resumed:
            print(f"train_scorer: error: no checkpoint in {out} to export", file=sys.stderr)
            return 2
        from impact_rt import bundle as B
        from impact_rt.rerank import SCORER_WEIGHTS
        if args.candidates is not None and not 1 <= args.candidates <= B.MAX_CANDIDATES:
            print(f"train_scorer: error: --candidates must be in 1..{B.MAX_CANDIDATES}", file=sys.stderr)
            return 2
        try:
            B.read_config(args.export)          # a model bundle, not any folder
        except B.BundleError as e:
            return fail("train_scorer", f"--export: {e}")
        if (Path(args.export) / SCORER_WEIGHTS).exists() and not args.force:
            return fail("train_scorer", f"{args.export} already has a scorer (use --force to replace it)")
        scorer = tr.scorer.eval()
        if not args.no_references:
            caps = store.caption_id[store.rows("text", "train")].unique()
            scorer = scorer.with_references(store.text_states[caps].float(), store.text_mask[caps].bool())
        scorer.save(args.export)
        if args.candidates is not None:
            bc = B.read_config(args.export)
            bc.rerank = {"candidates": args.candidates} if args.candidates > 1 else None
            B.write_config(bc, Path(args.export))
        print(json.dumps({"step": tr.step, "export": args.export, "references": scorer.cfg.references,
                          **tr.validate()}))
        return 0
    if resumed:
        print(f"resumed at step {tr.step}", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _train(tr, args, out)
    except OSError as e:        # e.g. a full disk while checkpointing
        return fail("train_scorer", e, 1)
    except KeyboardInterrupt:
        return fail("train_scorer", f"interrupted at step {tr.step}; the last checkpoint stands "
                    "(rerun the same command to resume)", 130)


def _train(tr: ScorerTrainer, args, out: Path) -> int:
    from tqdm import tqdm
    log_path = out / "log.csv"
    trim_log(log_path, tr.step)        # rows past the checkpoint a crash left, and a partial last line
    new_log = not log_path.exists()
    t_start = last_ckpt = time.time()
    bar = tqdm(initial=tr.step, total=args.steps, unit="step", file=sys.stderr)
    try:
        with open(log_path, "a", newline="") as f:
            w = csv.writer(f)
            if new_log:
                w.writerow(["step", "loss", "lr", "val_top1", "wall_s"])
            acc, n_acc = 0.0, 0
            while (args.steps is None or tr.step < args.steps) and \
                    (args.minutes is None or time.time() - t_start < args.minutes * 60):
                loss = tr.train_step()
                if not math.isfinite(loss):
                    bar.close()
                    return fail("train_scorer", f"loss is {loss} at step {tr.step}; stopped (last good checkpoint kept)", 1)
                acc, n_acc = acc + loss, n_acc + 1
                bar.update(1)
                if tr.step % 100 == 0:
                    v = tr.validate()
                    w.writerow([tr.step, f"{acc / n_acc:.4f}", f"{tr.lr_at(tr.step):.2e}", f"{v.get('top1', float('nan')):.3f}",
                                f"{time.time() - t_start:.0f}"])
                    f.flush()
                    bar.set_postfix(loss=f"{acc / n_acc:.3f}", val=f"{v.get('top1', float('nan')):.3f}")
                    acc, n_acc = 0.0, 0
                if time.time() - last_ckpt > args.ckpt_minutes * 60:
                    tr.save()
                    last_ckpt = time.time()
        tr.save()
    finally:
        bar.close()
    print(json.dumps({"step": tr.step, "out": str(out), **tr.validate()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
