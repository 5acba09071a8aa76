"""Corpus builder tests on a tiny synthetic source tree (no network, no apt, no synthesis tools)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data import captions
from training.data.audio import CLIP_SAMPLES, SR, loop_to, median_f0
from training.data.build import BuildConfig, build
from training.data.captions import categorize, gender_from_f0, scene_caption
from training.data.manifest import FIELDS
from training.data.plan import Planner, PlanConfig, dedupe, norm_stem, source_groups
from training.data.render import Piece, batch_midi, midi_bytes, piece_specs
from training.data.sources import SUPPLEMENTARY, BuildError, Item, parse_copyright, unpack

REPO = Path(__file__).resolve().parents[1]


# ---- a tiny source tree -------------------------------------------------------------------

def tone(seconds, f0=440.0, harmonics=1, noise=0.0, seed=0, sr=22050):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, harmonics + 1))
    x = 0.3 * x / max(1e-9, np.abs(x).max()) + noise * rng.standard_normal(t.size)
    return x.astype(np.float32)


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files: data/sounds/ambience/*
Copyright: someone else
License: CC-BY-SA-3.0
"""

TREE = {
    # package: {relative path: audio}
    "widelands-data": {
        "usr/share/games/widelands/data/sound/animals/bird1_00.wav": lambda: tone(0.8, 2500, seed=1),
        "usr/share/games/widelands/data/sound/animals/bird1_01.wav": lambda: tone(0.7, 2600, seed=2),
        "usr/share/games/widelands/data/sound/animals/bird2_00.wav": lambda: tone(0.9, 3000, seed=3),
        "usr/share/games/widelands/data/sound/animals/bird3_00.wav": lambda: tone(0.6, 2800, seed=4),
        "usr/share/games/widelands/data/sound/animals/wolf_00.wav": lambda: tone(1.5, 400, 3, seed=5),
        "usr/share/games/widelands/data/sound/click.wav": lambda: tone(0.3, 1000, noise=0.05, seed=6),
        "usr/share/games/widelands/data/sound/silence.wav": lambda: np.zeros(22050, np.float32),
        "usr/share/games/widelands/data/music/ingame_00.wav": lambda: tone(25.0, 220, 4, seed=7),
    },
    "redeclipse-data": {
        "usr/share/games/redeclipse/data/sounds/ambience/wind.wav": lambda: tone(3.0, 100, noise=0.2, seed=8),
        "usr/share/games/redeclipse/data/sounds/ambience/creek.wav": lambda: tone(12.0, 50, noise=0.2, seed=9),
        "usr/share/games/redeclipse/data/sounds/ambience/fire.wav": lambda: tone(2.0, 80, noise=0.3, seed=10),
    },
    "minetest-data": {
        "usr/share/games/minetest/games/minetest_game/mods/default/sounds/default_grass_footstep.1.wav":
            lambda: tone(0.2, 150, noise=0.2, seed=11),
        "usr/share/games/minetest/games/minetest_game/mods/default/sounds/default_grass_footstep.2.wav":
            lambda: tone(0.2, 160, noise=0.2, seed=12),
    },
    "tuxpaint-stamps-default": {
        "usr/share/tuxpaint/stamps/animals/mammals/dogs/dog.wav": lambda: tone(0.5, 600, 5, seed=13),
        "usr/share/tuxpaint/stamps/animals/mammals/dogs/dog_desc_fr.wav": lambda: tone(1.5, 120, 8, seed=14),
        "usr/share/tuxpaint/stamps/animals/mammals/dogs/fox_desc_fr.wav": lambda: tone(1.2, 118, 8, seed=15),
        "usr/share/tuxpaint/stamps/animals/mammals/dogs/dog_desc_es.wav": lambda: tone(1.4, 230, 8, seed=16),
    },
}


def make_tree(root: Path, copies: bool = True) -> None:
    for pkg, files in TREE.items():
        base = root / "src" / pkg
        for rel, fn in files.items():
            f = base / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(f), fn(), 22050, subtype="PCM_16")
        doc = base / "usr/share/doc" / pkg
        doc.mkdir(parents=True, exist_ok=True)
        (doc / "copyright").write_text(COPYRIGHT)
    if copies:   # a byte-identical copy elsewhere in the package: one recording, not two
        src = root / "src/widelands-data/usr/share/games/widelands/data/sound/animals/wolf_00.wav"
        dst = root / "src/widelands-data/usr/share/games/widelands/data/sound/other/howl.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())


def tiny_config(out: Path, **plan) -> BuildConfig:
    pc = dict(seed=7, min_groups_heldout=2, val_frac=0.3, test_frac=0.3, scenes_per_event=2.0)
    pc.update(plan)
    return BuildConfig(out=out, seed=pc["seed"], packages=tuple(TREE), supplementary=(), fetch=False,
                       render=False, plan=PlanConfig(**pc))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_tree(out)
    rep = build(tiny_config(out))
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, rows, rep


# ---- captions ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,expected", [
    ("usr/share/games/supertuxkart/data/sfx/thunder.ogg", "thunder"),
    ("usr/share/games/megaglest/tilesets/forest/sounds/rain.ogg", "rain"),
    ("usr/share/games/redeclipse/data/sounds/ambience/morph/stormwind.ogg", "wind"),
    ("usr/share/games/redeclipse/data/sounds/ambience/creek.ogg", "stream"),
    ("usr/share/tuxpaint/stamps/animals/mammals/dogs/dog.ogg", "dog"),
    ("usr/share/games/megaglest/tilesets/autumn/sounds/rooster.ogg", "rooster"),
    ("usr/share/games/supertuxkart/data/tracks/black_forest/cow.ogg", "cow"),
    ("usr/share/games/widelands/data/sound/animals/bird3_01.ogg", "bird"),
    ("usr/share/games/megaglest/tilesets/autumn/sounds/owl.ogg", "owl"),
    ("usr/share/games/minetest/games/minetest_game/mods/fire/sounds/fire_fire.1.ogg", "fire"),
    ("usr/share/games/redeclipse/data/sounds/weapons/mine/explode2.ogg", "explosion"),
    ("usr/share/games/supertuxkart/data/sfx/engine_small.ogg", "engine"),
    ("usr/share/games/minetest/games/minetest_game/mods/default/sounds/default_snow_footstep.4.ogg", "footsteps"),
    ("usr/share/sonic-pi/samples/perc_bell2.flac", "bell"),
    ("usr/share/sonic-pi/samples/loop_amen.flac", "drum_loop"),
    ("usr/share/tuxpaint/stamps/hobbies/music/string/cello.ogg", "cello_sample"),
    ("usr/share/games/widelands/data/music/ingame_07.ogg", "music"),
    ("usr/share/asterisk/sounds/en_US_f_Allison/vm-goodbye.wav", "speech_asterisk"),
    # a spoken description whose name also names a captioned subject is speech, not scissors
    ("usr/share/tuxpaint/stamps/household/arttools/scissors_small_open_desc_fr.ogg", "speech_tuxpaint"),
    ("usr/share/tuxpaint/stamps/household/arttools/scissors_small_open.ogg", "scissors"),
])
def test_caption_table(path, expected):
    cat = categorize(path)
    assert cat is not None and cat.name == expected


@pytest.mark.parametrize("path", [
    "usr/share/games/widelands/data/sound/click.ogg",
    "usr/share/games/megaglest/tilesets/forest/sounds/day.ogg",          # vague: stays uncaptioned
    "usr/share/games/redeclipse/data/sounds/interface/press.ogg",
    "usr/share/games/megaglest/techs/megapack/commondata/sounds/golem_ack3.wav",
])
def test_vague_names_stay_uncaptioned(path):
    assert categorize(path) is None


def test_every_eval_prompt_has_a_category():
    from training.data.manifest import EVAL_PROMPTS
    from training.data.render import INSTRUMENTS
    served = {c.eval_prompt for c in captions.TABLE} | {i.eval_prompt for i in INSTRUMENTS}
    assert set(EVAL_PROMPTS) <= served


def test_scene_caption_names_events_and_bed():
    rng = np.random.default_rng(0)
    dog, rain = captions.BY_NAME["dog"], captions.BY_NAME["rain"]
    texts = {scene_caption([(dog, 2)], rain, rng) for _ in range(40)}
    assert all("dog" in t and "rain" in t for t in texts)
    assert any("twice" in t for t in texts)
    assert len(texts) >= 3                                   # varied phrasings
    owl = captions.BY_NAME["owl"]
    two = scene_caption([(dog, 1), (owl, 1)], rain, rng)
    assert "dog" in two and "owl" in two and "rain" in two


def test_gender_from_pitch():
    assert gender_from_f0(110) == "male"
    assert gender_from_f0(230) == "female"
    assert gender_from_f0(175) == "unknown"
    assert gender_from_f0(0) == "unknown"
    x = tone(1.0, 125, 8, sr=SR)
    assert abs(median_f0(x) - 125) < 8


# ---- splitting by source recording ---------------------------------------------------------

def fake_item(key, cat, dur=1.0, sha=None):
    pkg, rel = key.split("/", 1)
    return Item(key, pkg, rel, "/nonexistent", sha or key, dur, cat, "GPL-2+")


def test_groups_merge_takes_and_copies_but_not_music_tracks():
    items = [fake_item("w/a/wolf_00.ogg", "wolf"), fake_item("w/a/wolf_01.ogg", "wolf"),
             fake_item("w/b/howl.ogg", "wolf", sha="w/a/wolf_00.ogg"),     # same bytes as wolf_00
             fake_item("w/a/bird1_00.ogg", "bird"), fake_item("w/a/bird2_00.ogg", "bird"),
             fake_item("w/m/ingame_01.ogg", "music", 30), fake_item("w/m/ingame_02.ogg", "music", 30)]
    g = source_groups(items)
    assert g["w/a/wolf_00.ogg"] == g["w/a/wolf_01.ogg"] == g["w/b/howl.ogg"]
    assert g["w/a/bird1_00.ogg"] != g["w/a/bird2_00.ogg"]
    assert g["w/m/ingame_01.ogg"] != g["w/m/ingame_02.ogg"]
    assert norm_stem("x/default_grass_footstep.3.ogg") == "default_grass_footstep"
    assert len(dedupe(items)) == len(items) - 1


def many_items():
    items = []
    for k in range(12):
        items += [fake_item(f"p/birds/bird{k}_00.ogg", "bird", 0.8), fake_item(f"p/birds/bird{k}_01.ogg", "bird", 0.7)]
        items.append(fake_item(f"p/amb/rain{k}.ogg", "rain", 4.0))
        items.append(fake_item(f"p/x/thing{k}.ogg", "", 2.0))
        items.append(fake_item(f"q/tuxpaint/stamps/s{k}_desc_fr.ogg", "speech_tuxpaint", 1.5))
    for k in range(8):
        items.append(fake_item(f"p/d/dog{k}.ogg", "dog", 0.5))
    return items


def test_no_source_recording_in_two_splits():
    items = many_items()
    pl = Planner(items, PlanConfig(seed=3, min_groups_heldout=4, val_frac=0.2, test_frac=0.2))
    specs = pl.plan()
    assert {s.split for s in specs} == {"train", "val", "test"}
    split_of_key = {}
    for s in specs:
        for layer in s.layers:
            # every source inside a clip belongs to the clip's split ...
            assert pl.split[layer.key] == s.split
            # ... and a source is never heard in two splits
            assert split_of_key.setdefault(layer.key, s.split) == s.split
    split_of_group = {}
    for key, split in pl.split.items():
        assert split_of_group.setdefault(pl.groups[key], split) == split
    assert any(s.kind == "scene" and len(s.layers) >= 2 for s in specs)


def test_plan_is_deterministic_given_seed():
    items = many_items()
    a = [s.to_json() for s in Planner(items, PlanConfig(seed=5)).plan()]
    b = [s.to_json() for s in Planner(items, PlanConfig(seed=5)).plan()]
    c = [s.to_json() for s in Planner(items, PlanConfig(seed=6)).plan()]
    assert a == b and a != c


def test_extra_train_scenes_leave_every_other_clip_unchanged():
    items = many_items()
    base = {s.id: s for s in Planner(items, PlanConfig(seed=3, min_groups_heldout=4, val_frac=0.2,
                                                       test_frac=0.2)).plan()}
    more = {s.id: s for s in Planner(items, PlanConfig(seed=3, min_groups_heldout=4, val_frac=0.2, test_frac=0.2,
                                                       extra_train_scenes_per_event=4.0)).plan()}
    assert set(base) < set(more)                               # the same clips (ids hash content), and more
    extra = [more[k] for k in set(more) - set(base)]
    assert extra and all(s.split == "train" and s.kind in ("scene", "scene_fg") for s in extra)
    assert len([s for s in extra if len(s.layers) >= 2]) == len(extra)          # a bed under every one
    from training.data.captions import BY_NAME
    short = [s for s in extra if s.caption in set(BY_NAME["dog"].phrases) | set(BY_NAME["bird"].phrases)]
    assert short, "some single-event extra scenes carry the event's own caption"
    assert all(s.kind == "scene_fg" for s in short)                         # marked: the bed goes unnamed
    assert any(s.kind == "scene" for s in extra)                            # the bed named: kind scene
    assert any(s.caption not in set(BY_NAME["dog"].phrases) | set(BY_NAME["bird"].phrases) for s in extra)


def test_natural_scenes_put_thunder_over_rain_or_wind_and_leave_every_other_clip_unchanged():
    items = many_items() + [fake_item(f"p/storm/thunder{k}.ogg", "thunder", 2.5) for k in range(6)]
    cfg = dict(seed=3, min_groups_heldout=4, val_frac=0.2, test_frac=0.2, extra_train_scenes_per_event=1.0)
    base = {s.id: s for s in Planner(items, PlanConfig(**cfg)).plan()}
    more = {s.id: s for s in Planner(items, PlanConfig(**cfg, natural_scenes_per_event=3.0)).plan()}
    assert set(base) < set(more)                               # the same clips, and more
    new = [more[k] for k in set(more) - set(base)]
    train_thunder = [s for s in base.values() if s.split == "train" and s.kind == "event" and "thunder" in s.categories]
    assert train_thunder and new
    assert all(s.split == "train" and s.kind == "scene" and s.categories == ["rain", "thunder"] for s in new)
    assert all("thunder" in s.caption and "rain" in s.caption for s in new)    # the bed named: no scene_fg
    roles = [sorted({layer.role for layer in s.layers}) for s in new]
    assert all(r == ["bed", "event"] for r in roles)
    # 3 a thunder source of the train split (dogs and birds name no natural bed: none for them)
    n_src = len({layer.key for s in base.values() if s.split == "train" and s.kind == "event"
                 and "thunder" in s.categories for layer in s.layers})
    assert len(new) == 3 * n_src


def test_natural_fg_scenes_name_the_event_alone_and_leave_every_other_clip_unchanged():
    items = many_items() + [fake_item(f"p/storm/thunder{k}.ogg", "thunder", 2.5) for k in range(6)]
    cfg = dict(seed=3, min_groups_heldout=4, val_frac=0.2, test_frac=0.2, natural_scenes_per_event=2.0)
    base = {s.id: s for s in Planner(items, PlanConfig(**cfg)).plan()}
    more = {s.id: s for s in Planner(items, PlanConfig(**cfg, natural_fg_scenes_per_event=3.0)).plan()}
    assert set(base) < set(more)
    new = [more[k] for k in set(more) - set(base)]
    from training.data.captions import BY_NAME
    assert new and all(s.split == "train" and s.kind == "natural_fg" for s in new)
    assert all(s.categories == ["rain", "thunder"] for s in new)        # the bed is heard ...
    assert all(s.caption in set(BY_NAME["thunder"].phrases) or s.caption.startswith("thunder") for s in new)
    assert not any("rain" in s.caption for s in new)                      # ... and not named
    assert all(sorted({layer.role for layer in s.layers}) == ["bed", "event"] for s in new)


def test_supplementary_sources_are_split_and_scened_apart_leaving_every_other_clip_unchanged():
    main = many_items()
    supp = [fake_item(f"s/storm/{name}.ogg", "thunder", 2.5)         # 8 recordings (numbered takes would be one)
            for name in ("crack", "rumble", "roll", "clap", "peal", "bolt", "strike", "boom")] 
    supp += [fake_item("s/amb/drizzle.ogg", "rain", 4.0)]
    cfg = PlanConfig(seed=3, min_groups_heldout=4, val_frac=0.2, test_frac=0.2, extra_train_scenes_per_event=1.0,
                     natural_scenes_per_event=2.0)
    base = {s.id: s for s in Planner(main, cfg).plan()}
    pl = Planner(main + supp, cfg, supplementary={"s"})
    more = {s.id: s for s in pl.plan()}
    assert set(base) < set(more)                               # every clip as it was, and more
    new = [more[k] for k in set(more) - set(base)]
    supp_keys = {i.key for i in supp}
    # every new clip holds a supplementary recording; the main ones only as the bed of a scene
    assert all(any(layer.key in supp_keys for layer in s.layers) for s in new)
    assert all(layer.role == "bed" for s in new for layer in s.layers if layer.key not in supp_keys)
    assert any(layer.key not in supp_keys for s in new for layer in s.layers)     # main beds are used
    # split among themselves: the main items keep their splits, the supplementary thunder reaches val and test
    assert {k: v for k, v in pl.split.items() if k not in supp_keys} == Planner(main, cfg).split
    assert {pl.split[i.key] for i in supp if i.category == "thunder"} == {"train", "val", "test"}
    for s in new:                                              # one split per clip
        assert all(pl.split[layer.key] == s.split for layer in s.layers)
    kinds = {s.kind for s in new}
    assert {"event", "scene", "loop"} <= kinds                 # singles, scenes, the rain bed's loops
    natural = [s for s in new if s.kind == "scene" and s.categories == ["rain", "thunder"] and s.split == "train"]
    assert natural


@pytest.mark.parametrize("pkg,path", [(p, f) for p, fs in SUPPLEMENTARY.items() for f in fs])
def test_every_supplementary_file_is_captioned(pkg, path):
    cat = categorize(path)
    assert cat is not None and cat.name in ("thunder", "rain"), path


def test_unpack_takes_only_the_named_files(tmp_path):
    import shutil
    if not (shutil.which("dpkg-deb") and shutil.which("tar")):
        pytest.skip("dpkg-deb is not installed here")
    root = tmp_path / "pkg"
    for rel in ("usr/share/games/x/sounds/thunder.wav", "usr/share/games/x/sounds/other.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), tone(0.3), 22050)
    (root / "usr/share/doc/x-data").mkdir(parents=True)
    (root / "usr/share/doc/x-data/copyright").write_text(COPYRIGHT)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text("Package: x-data\nVersion: 1\nArchitecture: all\n"
                                         "Maintainer: t <t@t>\nDescription: t\n")
    deb = tmp_path / "x-data_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    dest = unpack(deb, tmp_path / "src", ("usr/share/games/x/sounds/thunder.wav",))
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != ".done")
    assert got == ["usr/share/doc/x-data/copyright", "usr/share/games/x/sounds/thunder.wav"]
    with pytest.raises(BuildError, match="has no usr/share/games/x/sounds/rain.wav"):
        unpack(deb, tmp_path / "src2", ("usr/share/games/x/sounds/rain.wav",))


# ---- the whole build on the tiny tree -----------------------------------------------------

def test_manifest_fields_and_files(built):
    out, rows, rep = built
    assert rows, "no clips"
    assert set(FIELDS) <= set(rows[0])
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["split"] in ("train", "val", "test")
        assert (out / r["file"]).exists()
        assert r["source_package"] and r["source_file"] and r["license"]
    assert any(r["caption"] == "" for r in rows)              # uncaptioned material is kept
    assert any("dog" in r["caption"] for r in rows)
    assert any(r["kind"] == "scene" for r in rows)
    amb = [r for r in rows if "ambience/creek" in r["source_file"] and r["source_package"] == "redeclipse-data"]
    assert amb and all(r["license"] == "CC-BY-SA-3.0" for r in amb)
    assert (out / "report.json").exists()
    assert rep["total"]["clips"] == len(rows)


def test_clip_length_rate_and_format(built):
    out, rows, _ = built
    for r in rows:
        info = sf.info(str(out / r["file"]))
        assert info.samplerate == SR == 16000
        assert info.channels == 1
        assert info.frames == CLIP_SAMPLES == 163840
        assert info.subtype == "PCM_16"


def test_silent_sources_are_dropped_and_speech_is_gendered(built):
    out, rows, rep = built
    assert not any("silence.wav" in r["source_file"] for r in rows)
    assert rep["rejected_silent"] >= 1
    male = [r for r in rows if "dog_desc_fr" in r["source_file"] or "fox_desc_fr" in r["source_file"]]
    assert male and all(("man" in r["caption"] or "male" in r["caption"]) and "woman" not in r["caption"]
                        for r in male)
    female = [r for r in rows if "dog_desc_es" in r["source_file"]]
    assert female and all("woman" in r["caption"] or "female" in r["caption"] for r in female)


def test_rebuild_resumes_and_is_identical(built):
    out, rows, _ = built
    mtimes = {r["file"]: (out / r["file"]).stat().st_mtime_ns for r in rows}
    build(tiny_config(out))
    with open(out / "manifest.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert again == rows
    assert all((out / f).stat().st_mtime_ns == t for f, t in mtimes.items())   # nothing re-rendered


# ---- small pieces --------------------------------------------------------------------------

def test_loop_to_length_and_start():
    x = np.arange(1000, dtype=np.float32)
    y = loop_to(x, 5000, start=100, xfade=50)
    assert y.shape == (5000,)
    assert y[0] == 100
    assert np.array_equal(loop_to(x, 300, start=10), x[10:310])


def test_copyright_tail_matching():
    cr = parse_copyright(COPYRIGHT)
    assert cr.default == "GPL-2+"
    assert cr.license_for("usr/share/games/redeclipse/data/sounds/ambience/wind.ogg") == "CC-BY-SA-3.0"
    assert cr.license_for("usr/share/games/redeclipse/data/sounds/music/x.ogg") == "GPL-2+"


@pytest.mark.parametrize("prose,expected", [
    ("under the terms of the GNU General Public License as published by\n  the Free Software Foundation; "
     "either version 2 of the License, or\n  (at your option) any later version.", "GPL-2+"),
    ("licensed under the GNU General Public License, version 3.", "GPL-3"),
    ("under the terms of the GNU Lesser General Public License as published by the Free Software "
     "Foundation; either version 2.1 of the License, or (at your option) any later version.", "LGPL-2.1+"),
    ("All rights reserved. Ask the authors.", "see copyright"),
])
def test_old_style_copyright_prose_names_its_gnu_licence(prose, expected):
    # pachi-data's copyright file is not DEP-5: its licence is only stated in prose
    assert parse_copyright("This package was debianized by someone.\n\n" + prose + "\n").default == expected


def test_midi_writer_and_piece_captions():
    data = midi_bytes([(0.0, bytes([0x90, 60, 100])), (0.5, bytes([0x80, 60, 0]))])
    assert data[:4] == b"MThd" and b"MTrk" in data and data.endswith(b"\xff\x2f\x00")
    pieces = piece_specs(1, 0.05)
    assert pieces == piece_specs(1, 0.05)
    by = {p.instrument: p for p in pieces}
    assert "cello" in by["cello"].caption
    assert "drum" in by["drums"].caption
    assert by["bells"].caption and "bell" in by["bells"].caption or "chime" in by["bells"].caption
    assert batch_midi([Piece("x", "piano", "slow", 70, 1, "a piano playing", "major")])[:4] == b"MThd"


def test_cli_missing_out_is_a_one_line_error():
    r = subprocess.run([sys.executable, "-m", "training.data.build"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0]


def test_cli_missing_source_folder_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training.data.build", "--out", str(tmp_path), "--no-fetch",
                        "--no-render", "--packages", "widelands-data"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "widelands-data" in r.stderr


def test_new_plan_replaces_stale_clips(tmp_path):
    make_tree(tmp_path, copies=False)
    build(tiny_config(tmp_path, seed=1))
    build(tiny_config(tmp_path, seed=2))
    with open(tmp_path / "manifest.csv", newline="") as f:
        files = {r["file"] for r in csv.DictReader(f)}
    on_disk = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "clips").glob("*/*")}
    assert files == on_disk


def test_build_arguments_reach_the_plan_and_bad_counts_are_refused(tmp_path):
    from training.data.build import BuildError, parse_args
    cfg = parse_args(["--out", str(tmp_path), "--extra-train-scenes", "8", "--natural-scenes", "20",
                      "--natural-fg-scenes", "12"])
    assert cfg.plan.extra_train_scenes_per_event == 8 and cfg.plan.natural_scenes_per_event == 20
    assert cfg.plan.natural_fg_scenes_per_event == 12
    for flag in ("--natural-scenes", "--extra-train-scenes", "--natural-fg-scenes"):
        with pytest.raises(BuildError, match=flag):
            parse_args(["--out", str(tmp_path), flag, "-1"])
    # supplementary packages: all by default, a chosen few, none; unknown or doubled ones refused
    assert cfg.supplementary == tuple(SUPPLEMENTARY)
    assert parse_args(["--out", str(tmp_path), "--supplementary", "pachi-data"]).supplementary == ("pachi-data",)
    assert parse_args(["--out", str(tmp_path), "--supplementary", "none"]).supplementary == ()
    with pytest.raises(BuildError, match="not a supplementary package"):
        parse_args(["--out", str(tmp_path), "--supplementary", "widelands-data"])
    with pytest.raises(BuildError, match="also in --packages"):
        parse_args(["--out", str(tmp_path), "--packages", "pachi-data", "--supplementary", "pachi-data"])


def test_procedural_clips_join_the_training_split_and_leave_every_other_clip_unchanged(built, tmp_path):
    from dataclasses import replace
    from training.data.procedural import NATURE_LICENSE, NATURE_PACKAGE
    out0, rows0, _ = built
    make_tree(tmp_path)
    rep = build(replace(tiny_config(tmp_path), nature=3))
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r for r in rows if r["kind"] != "procedural"] == rows0
    new = [r for r in rows if r["kind"] == "procedural"]
    assert len(new) == 3
    for r in new:
        assert r["split"] == "train" and r["category"] == "wind" and r["source_package"] == NATURE_PACKAGE
        assert r["license"] == NATURE_LICENSE and "wind" in r["caption"]
        assert sf.info(str(tmp_path / r["file"])).frames == CLIP_SAMPLES
    assert rep["licenses"][NATURE_PACKAGE] == NATURE_LICENSE
    assert rep["by_kind"]["procedural"]["train"] == 3 and rep["by_source_package"][NATURE_PACKAGE]["clips"] == 3
    # a rebuild keeps them as they are
    mtimes = {r["file"]: (tmp_path / r["file"]).stat().st_mtime_ns for r in new}
    build(replace(tiny_config(tmp_path), nature=3))
    assert all((tmp_path / f).stat().st_mtime_ns == t for f, t in mtimes.items())


def test_nature_argument_reaches_the_config_and_bad_counts_are_refused(tmp_path):
    from training.data.build import BuildError, parse_args
    assert parse_args(["--out", str(tmp_path)]).nature == 0
    assert parse_args(["--out", str(tmp_path), "--nature", "240"]).nature == 240
    with pytest.raises(BuildError, match="--nature"):
        parse_args(["--out", str(tmp_path), "--nature", "-1"])


def test_cli_an_out_that_is_a_file_and_bad_values_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("keep")
    for args in (["--out", str(tmp_path / "file"), "--no-fetch", "--no-render"],     # was a FileExistsError
                 ["--out", str(tmp_path / "o"), "--seed", "x"]):                       # was the usage dump too
        r = subprocess.run([sys.executable, "-m", "training.data.build", *args], cwd=REPO, capture_output=True,
                           text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("build: error: "), r.stderr
    assert (tmp_path / "file").read_text() == "keep" and not (tmp_path / "o").exists()


def test_cli_an_os_error_while_building_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from training.data import build as B

    def full_disk(cfg):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(B, "build", full_disk)
    assert B.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "build: error: [Errno 28] No space left on device\n"
