"""Write a model bundle (impact_rt/bundle.py) from training outputs.

    python -m training.export_bundle --ckpt runs/text/ckpt --vae runs/vae/export \
        [--vocoder runs/vocoder/export | --griffin-lim 4] --out impact_rt/models/default [--fp16]

The generator's EMA weights are used. The card (MODEL_CARD.md) is written by
``training.model_card`` from the evaluation results; this step only writes weights and config.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from impact_rt import bundle as B
from impact_rt.config import DecodeConfig, ModelConfig
from impact_rt.model import IMPACT
from impact_rt.vae import AutoencoderKL

from .checkpoint import load_checkpoint, unprefixed


def export(ckpt: Path, vae_dir: Path, out: Path, vocoder_dir: Path | None = None, griffin_lim_iters: int | None = None,
           fp16: bool = True, decode: DecodeConfig | None = None, conditioner: dict | None = None) -> Path:
    got = load_checkpoint(ckpt)
    if got is None:
        raise SystemExit(f"no checkpoint at {ckpt}")
    tensors, meta = got
    model = IMPACT(ModelConfig.from_dict(meta["model"]))
    model.load_state_dict(unprefixed("ema", tensors))
    dtype = torch.float16 if fp16 else None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    B.save_generator(model, tmp, dtype=dtype)
    vae = AutoencoderKL.from_pretrained(str(vae_dir), "vae")
    vae.save_pretrained(str(tmp), "vae", dtype=dtype)
    if vocoder_dir is not None:
        from impact_rt.vocoder import load_trained, neural_kind
        trained = load_trained(str(vocoder_dir), "vocoder")
        trained.save_pretrained(str(tmp), "vocoder", dtype=dtype)
        vocoder = {"kind": neural_kind(trained)}
    else:
        from impact_rt.audio import GriffinLim
        gl = GriffinLim() if griffin_lim_iters is None else GriffinLim(n_iter=griffin_lim_iters)
        vocoder = gl.spec()
    cfg = B.BundleConfig(model.cfg, conditioner or {"kind": "minilm", "length": 78, "dim": 384}, vocoder,
                         decode or DecodeConfig(iterations=16, diffusion_steps=100, guidance=5.0))
    B.write_config(cfg, tmp)
    card = out / "MODEL_CARD.md"
    if card.is_file():  # keep the card until the evaluation rewrites it
        shutil.copy2(card, tmp / "MODEL_CARD.md")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--vocoder", default=None)
    ap.add_argument("--griffin-lim", type=int, default=None,
                    help="Griffin-Lim iterations (default: GriffinLim's, 4 from noise phases)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=5.0)
    a = ap.parse_args(argv)
    out = export(Path(a.ckpt), Path(a.vae), Path(a.out), Path(a.vocoder) if a.vocoder else None, a.griffin_lim,
                 not a.fp32, DecodeConfig(iterations=a.iterations, diffusion_steps=100, guidance=a.guidance))
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"bundle written to {out} ({size:.1f} MB), hash {B.bundle_hash(out)[:16]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
