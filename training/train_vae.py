"""Train the mel KL-VAE (impact_rt.vae.AutoencoderKL).

    python -m training.train_vae --manifest M.csv --out runs/vae [--preset small] [--minutes N]
    python -m training.train_vae --manifest M.csv --out runs/vae-dec --init runs/vae/export --freeze-encoder

Loss: L1 on the log-mel + kl_weight * KL (both per mel bin, i.e. LDM's ratio; kl_weight 1e-6),
optionally + adv_weight * a hinge PatchGAN term from step adv_start (off by default). AdamW, bf16
autocast (CPU or GPU), resumable (see training.audio_dataset). At the end: measure the latent scale
factor (scale-by-std on posterior samples of training crops) and export
<out>/export/vae.safetensors + vae.json for impact_rt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from impact_rt.audio import HOP
from impact_rt.vae import PRESETS as VAE_PRESETS
from impact_rt.vae import AutoencoderKL, count_parameters, measure_scale_factor
from training.audio_dataset import (StepBatches, add_common_args, autocast, check_common_args, list_audio_files,
                                    run_training, set_lr, start)
from training.cli import Parser, at_least, fail, load_component


class PatchDiscriminator(nn.Module):
    """A small PatchGAN on the log-mel image (taming's NLayerDiscriminator without norm layers)."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(1, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            c_next = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2 if i < layers else 1, 1), nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(mel.unsqueeze(1))


class VAETrainer:
    def __init__(self, args, device: torch.device, world: int = 1):
        self.args, self.device = args, device
        if args.init:
            self.vae = load_component(lambda d: AutoencoderKL.from_pretrained(d, "vae"), args.init,
                                      "--init").float().to(device)
        else:
            self.vae = AutoencoderKL(args.preset).to(device)
        if args.freeze_encoder:
            for part in (self.vae.encoder, self.vae.quant_conv):
                part.requires_grad_(False)
        self.trainable = [p for p in self.vae.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.trainable, lr=args.lr, betas=(0.5, 0.9),
                                     weight_decay=args.weight_decay)
        self.modules = {"vae": self.vae}
        self.optimizers = {"vae": self.opt}
        self.net = self.vae
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.vae)
        self.disc = None
        if args.adv_weight > 0:
            self.disc = PatchDiscriminator(args.disc_channels).to(device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=args.lr, betas=(0.5, 0.9),
                                           weight_decay=args.weight_decay)
            self.modules["disc"] = self.disc
            self.optimizers["disc"] = self.opt_d

    def losses(self, mel: torch.Tensor, adversarial: bool = False) -> tuple[torch.Tensor, dict]:
        with autocast(self.device, self.args.precision):
            rec, posterior = self.net(mel)
        rec = rec.float()
        l1 = (rec - mel).abs().mean()
        kl = posterior.kl().float().mean()
        loss = l1 + self.args.kl_weight * kl / mel[0].numel()
        out = {"l1": l1.item(), "kl": kl.item()}
        if adversarial:
            with autocast(self.device, self.args.precision):
                g_adv = -self.disc(rec).float().mean()
            loss = loss + self.args.adv_weight * g_adv
            out["g_adv"] = g_adv.item()
        self._rec = rec
        out["loss"] = loss.item()
        return loss, out

    def train_step(self, batch: dict, step: int) -> dict:
        args = self.args
        mel = batch["mel"].to(self.device)
        lr = set_lr(self.opt, args.lr, step, args.warmup)
        adversarial = self.disc is not None and step >= args.adv_start
        self.vae.train()
        if args.freeze_encoder:
            self.vae.encoder.eval()
        loss, out = self.losses(mel, adversarial)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad > 0:
            out["grad_norm"] = float(nn.utils.clip_grad_norm_(self.trainable, args.clip_grad))
        self.opt.step()
        if adversarial:
            set_lr(self.opt_d, args.lr, step - args.adv_start, args.warmup)
            with autocast(self.device, args.precision):
                d_real, d_fake = self.disc(mel).float(), self.disc(self._rec.detach()).float()
            d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            out["d_loss"] = d_loss.item()
        out["lr"] = lr
        return out

    def extra_state(self) -> dict:
        return {"kind": "vae", "config": self.vae.config.to_dict()}


@torch.no_grad()
def init_output_bias(trainer: VAETrainer, args, batches: int = 2) -> float:
    """Start the decoder's output at the data's mean log-mel (measured on a few batches): log-mels
    sit around −6, far from a fresh conv's zero, and Adam's small steps would take thousands of
    steps just to move the bias there."""
    files = list_audio_files(args.manifest, args.folder)
    data = StepBatches(files, args.batch_size, args.crop_frames * HOP, seed=args.seed + 7)
    mean = float(torch.stack([data[i]["mel"].mean() for i in range(batches)]).mean())
    trainer.vae.decoder.conv_out.bias.fill_(mean)
    return mean


@torch.no_grad()
def measure_and_export(trainer: VAETrainer, args) -> float:
    """Scale factor on posterior samples of `scale_batches` fresh batches; export the bundle files.
    With --freeze-encoder the latent space is the init's, scale factor included: nothing is measured."""
    vae, device = trainer.vae.eval(), trainer.device
    dtype = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.export_dtype]
    if args.freeze_encoder:
        vae.save_pretrained(os.path.join(args.out, "export"), "vae", dtype=dtype)
        return float(vae.scale_factor)
    files = list_audio_files(args.manifest, args.folder)
    batches = StepBatches(files, args.batch_size, args.crop_frames * HOP, seed=args.seed + 1)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    latents = []
    for i in range(args.scale_batches):
        with autocast(device, args.precision):
            posterior = vae.encode(batches[i]["mel"].to(device))
        latents.append(posterior.sample(gen).float().cpu())
    scale = measure_scale_factor(latents)
    vae.set_scale_factor(scale)
    vae.save_pretrained(os.path.join(args.out, "export"), "vae", dtype=dtype)
    return scale


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m training.train_vae", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, who="train_vae")
    add_common_args(ap)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip-grad", type=float, default=1.0, help="0 turns clipping off")
    ap.add_argument("--adv-weight", type=float, default=0.0, help="PatchGAN term; 0 = off (default)")
    ap.add_argument("--adv-start", type=int, default=50000)
    ap.add_argument("--disc-channels", type=int, default=64)
    ap.add_argument("--scale-batches", type=int, default=8, help="batches for the scale factor")
    ap.add_argument("--export-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--init", default=None, help="start from an exported VAE folder (vae.safetensors; "
                    "its scale factor too) when --out holds no checkpoint")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="train the decoder only: the encoder, the latent space and the scale factor stay "
                         "the init's, so a generator trained on its latents stays valid (needs --init)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.freeze_encoder and not args.init:
        ap.error("--freeze-encoder needs --init (the VAE whose latent space to keep)")
    check_common_args(ap, args)
    if not args.init and args.preset not in VAE_PRESETS:
        ap.error(f"--preset {args.preset}: choose one of {', '.join(VAE_PRESETS)}")
    at_least(ap, args, 1, "--scale-batches")
    rank, world, device = start(args)
    try:
        trainer = VAETrainer(args, device, world)
        down = 2 ** (len(trainer.vae.config.ch_mult) - 1)     # the encoder's time downsampling
        if args.crop_frames % down:
            raise ValueError(f"--crop-frames must be a multiple of {down} for this VAE, got {args.crop_frames}")
        if not args.init:
            init_output_bias(trainer, args)  # a resumed checkpoint overwrites it
        if rank == 0 and not args.quiet:
            print(f"AutoencoderKL[{args.preset}]: {count_parameters(trainer.vae):,} parameters on {device}",
                  file=sys.stderr)
        step = run_training(trainer, args, rank, world)
        result = {"step": step}
        if rank == 0:
            result["scale_factor"] = measure_and_export(trainer, args)
            result["export"] = os.path.join(args.out, "export")
            print(json.dumps(result))
    except ValueError as e:     # a missing or unreadable manifest, audio file, --init or checkpoint
        raise SystemExit(fail("train_vae", e))
    except OSError as e:        # e.g. a full disk while checkpointing
        raise SystemExit(fail("train_vae", e, 1))
    return result


if __name__ == "__main__":
    main()
