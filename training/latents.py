"""Build the generator's latent store from a manifest, a trained VAE and the text conditioner.

    python -m training.latents --manifest corpus/manifest.csv --vae runs/vae/bundle --out corpus/latents.safetensors

Each clip is encoded ``--variants`` times: as is, then with light augmentations (speed
perturbation ±8 %, a random spectral tilt of up to ±3 dB), each variant's latent being the VAE
posterior's mean. The manifest is AudioCaps-shaped: ``file`` (relative to the manifest's folder
or absolute), ``caption`` (may be empty), ``split`` (train/val/test; default train).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from impact_rt.audio import N_SAMPLES, MelSpectrogram, load_audio, normalize_waveform, pad_or_trim
from impact_rt.text_conditioner import MiniLMConditioner
from impact_rt.vae import AutoencoderKL

from . import precision
from .cli import Parser, at_least, check_out_file, fail, load_component, read_manifest
from .latent_store import SPLITS, LatentStore


def speed_perturb(wav: torch.Tensor, factor: float) -> torch.Tensor:
    from scipy.signal import resample_poly
    up, down = 100, int(round(100 * factor))
    y = torch.from_numpy(resample_poly(wav.numpy(), up, down).astype(np.float32))
    return pad_or_trim(y, N_SAMPLES)


def tilt(mel: torch.Tensor, db: float) -> torch.Tensor:
    """Add a linear spectral tilt of ``db`` decibels across the mel bins (log-mel is natural log)."""
    ramp = torch.linspace(-0.5, 0.5, mel.shape[-1])
    return mel + ramp * (db / 20.0 * np.log(10.0))


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="latents")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--vae", required=True, help="folder holding vae.safetensors")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", default="train,val,test", help="which manifest splits to encode")
    ap.add_argument("--threads", type=int, default=None)
    precision.add_argument(ap, " (about 1.5x faster than fp32 there)")
    ap.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    ap.add_argument("--reuse", default=None,
                    help="an earlier store of the same VAE and variant count: clips it holds (by manifest id) are "
                         "copied instead of encoded again (e.g. after the corpus gained clips)")
    ap.add_argument("--reuse-manifest", default=None,
                    help="the manifest --reuse was built from, if it has moved or been rewritten since "
                         "(stores that predate recorded clip ids are matched by its row order)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    at_least(ap, args, 1, "--variants", "--batch", "--limit", "--threads")
    keep = set(args.splits.split(","))
    if not keep <= set(SPLITS):
        ap.error(f"--splits: {', '.join(sorted(keep - set(SPLITS)))} is not one of {', '.join(SPLITS)}")
    check_out_file(ap, args.out, args.force)
    try:
        return _encode(args, keep)
    except ValueError as e:     # a missing or unreadable manifest, --vae or --reuse
        return fail("latents", e)
    except OSError as e:
        return fail("latents", e, 1)
    except KeyboardInterrupt:
        return fail("latents", f"interrupted; {args.out} was not written", 130)


def _encode(args, keep: set[str]) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = precision.resolve("bf16" if args.bf16 else args.precision, "cpu", who="latents") == "bf16"
    man = Path(args.manifest)
    rows = [r for r in read_manifest(man) if (r.get("split") or "train") in keep][: args.limit]
    if not rows:
        raise ValueError(f"manifest {man} has no rows of the splits {', '.join(sorted(keep))}")
    vae = load_component(lambda d: AutoencoderKL.from_pretrained(d, "vae"), args.vae, "--vae").eval()
    mel_fn = MelSpectrogram()
    cond = MiniLMConditioner()
    g = torch.Generator().manual_seed(args.seed)

    captions = sorted({r.get("caption", "").strip() for r in rows} - {""})
    cap_index = {c: i for i, c in enumerate(captions)}
    states, masks = [], []
    for i in range(0, len(captions), 64):
        s, m = cond.encode(captions[i:i + 64])
        states.append(s.half())
        masks.append(m)
    text_states = torch.cat(states) if states else torch.zeros(0, cond.length, cond.dim, dtype=torch.half)
    text_mask = torch.cat(masks) if masks else torch.zeros(0, cond.length, dtype=torch.bool)

    vae_hash = hashlib.sha256(Path(args.vae, "vae.safetensors").read_bytes()).hexdigest()
    reuse = reusable_latents(args.reuse, args.reuse_manifest, vae_hash, args.variants) if args.reuse else {}

    from tqdm import tqdm
    lat, clip, cap, split = [], [], [], []
    reused = 0
    pending: list[tuple[torch.Tensor, int]] = []

    def add(zi: torch.Tensor, ri: int):
        r = rows[ri]
        lat.append(zi.half())
        clip.append(ri)
        cap.append(cap_index.get(r.get("caption", "").strip(), -1))
        split.append(SPLITS.get(r.get("split", "train") or "train", 0))

    def flush():
        if not pending:
            return
        mels = torch.stack([m for m, _ in pending])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = vae.encode_latents(mels).float()
        for (_, ri), zi in zip(pending, z):
            add(zi, ri)
        pending.clear()

    for ri, r in enumerate(tqdm(rows, unit="clip", file=sys.stderr)):
        old = reuse.get(r.get("id", ""))
        if old is not None:
            for zi in old:
                add(zi, ri)
            reused += 1
            continue
        f = Path(r["file"])
        f = f if f.is_absolute() else man.parent / f
        try:
            wav = pad_or_trim(load_audio(str(f)), N_SAMPLES)
        except Exception as e:  # unreadable clip: report and skip, never silently
            print(f"skip {f}: {e}", file=sys.stderr)
            continue
        for v in range(args.variants):
            w = wav
            if v > 0:
                w = speed_perturb(wav, float(torch.empty(()).uniform_(0.92, 1.08, generator=g)))
            mel = mel_fn(normalize_waveform(w)[None])[0]
            if v > 1:
                mel = tilt(mel, float(torch.empty(()).uniform_(-3, 3, generator=g)))
            pending.append((mel, ri))
        if len(pending) >= args.batch:
            flush()
    flush()
    if not lat:
        return fail("latents", f"none of the {len(rows)} clips could be read (see the skip lines above)", 1)
    store = LatentStore(torch.stack(lat), torch.tensor(clip), torch.tensor(cap), torch.tensor(split),
                        text_states, text_mask,
                        {"manifest": str(man), "captions": captions, "variants": args.variants,
                         "vae_sha256": vae_hash, "conditioner": cond.spec(),
                         "scale_factor": float(vae.scale_factor), "clip_ids": [r.get("id", "") for r in rows]})
    store.save(args.out)
    print(f"{len(lat)} latents from {len(set(clip))} clips ({reused} reused from {args.reuse}), "
          f"{len(captions)} captions → {args.out}", file=sys.stderr)
    return 0


def reusable_latents(path: str, manifest: str | None, vae_hash: str, variants: int) -> dict[str, list[torch.Tensor]]:
    """{manifest id: that clip's latent rows} of an earlier store, refused (one line) when its VAE
    or variant count differs: latents of another VAE would be silently wrong."""
    old = LatentStore.load(path)
    if old.meta.get("vae_sha256") != vae_hash:
        raise ValueError(f"--reuse {path}: encoded by another VAE (sha256 {str(old.meta.get('vae_sha256'))[:12]}…)")
    if int(old.meta.get("variants", 1)) != variants:
        raise ValueError(f"--reuse {path}: {old.meta.get('variants')} variants a clip, this run makes {variants}")
    if manifest:
        old.meta["manifest"] = manifest
    try:
        ids = old.clip_column("id")
    except ValueError as e:
        raise ValueError(f"--reuse {path}: {e} (pass the manifest it was built from with --reuse-manifest)") from None
    out: dict[str, list[torch.Tensor]] = {}
    for row, c in enumerate(old.clip.tolist()):
        if ids[c]:
            out.setdefault(ids[c], []).append(old.latents[row])
    return out


if __name__ == "__main__":
    sys.exit(main())
