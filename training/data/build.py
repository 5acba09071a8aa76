"""Build the training corpus: python -m training.data.build --out DIR [--seed N]

Stages (each resumable; rerun the same command after an interruption):
  1. fetch   apt-get download the Debian packages into DIR/debs (skips .debs already there)
  2. unpack  audio + copyright of each package into DIR/src/<package> (marker file .done)
  3. render  General MIDI pieces (fluidsynth) and speech (espeak-ng, flite) into DIR/render
  4. scan    inventory of every source file (DIR/state/inventory.jsonl caches hashes, durations, F0)
  5. plan    splits by source recording and the list of clips (deterministic given the seed)
  6. clips   10.24 s / 16 kHz mono FLAC files in DIR/clips/<split>/ (existing files are kept)
  7. report  DIR/manifest.csv (AudioCaps-like) and DIR/report.json
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cli import Parser
from .audio import CLIP_SAMPLES, SR
from .clips import remove_stale, render_all
from .manifest import build_report, format_report, manifest_rows, write_manifest, write_report
from .plan import Planner, PlanConfig, dedupe
from .procedural import NATURE_LICENSE, NATURE_PACKAGE, nature_specs, render_nature
from .render import INSTRUMENT_BY_NAME, piece_specs, render_midi, render_speech, utterance_specs
from .sources import PACKAGES, SUPPLEMENTARY, BuildError, Item, fetch_debs, load_cache, log, read_copyright, \
    save_cache, scan_package, unpack

GM_LICENSE = "MIT (FluidR3_GM soundfont from fluid-soundfont-gm), rendered"
TTS_LICENSE = "synthesised speech (espeak-ng GPL-3+, flite BSD-style)"


@dataclass(frozen=True)
class BuildConfig:
    out: Path
    seed: int = 1234
    packages: tuple[str, ...] = PACKAGES
    supplementary: tuple[str, ...] = tuple(SUPPLEMENTARY)   # a few named files each (sources.SUPPLEMENTARY)
    fmt: str = "flac"
    install_tools: bool = True
    fetch: bool = True               # False: use DIR/src/<package> as it is (tests, offline)
    render: bool = True
    midi_scale: float = 1.0
    tts_male: int = 420
    tts_female: int = 160
    nature: int = 0                  # procedural clips per kind (training/data/procedural.py: wind); train split only
    plan: PlanConfig = field(default_factory=PlanConfig)


def rendered_items(cfg: BuildConfig) -> tuple[list[Item], dict[str, dict], dict[str, str]]:
    """Render (or reuse) GM pieces, TTS and procedural nature clips; return their items, captions and
    eval prompts."""
    items, meta, prompts = [], {}, {}
    if cfg.nature:                   # pure numpy: no tools to install, so not behind --no-render
        nature_dir = cfg.out / "render" / "nature"
        specs = nature_specs(cfg.seed, cfg.nature)
        render_nature(specs, nature_dir)
        for s in specs:
            key = f"{NATURE_PACKAGE}/{s.id}.wav"
            items.append(Item(key, NATURE_PACKAGE, f"{s.id}.wav", str(nature_dir / f"{s.id}.wav"), "render:" + s.id,
                              CLIP_SAMPLES / SR, s.categories[0], NATURE_LICENSE, meta=s.caption))
            meta[key] = {"caption": s.caption}
    if not cfg.render:
        return items, meta, prompts
    pieces = piece_specs(cfg.seed, cfg.midi_scale)
    utts = utterance_specs(cfg.seed, cfg.tts_male, cfg.tts_female)
    gm_dir, tts_dir = cfg.out / "render" / "gm", cfg.out / "render" / "tts"
    render_midi(pieces, gm_dir, install_tools=cfg.install_tools)
    render_speech(utts, tts_dir, install_tools=cfg.install_tools)
    for p in pieces:
        cat = f"gm_{p.instrument}"
        key = f"render-gm/{p.id}.wav"
        items.append(Item(key, "render-gm", f"{p.id}.wav", str(gm_dir / f"{p.id}.wav"), "render:" + p.id,
                          CLIP_SAMPLES / SR, cat, GM_LICENSE, meta=p.caption))
        meta[key] = {"caption": p.caption}
        prompts[cat] = INSTRUMENT_BY_NAME[p.instrument].eval_prompt
    for u in utts:
        cat = f"tts_{u.gender}"
        key = f"render-tts/{u.id}.wav"
        items.append(Item(key, "render-tts", f"{u.id}.wav", str(tts_dir / f"{u.id}.wav"), "render:" + u.id,
                          CLIP_SAMPLES / SR, cat, TTS_LICENSE, meta=u.caption))
        meta[key] = {"caption": u.caption}
        prompts[cat] = "a man speaking"
    return items, meta, prompts


def build(cfg: BuildConfig) -> dict:
    t0 = time.time()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "state").mkdir(exist_ok=True)
    (out / "state" / "config.json").write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")

    # 1-2. packages
    roots: dict[str, Path] = {}
    if cfg.fetch:
        debs = fetch_debs(out / "debs", cfg.packages + cfg.supplementary, cfg.install_tools)
        for pkg, deb in debs.items():
            roots[pkg] = unpack(deb, out / "src" / pkg, SUPPLEMENTARY.get(pkg) if pkg in cfg.supplementary else None)
    else:
        for pkg in cfg.packages + cfg.supplementary:
            root = out / "src" / pkg
            if not root.is_dir():
                raise BuildError(f"no source folder {root} (and fetching is off)")
            roots[pkg] = root
    log(f"[stage] packages ready ({time.time() - t0:.0f}s)")

    # 3. rendered material
    r_items, r_meta, r_prompts = rendered_items(cfg)
    log(f"[stage] rendered material ready: {len(r_items)} pieces ({time.time() - t0:.0f}s)")

    # 4. inventory
    cache_path = out / "state" / "inventory.jsonl"
    cache = load_cache(cache_path)
    items: list[Item] = []
    licenses = {}
    for pkg, root in roots.items():
        got = scan_package(pkg, root, cache)
        save_cache(cache_path, cache)
        licenses[pkg] = read_copyright(root, pkg).default
        log(f"[scan] {pkg}: {len(got)} audio files, {sum(i.duration for i in got) / 3600:.2f} h")
        items += got
    licenses["render-gm"], licenses["render-tts"] = GM_LICENSE, TTS_LICENSE
    if cfg.nature:
        licenses[NATURE_PACKAGE] = NATURE_LICENSE
    n_all = len(items)
    items = dedupe(items) + r_items
    log(f"[stage] inventory: {n_all} package files ({n_all - (len(items) - len(r_items))} byte-identical "
        f"copies dropped) + {len(r_items)} rendered ({time.time() - t0:.0f}s)")

    # 5. plan
    planner = Planner(items, cfg.plan, r_meta, supplementary=set(cfg.supplementary))
    specs = planner.plan()
    (out / "state" / "plan.jsonl").write_text("".join(s.to_json() + "\n" for s in specs))
    log(f"[stage] planned {len(specs)} clips ({time.time() - t0:.0f}s)")

    # 6. clips
    n_stale = remove_stale(specs, out)
    if n_stale:
        log(f"[clips] removed {n_stale} files left by an older plan")
    present, n_rej = render_all(specs, planner.items, out, cfg.fmt, out / "state" / "rejected.txt")
    log(f"[stage] clips on disk: {len(present)}, rejected as near-silent: {n_rej} ({time.time() - t0:.0f}s)")

    # 7. manifest + report
    rows = manifest_rows(present, planner.items, planner.groups, cfg.fmt)
    write_manifest(rows, out / "manifest.csv")
    rep = build_report(rows, planner.items, r_prompts, n_rej, licenses)
    rep["seed"] = cfg.seed
    write_report(rep, out / "report.json")
    log(format_report(rep))
    log(f"[done] manifest {out / 'manifest.csv'}, report {out / 'report.json'} ({time.time() - t0:.0f}s)")
    return rep


def parse_args(argv: list[str]) -> BuildConfig:
    ap = Parser(prog="python -m training.data.build", who="build",
                description="Build the text-to-audio training corpus from Debian packages.")
    ap.add_argument("--out", type=Path, help="output folder (debs, sources, clips, manifest.csv)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated Debian packages")
    ap.add_argument("--supplementary", default=",".join(SUPPLEMENTARY),
                    help="comma-separated supplementary packages (only the files sources.SUPPLEMENTARY names; "
                         "split and scened apart, so the rest of the corpus is the same without them); "
                         "'none' for none")
    ap.add_argument("--format", choices=("flac", "wav"), default="flac")
    ap.add_argument("--no-install-tools", action="store_true",
                    help="fail with a one-line error instead of apt-get installing missing tools")
    ap.add_argument("--no-fetch", action="store_true", help="use DIR/src/<package> as it is")
    ap.add_argument("--no-render", action="store_true", help="skip the MIDI and speech synthesis")
    ap.add_argument("--midi-scale", type=float, default=1.0, help="multiply the number of MIDI pieces")
    ap.add_argument("--extra-train-scenes", type=float, default=0.0,
                    help="extra train-split scenes per event source (their own random stream: the rest of "
                         "the corpus stays as built without them; a share captioned with the event alone)")
    ap.add_argument("--natural-scenes", type=float, default=0.0,
                    help="train-split scenes per event source over a bed it is naturally heard with "
                         "(thunder over rain or wind), captioned with both; their own random stream")
    ap.add_argument("--natural-fg-scenes", type=float, default=0.0,
                    help="more natural scenes per event source, captioned with the event alone (kind natural_fg: "
                         "'thunder rumbling' over rain); their own random stream")
    ap.add_argument("--nature", type=int, default=0,
                    help="procedural clips per kind (wind; "
                         "training/data/procedural.py), train split only; their own ids, so the rest of "
                         "the corpus stays as built without them")
    args = ap.parse_args(argv)
    if args.out is None:
        raise BuildError("missing --out DIR (where the corpus is built)")
    if args.out.exists() and not args.out.is_dir():
        raise BuildError(f"--out {args.out} is a file, not a folder")
    pkgs = tuple(p.strip() for p in args.packages.split(",") if p.strip())
    if not pkgs:
        raise BuildError("--packages is empty")
    supp = () if args.supplementary.strip() == "none" else \
        tuple(p.strip() for p in args.supplementary.split(",") if p.strip())
    unknown = [p for p in supp if p not in SUPPLEMENTARY]
    if unknown:
        raise BuildError(f"--supplementary: {unknown[0]} is not a supplementary package "
                         f"(known: {', '.join(SUPPLEMENTARY)})")
    if set(supp) & set(pkgs):
        raise BuildError(f"--supplementary: {sorted(set(supp) & set(pkgs))[0]} is also in --packages")
    if args.midi_scale < 0:
        raise BuildError("--midi-scale must be >= 0")
    if not 0 <= args.extra_train_scenes <= 100:
        raise BuildError("--extra-train-scenes must be in 0..100")
    if not 0 <= args.natural_scenes <= 100:
        raise BuildError("--natural-scenes must be in 0..100")
    if not 0 <= args.natural_fg_scenes <= 100:
        raise BuildError("--natural-fg-scenes must be in 0..100")
    if not 0 <= args.nature <= 10_000:
        raise BuildError("--nature must be in 0..10000")
    return BuildConfig(out=args.out.resolve(), seed=args.seed, packages=pkgs, supplementary=supp, fmt=args.format,
                       install_tools=not args.no_install_tools, fetch=not args.no_fetch,
                       render=not args.no_render, midi_scale=args.midi_scale, nature=args.nature,
                       plan=PlanConfig(seed=args.seed, extra_train_scenes_per_event=args.extra_train_scenes,
                                       natural_scenes_per_event=args.natural_scenes,
                                       natural_fg_scenes_per_event=args.natural_fg_scenes))


def main(argv: list[str] | None = None) -> int:
    try:
        build(parse_args(sys.argv[1:] if argv is None else argv))
    except BuildError as e:
        print(f"build: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:        # e.g. a full disk or a read-only --out while building
        print(f"build: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build: error: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
