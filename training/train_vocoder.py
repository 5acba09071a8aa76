"""Train a vocoder (impact_rt.vocoder: HifiGan or Vocos) on log-mels of the AudioLDM front end.

    python -m training.train_vocoder --manifest M.csv --out runs/voc [--preset small] [--minutes N]
    python -m training.train_vocoder ... --no-gan      # fast mode: mel L1 + multi-resolution STFT
    python -m training.train_vocoder ... --arch vocos --no-gan --crop-frames 256   # the CPU vocoder
    python -m training.train_vocoder --out runs/voc --export-only   # export a running run's checkpoint

HiFi-GAN's recipe (Kong et al., 2020): generator loss = 45 * mel L1 + LSGAN adversarial +
2 * feature matching against a multi-period (periods 2, 3, 5, 7, 11) and a multi-scale (3 scales)
discriminator; AdamW(betas 0.8, 0.99). Crops are short (--crop-frames 64 = 0.64 s by default).
--disc-width scales every discriminator channel count (1.0 = HiFi-GAN's). With --no-gan there are
no discriminators and a multi-resolution STFT loss (spectral convergence + log magnitude) is added.
Weight norm is on during training; the export (<out>/export/vocoder.safetensors + vocoder.json)
has it folded. Resumable like train_vae (see training.audio_dataset).

--arch vocos trains impact_rt.vocoder.Vocos instead: ConvNeXt blocks at the frame rate and an
inverse STFT, ~40x cheaper a step than HiFi-GAN's sample-rate convolutions, with white-noise phases
drawn afresh each step from (seed, step) so that a resumed run sees the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from impact_rt.audio import MelSpectrogram, stft
from impact_rt.vocoder import PRESETS as HIFIGAN_PRESETS
from impact_rt.vocoder import VOCOS_PRESETS, HifiGan, Vocos, count_parameters
from training.audio_dataset import (add_common_args, autocast, check_common_args, find_checkpoint, load_checkpoint,
                                    run_training, set_lr, start)
from training.cli import Parser, fail

LRELU = 0.1


def _w(channels: int, width: float, multiple: int = 16) -> int:
    return max(multiple, int(round(channels * width / multiple)) * multiple)


class DiscriminatorP(nn.Module):
    """HiFi-GAN's period discriminator: the waveform folded to [B, 1, T / p, p], 2-D convs."""

    def __init__(self, period: int, width: float = 1.0):
        super().__init__()
        self.period = period
        chans = [1] + [_w(c, width) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3, 1) if i < 4 else 1, (2, 0)))
            for i in range(5))
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class DiscriminatorS(nn.Module):
    """HiFi-GAN's scale discriminator (grouped strided 1-D convs); weight norm throughout."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        spec = [(1, 128, 15, 1, 1, 7), (128, 128, 41, 2, 4, 20), (128, 256, 41, 2, 16, 20),
                (256, 512, 41, 4, 16, 20), (512, 1024, 41, 4, 16, 20), (1024, 1024, 41, 1, 16, 20),
                (1024, 1024, 5, 1, 1, 2)]
        convs = []
        for c_in, c_out, k, s, g, p in spec:
            c_in = 1 if c_in == 1 else _w(c_in, width)
            convs.append(weight_norm(nn.Conv1d(c_in, _w(c_out, width), k, s, groups=min(g, c_in), padding=p)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = weight_norm(nn.Conv1d(_w(1024, width), 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class Discriminators(nn.Module):
    """MPD (periods 2, 3, 5, 7, 11) + MSD (raw, /2, /4)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.mpd = nn.ModuleList(DiscriminatorP(p, width) for p in (2, 3, 5, 7, 11))
        self.msd = nn.ModuleList(DiscriminatorS(width) for _ in range(3))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        x = wav.unsqueeze(1)
        outs, fmaps = [], []
        for d in self.mpd:
            o, f = d(x)
            outs.append(o)
            fmaps.append(f)
        for i, d in enumerate(self.msd):
            if i:
                x = self.pool(x)
            o, f = d(x)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


def spectral_terms(s_hat: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(spectral convergence, L1 of log magnitudes) of magnitude s_hat against s."""
    sc = torch.linalg.vector_norm(s - s_hat) / torch.linalg.vector_norm(s).clamp_min(1e-7)
    return sc, ((s + 1e-5).log() - (s_hat + 1e-5).log()).abs().mean()


def multi_resolution_stft_loss(y_hat: torch.Tensor, y: torch.Tensor,
                               resolutions=((256, 64), (512, 128), (1024, 256), (2048, 512))) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (Parallel WaveGAN)."""
    total = 0.0
    for n_fft, hop in resolutions:
        win = torch.hann_window(n_fft, device=y.device)
        s_hat, s = (torch.stft(v.float(), n_fft, hop, window=win, return_complex=True).abs()
                    for v in (y_hat, y))
        total = total + sum(spectral_terms(s_hat, s))
    return total / len(resolutions)


class VocoderTrainer:
    def __init__(self, args, device: torch.device, world: int = 1):
        self.args, self.device = args, device
        if args.arch == "vocos":
            self.gen = Vocos(args.preset).to(device)
        else:
            self.gen = HifiGan(args.preset, weight_norm=True).to(device)
        self.mel = MelSpectrogram(n_frames=None, soft=True).to(device)  # loss front end
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), lr=args.lr, betas=(0.8, 0.99),
                                       weight_decay=args.weight_decay)
        self.modules = {"generator": self.gen}
        self.optimizers = {"generator": self.opt_g}
        self.net = nn.parallel.DistributedDataParallel(self.gen) if world > 1 else self.gen
        self.disc = None
        if not args.no_gan:
            self.disc = Discriminators(args.disc_width).to(device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=args.lr, betas=(0.8, 0.99),
                                           weight_decay=args.weight_decay)
            self.modules["discriminators"] = self.disc
            self.optimizers["discriminators"] = self.opt_d
            self.dnet = nn.parallel.DistributedDataParallel(self.disc) if world > 1 else self.disc
        self.magnitude_only = args.arch == "vocos" and self.gen.config.phase == "griffinlim"
        if self.magnitude_only and self.disc is not None:
            raise ValueError("a Vocos with Griffin-Lim phases trains its magnitude only: add --no-gan")
        self.stft_weight = args.stft_weight if args.stft_weight is not None else (1.0 if args.no_gan else 0.0)

    def train_step(self, batch: dict, step: int) -> dict:
        args, amp = self.args, autocast(self.device, self.args.precision)
        wav, mel = batch["wav"].to(self.device), batch["mel"].to(self.device)
        lr = set_lr(self.opt_g, args.lr, step, args.warmup)
        self.gen.train()
        if self.magnitude_only:               # Vocos with Griffin-Lim phases: regress |STFT|
            with amp:
                mag = self.net(mel, magnitude_only=True)
            sc, log_l1 = spectral_terms(mag, stft(wav, self.mel.window).abs())
            loss = log_l1 + sc
            return self._generator_step(loss, {"mag_l1": log_l1.item(), "sc": sc.item()}, lr)
        with amp:
            if self.args.arch == "vocos":   # fresh noise phases per step, a function of (seed, step)
                gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
                phases = self.gen.noise_phases(mel.shape[0], mel.shape[1], generator=gen)
                y_hat = self.net(mel, phases)
            else:
                y_hat = self.net(mel)
        y_hat = y_hat.float()
        out = {}
        if self.disc is not None:  # discriminator step (LSGAN)
            set_lr(self.opt_d, args.lr, step, args.warmup)
            with amp:
                real, _ = self.dnet(wav)
                fake, _ = self.dnet(y_hat.detach())
            d_loss = sum(torch.mean((1 - r.float()) ** 2) + torch.mean(f.float() ** 2)
                         for r, f in zip(real, fake))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            out["d_loss"] = d_loss.item()
        mel_l1 = F.l1_loss(self.mel(y_hat), self.mel(wav))
        loss = args.mel_weight * mel_l1
        out["mel_l1"] = mel_l1.item()
        if self.stft_weight > 0:
            mr = multi_resolution_stft_loss(y_hat, wav)
            loss = loss + self.stft_weight * mr
            out["stft"] = mr.item()
        if self.disc is not None:
            with amp:
                _, fmap_r = self.dnet(wav)
                fake, fmap_g = self.dnet(y_hat)
            g_adv = sum(torch.mean((1 - f.float()) ** 2) for f in fake)
            fm = sum(F.l1_loss(g.float(), r.float().detach())
                     for fr, fg in zip(fmap_r, fmap_g) for r, g in zip(fr, fg))
            loss = loss + g_adv + args.fm_weight * fm
            out["g_adv"], out["fm"] = g_adv.item(), fm.item()
        return self._generator_step(loss, out, lr)

    def _generator_step(self, loss: torch.Tensor, out: dict, lr: float) -> dict:
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if self.args.clip_grad > 0:
            out["grad_norm"] = float(nn.utils.clip_grad_norm_(self.gen.parameters(), self.args.clip_grad))
        self.opt_g.step()
        out["loss"], out["lr"] = loss.item(), lr
        return out

    def extra_state(self) -> dict:
        return {"kind": "vocoder", "arch": self.args.arch, "config": self.gen.config.to_dict()}


def export(gen: nn.Module, args) -> str:
    dtype = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.export_dtype]
    directory = os.path.join(args.out, "export")
    gen.save_pretrained(directory, "vocoder", dtype=dtype)  # weight norm folded
    return directory


def export_checkpoint(args) -> dict:
    """--export-only: the generator of <out>/checkpoint, rebuilt from the architecture and config
    its state.json records (the command line's --arch / --preset do not matter), to <out>/export."""
    found = find_checkpoint(os.path.join(args.out, "checkpoint"))
    if not found:
        raise ValueError(f"no checkpoint in {args.out}")
    try:
        with open(os.path.join(found, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        if state.get("kind", "vocoder") != "vocoder":
            raise ValueError(f"it is a {state.get('kind')} checkpoint, not a vocoder's")
        arch = state.get("arch", "hifigan")
        gen = Vocos(state["config"]) if arch == "vocos" else HifiGan(state["config"], weight_norm=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"checkpoint {found}: state.json does not describe a vocoder ({e})") from None
    load_checkpoint(found, {"generator": gen}, {})
    result = {"step": state["step"], "export": export(gen, args)}
    print(json.dumps(result))
    return result


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m training.train_vocoder", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, who="train_vocoder")
    add_common_args(ap)
    ap.set_defaults(lr=2e-4, batch_size=16, crop_frames=64, warmup=0)
    ap.add_argument("--arch", default="hifigan", choices=["hifigan", "vocos"],
                    help="hifigan: HiFi-GAN V1 (sample-rate upsampling); vocos: frame-rate ConvNeXt + inverse STFT")
    ap.add_argument("--no-gan", action="store_true", help="no discriminators: mel L1 + MR-STFT only")
    ap.add_argument("--disc-width", type=float, default=1.0, help="discriminator channel multiplier")
    ap.add_argument("--mel-weight", type=float, default=45.0)
    ap.add_argument("--fm-weight", type=float, default=2.0)
    ap.add_argument("--stft-weight", type=float, default=None, help="default: 1 with --no-gan, else 0")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip-grad", type=float, default=0.0, help="0 turns clipping off (default)")
    ap.add_argument("--export-only", action="store_true",
                    help="write <out>/export from the run's checkpoint without training (e.g. while it runs)")
    ap.add_argument("--export-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.export_only:
            return export_checkpoint(args)
    except ValueError as e:     # no checkpoint, or a corrupt one
        raise SystemExit(fail("train_vocoder", e))
    except OSError as e:
        raise SystemExit(fail("train_vocoder", e, 1))
    check_common_args(ap, args)
    presets = VOCOS_PRESETS if args.arch == "vocos" else HIFIGAN_PRESETS
    if args.preset not in presets:
        ap.error(f"--preset {args.preset}: choose one of {', '.join(presets)} (--arch {args.arch})")
    rank, world, device = start(args)
    try:
        trainer = VocoderTrainer(args, device, world)
        if rank == 0 and not args.quiet:
            n_d = count_parameters(trainer.disc) if trainer.disc is not None else 0
            print(f"{type(trainer.gen).__name__}[{args.preset}]: {count_parameters(trainer.gen):,} parameters, "
                  f"discriminators {n_d:,}, on {device}", file=sys.stderr)
        step = run_training(trainer, args, rank, world)
        result = {"step": step}
        if rank == 0:
            result["export"] = export(trainer.gen, args)
            print(json.dumps(result))
    except ValueError as e:     # a missing or unreadable manifest, audio file or checkpoint
        raise SystemExit(fail("train_vocoder", e))
    except OSError as e:        # e.g. a full disk while checkpointing
        raise SystemExit(fail("train_vocoder", e, 1))
    return result


if __name__ == "__main__":
    main()
