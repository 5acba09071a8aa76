"""Write a model bundle (impact_rt/bundle.py) from training outputs.

    python -m training.export_bundle --ckpt runs/text/ckpt --vae runs/vae/export \
        [--vocoder runs/vocoder/export | --griffin-lim 4] --out impact_rt/models/default [--fp32] [--force]

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
from .cli import Parser, at_least, fail, load_component


def export(ckpt: Path, vae_dir: Path, out: Path, vocoder_dir: Path | None = None, griffin_lim_iters: int | None = None,
           fp16: bool = True, decode: DecodeConfig | None = None, conditioner: dict | None = None) -> Path:
    """Write the bundle to ``out`` (through ``out.tmp``, renamed into place; an existing ``out`` is
    replaced). Every input is loaded and checked first: a missing or corrupt one, or one that does not
    fit the generator, is a one-line ValueError and nothing is written."""
    got = load_checkpoint(ckpt)
    if got is None:
        raise ValueError(f"no checkpoint at {ckpt}")
    tensors, meta = got
    try:
        model = IMPACT(ModelConfig.from_dict(meta["model"]))
        model.load_state_dict(unprefixed("ema", tensors))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"checkpoint {ckpt} does not hold a generator's EMA weights "
                         f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    conditioner = conditioner or {"kind": "minilm", "length": 78, "dim": 384}
    have = (conditioner.get("length"), conditioner.get("dim"))
    if have != (model.cfg.text_len, model.cfg.text_dim):
        raise ValueError(f"the generator takes text states [{model.cfg.text_len}, {model.cfg.text_dim}], the "
                         f"{conditioner.get('kind')} conditioner gives [{have[0]}, {have[1]}]")
    decode = (decode or DecodeConfig(iterations=16, diffusion_steps=100, guidance=5.0)).validate(
        model.cfg.num_tokens, model.cfg.train_steps)
    vae = load_component(lambda d: AutoencoderKL.from_pretrained(d, "vae"), vae_dir, "--vae")
    if vae.config.embed_dim != model.cfg.latent_channels:
        raise ValueError(f"--vae {vae_dir} has {vae.config.embed_dim} latent channels, the generator "
                         f"{model.cfg.latent_channels}")
    trained = None
    if vocoder_dir is not None:
        from impact_rt.vocoder import load_trained, neural_kind
        trained = load_component(lambda d: load_trained(d, "vocoder"), vocoder_dir, "--vocoder")
        vocoder = {"kind": neural_kind(trained)}
    else:
        from impact_rt.audio import GriffinLim
        gl = GriffinLim() if griffin_lim_iters is None else GriffinLim(n_iter=griffin_lim_iters)
        vocoder = gl.spec()
    dtype = torch.float16 if fp16 else None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        B.save_generator(model, tmp, dtype=dtype)
        vae.save_pretrained(str(tmp), "vae", dtype=dtype)
        if trained is not None:
            trained.save_pretrained(str(tmp), "vocoder", dtype=dtype)
        cfg = B.BundleConfig(model.cfg, conditioner, vocoder, decode)
        B.write_config(cfg, tmp)
        card = out / "MODEL_CARD.md"
        if card.is_file():  # keep the card until the evaluation rewrites it
            shutil.copy2(card, tmp / "MODEL_CARD.md")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def out_problem(out: Path, force: bool) -> str | None:
    """Why ``out`` cannot take the bundle, or None: a file; a folder with files in it without ``force``;
    with it, one that holds no model bundle (never deleted on the strength of --force). An empty folder
    takes the bundle."""
    if out.is_file() or (out.is_symlink() and not out.is_dir()):
        return f"--out {out} is a file"
    if out.is_dir() and any(out.iterdir()):
        if not force:
            return f"{out} exists (use --force to replace the bundle in it)"
        if not (out / "config.json").is_file():
            return f"--out {out} is a folder that holds no model bundle (no config.json); not replacing it"
    return None


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="export_bundle")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--vocoder", default=None)
    ap.add_argument("--griffin-lim", type=int, default=None,
                    help="Griffin-Lim iterations (default: GriffinLim's, 4 from noise phases)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace the model bundle in an existing --out")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=5.0)
    a = ap.parse_args(argv)
    at_least(ap, a, 0, "--griffin-lim")
    problem = out_problem(Path(a.out), a.force)
    if problem:
        ap.error(problem)
    try:
        out = export(Path(a.ckpt), Path(a.vae), Path(a.out), Path(a.vocoder) if a.vocoder else None, a.griffin_lim,
                     not a.fp32, DecodeConfig(iterations=a.iterations, diffusion_steps=100, guidance=a.guidance))
    except ValueError as e:     # a missing or corrupt input, or one that does not fit the generator
        return fail("export_bundle", e)
    except OSError as e:
        return fail("export_bundle", e, 1)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"bundle written to {out} ({size:.1f} MB), hash {B.bundle_hash(out)[:16]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
