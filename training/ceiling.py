"""What adherence can real audio reach through our own VAE and vocoder? The evaluation's ceiling.

    python -m training.ceiling --corpus /work/corpus --model impact_rt/models/default --out runs/ceiling

For every prompt of ``shared/eval/prompts.tsv``, real corpus clips of the matching category
(the hand table ``PROMPT_CATEGORIES``; test split first, then val, then train) are judged by the
same YAMNet adherence as generated clips, three ways: as recorded; through the log-mel front end
and the bundle's vocoder; and through the front end, the bundle's VAE (encode → decode) and the
vocoder. A generator can at best reach the last number; the gaps say which stage costs what.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from impact_rt.fileio import atomic_write_text

from .cli import Parser, at_least, check_run_folder, fail, read_manifest

# prompt → manifest categories whose clips are honest examples of it (whole clips, not scenes)
PROMPT_CATEGORIES = {
    "thunder": ["thunder"], "rain falling on a roof": ["rain"], "strong wind blowing": ["wind"],
    "a stream of water flowing": ["stream"], "a dog barking": ["dog"], "a rooster crowing": ["rooster"],
    "a cow mooing": ["cow"], "birds singing": ["bird", "birds_bed"], "an owl hooting": ["owl"],
    "a fire crackling": ["fire"], "an explosion": ["explosion"], "a car engine running": ["engine"],
    "footsteps": ["footsteps"], "a bell ringing": ["bell"], "a man speaking": ["tts_male", "speech_asterisk"],
    "a cello playing a slow melody": ["gm_cello"], "a drum kit playing a beat": ["gm_drums"],
    "a piano playing": ["gm_piano"],
}
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}


def pick_clips(manifest: Path, per_prompt: int) -> list[tuple[str, Path]]:
    if not manifest.exists():
        raise ValueError(f"no manifest.csv in the corpus folder {manifest.parent}")
    rows = [r for r in read_manifest(manifest, ("id", "file", "split", "category"))
            if not (r.get("kind") or "").startswith(("scene", "natural"))]
    out = []
    for prompt, cats in PROMPT_CATEGORIES.items():
        cand = sorted((r for r in rows if r.get("category") in cats), key=lambda r: (SPLIT_ORDER.get(r["split"], 3), r["id"]))
        out += [(prompt, manifest.parent / r["file"]) for r in cand[:per_prompt]]
    return out


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, who="ceiling")
    ap.add_argument("--corpus", required=True, help="corpus folder (manifest.csv)")
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-prompt", type=int, default=5)
    ap.add_argument("--force", action="store_true", help="replace a finished measurement in --out (its summary.json)")
    a = ap.parse_args(argv)
    at_least(ap, a, 1, "--per-prompt")
    check_run_folder(ap, a.out)
    if (Path(a.out) / "summary.json").exists() and not a.force:
        ap.error(f"{a.out} holds a finished measurement (use --force to replace it)")
    from impact_rt.bundle import BundleError
    from impact_rt.evaluation.errors import EvalError
    try:
        return _measure(a)
    except (ValueError, BundleError) as e:      # a missing corpus, manifest, clip or bundle
        return fail("ceiling", e)
    except EvalError as e:                      # the scoring's own one-line errors
        return fail("ceiling", e, e.exit_code)
    except OSError as e:
        return fail("ceiling", e, 1)


def _measure(a) -> int:
    from impact_rt.audio import MelSpectrogram, load_audio, save_audio
    from impact_rt.evaluation import evaluate
    from impact_rt.evaluation.adherence import default_prompts_path
    from impact_rt.pipeline import Pipeline

    jobs = pick_clips(Path(a.corpus) / "manifest.csv", a.per_prompt)
    if not jobs:
        raise ValueError(f"{a.corpus}/manifest.csv has no whole clip of any evaluation prompt's categories")
    missing = [str(path) for _, path in jobs if not path.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} clips of the manifest are not on disk (first: {missing[0]})")
    pipe = Pipeline.from_pretrained(a.model, backend="torch")
    vae, vocoder = pipe.backend.vae, pipe.backend.vocoder
    if not hasattr(vae, "encoder"):
        raise ValueError("the bundle's VAE has no encoder: the VAE round trip cannot be measured")
    mel_fn = MelSpectrogram()
    out = Path(a.out)
    ways = ("recorded", "vocoder", "vae+vocoder")
    for w in ways:
        (out / w).mkdir(parents=True, exist_ok=True)
    records = []
    with torch.inference_mode():
        for i, (prompt, path) in enumerate(jobs):
            try:
                wav = load_audio(str(path))[None]
            except Exception as e:      # soundfile's errors for a missing or unreadable clip
                raise ValueError(f"cannot read clip {path}: {str(e).splitlines()[0] if str(e) else e!r}") from None
            mel = mel_fn(wav)
            z = vae.encode(mel).mode()
            name = f"{i:04d}.wav"
            for w, audio in zip(ways, (wav, vocoder(mel), vocoder(vae.decode(z)))):
                save_audio(str(out / w / name), audio[0])
            records.append({"file": name, "prompt": prompt, "source": str(path)})
    summary = {"clips": len(records), "per_prompt": a.per_prompt, "model": a.model or "default"}
    for w in ways:
        (out / w / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rep = evaluate(out / w, None, default_prompts_path(), out / w / "clips.jsonl")
        summary[w] = {"adherence": rep["adherence"]["rate"],
                      "per_prompt": {r["prompt"]: f"{r['hits']}/{r['clips']}" for r in rep["adherence"]["per_prompt"]}}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(json.dumps({w: summary[w]["adherence"] for w in ways}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
