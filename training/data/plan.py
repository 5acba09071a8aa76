"""Splits by source recording, and the plan of every clip (what goes where, with which caption).

Splitting. Files are grouped into *source groups* (union of: identical bytes; same package and
same file stem once one trailing take number is removed, e.g. ``wolf_00``/``wolf_01``, or the many
``tilesets/*/sounds/rain.ogg`` copies; music tracks are exempt from the stem rule since
``ingame_01``/``ingame_02`` are different pieces). A group is one source recording for splitting purposes.
Within each caption category the groups are ordered by a seeded hash; categories with at least
``min_groups_heldout`` groups give ``val_frac``/``test_frac`` of them (at least one each) to val
and test, smaller categories stay in train. Uncaptioned groups are split by hash thresholds.

Clips that mix several recordings (scenes, packed speech, footstep walks) are built only from
recordings of one split, so no recording is ever heard in two splits.

Supplementary packages (``sources.SUPPLEMENTARY``, a few named files each) are grouped and split
among themselves, and their events get scenes of their own (over the beds of every package) from
their own random streams: with or without them, every other clip of the plan is the same.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from .audio import CLIP_SAMPLES, SR
from .captions import BY_NAME, LANGUAGES, Category, event_caption, footstep_surface, gender_from_f0, \
    scene_caption, speech_caption
from .procedural import NATURE_PACKAGE
from .sources import Item

CLIP_SECONDS = CLIP_SAMPLES / SR
SPLITS = ("train", "val", "test")
# single instrument hits make odd scene captions ("a drum is hit while rain falls")
NOT_IN_SCENES = frozenset({"drum_hit", "cymbal", "tabla", "drum_roll"})


@dataclass(frozen=True)
class PlanConfig:
    seed: int = 1234
    val_frac: float = 0.05
    test_frac: float = 0.05
    min_groups_heldout: int = 6
    max_crops_music: int = 24
    max_crops_other: int = 12
    max_crops_uncaptioned: int = 6
    loops_per_bed: int = 3
    singles_per_event: int = 2
    eval_boost: int = 2              # categories serving an eval prompt: x2 loops/singles, x3 scene odds
    scenes_per_event: float = 5.0
    # Extra scenes in the train split only, from their own random stream, so that every clip of the
    # plan without them (val and test included) stays exactly as it was and its latents stay valid.
    # A share of the single-event ones are captioned with the event alone ("thunder", "a dog
    # barking"): the foreground named, the bed left out, as AudioCaps captions often do. Single
    # events are otherwise only heard over silence under such short captions (session 6).
    extra_train_scenes_per_event: float = 0.0
    extra_scene_event_only_captions: float = 0.5
    # Train-split scenes of an event over a bed it is naturally heard with (Category.natural_beds,
    # e.g. thunder over rain), per event source, captioned with both; their own random stream too.
    natural_scenes_per_event: float = 0.0
    # More of them, captioned with the event alone ("thunder rumbling" over rain: a thunderstorm
    # named by its foreground, as AudioCaps captions do), kind "natural_fg"; their own stream.
    natural_fg_scenes_per_event: float = 0.0
    max_scene_event_seconds: float = 6.0
    min_source_seconds: float = 0.1


@dataclass
class Layer:
    key: str                  # Item.key
    mode: str                 # "crop" (take [start, start+len)), "loop" (loop from start), "event"
    at: float = 0.0           # where it starts in the clip (s)
    start: float = 0.0        # where it starts in the source (s)
    gain_db: float = 0.0
    role: str = "main"        # "bed", "event", "main"


@dataclass
class ClipSpec:
    id: str
    split: str
    kind: str                 # crop, loop, event, scene, scene_fg (bed not captioned), natural_fg (a natural
                              # bed not captioned: thunder over rain), speech, render, procedural
                              # (training/data/procedural.py), steps
    caption: str
    categories: list[str]     # every caption category heard in the clip
    layers: list[Layer] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def rng_for(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng(_h(seed, *parts))


# ---- grouping and splitting -------------------------------------------------------------

def norm_stem(rel: str) -> str:
    """File stem without one trailing take number: 'bird1_00' -> 'bird1', 'step.2' -> 'step'."""
    stem = rel.rsplit("/", 1)[-1]
    stem = re.sub(r"\.[a-z0-9]+$", "", stem.lower())
    return re.sub(r"[\s._-]*\d+[a-z]?$", "", stem) or stem


def dedupe(items: list[Item]) -> list[Item]:
    """Drop byte-identical copies (keep the first key in sorted order)."""
    seen, out = set(), []
    for it in sorted(items, key=lambda i: i.key):
        if it.sha1 in seen:
            continue
        seen.add(it.sha1)
        out.append(it)
    return out


def source_groups(items: list[Item]) -> dict[str, str]:
    """item key -> group id (union-find over identical bytes and package+normalised stem)."""
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for it in items:
        union("k:" + it.key, "h:" + it.sha1)
        # numbered takes of one sound are one recording; numbered music tracks are not
        cat = BY_NAME.get(it.category)
        if not it.package.startswith("render-") and not (cat and cat.kind == "music"):
            union("k:" + it.key, f"s:{it.package}:{norm_stem(it.rel)}")
    return {it.key: find("k:" + it.key) for it in items}


def assign_splits(items: list[Item], groups: dict[str, str], cfg: PlanConfig) -> dict[str, str]:
    """item key -> split. Stratified per caption category, whole groups at a time."""
    members = defaultdict(list)
    for it in items:
        members[groups[it.key]].append(it)
    by_cat = defaultdict(list)
    for g, its in members.items():
        cats = sorted(i.category for i in its)
        primary = max(set(cats), key=lambda c: (cats.count(c), c)) if cats else ""
        by_cat[primary].append(g)
    split_of_group = {}
    for cat, gs in by_cat.items():
        gs = sorted(gs, key=lambda g: _h(cfg.seed, "split", g))
        if cat == "":
            for g in gs:
                u = (_h(cfg.seed, "u", g) % 10_000) / 10_000
                split_of_group[g] = ("test" if u < cfg.test_frac else
                                     "val" if u < cfg.test_frac + cfg.val_frac else "train")
            continue
        n = len(gs)
        n_test = n_val = 0
        if n >= cfg.min_groups_heldout:
            n_test = max(1, round(cfg.test_frac * n))
            n_val = max(1, round(cfg.val_frac * n))
        for i, g in enumerate(gs):
            split_of_group[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return {it.key: split_of_group[groups[it.key]] for it in items}


# ---- clip planning ----------------------------------------------------------------------

def _spec_id(kind: str, layers: list[Layer], caption: str) -> str:
    body = json.dumps([asdict(l) for l in layers], sort_keys=True) + "|" + caption
    return f"{kind}-{hashlib.sha1(body.encode()).hexdigest()[:14]}"


def _clip(split, kind, caption, cats, layers) -> ClipSpec:
    return ClipSpec(_spec_id(kind, layers, caption), split, kind, caption, sorted(set(cats)), layers)


def _language(it: Item) -> str:
    m = re.search(r"_desc(?:_([a-z]+))?\.\w+$", it.rel.lower())
    if m:
        return LANGUAGES.get(m.group(1) or "", m.group(1) or "English")
    m = re.search(r"voices/\w+?_([a-z]{2})/", it.rel.lower())
    return LANGUAGES.get(m.group(1), "") if m else ("English" if "asterisk" in it.package else "")


def _speaker(it: Item, cat: Category) -> tuple[str, str]:
    """(speaker group key, gender) for a speech item."""
    folder = it.rel.rsplit("/", 1)[0]
    if cat.speaker == "female":
        return f"{it.package}:{folder}", "female"
    if cat.speaker == "male":
        return f"{it.package}:{folder}", "male"
    if cat.speaker == "voice":
        return f"{it.package}:{folder}", "voice"
    gender = gender_from_f0(it.f0)
    if it.package == "tuxpaint-stamps-default":
        return f"{it.package}:{_language(it)}:{gender}", gender
    return f"{it.package}:{folder}:{gender}", gender


def _by_category(items) -> dict[str, list]:
    """Items grouped by category, in their order."""
    by = defaultdict(list)
    for it in items:
        by[it.category].append(it)
    return by


def _slots(rng, n_events: int, durs: list[float], total: float = CLIP_SECONDS) -> list[float]:
    """Start times for events laid out left to right without overlap, with random gaps."""
    need = sum(durs)
    free = max(0.0, total - need)
    cuts = np.sort(rng.uniform(0, free, n_events))
    out, used = [], 0.0
    for i, d in enumerate(durs):
        out.append(round(float(cuts[i] + used), 3))
        used += d
    return out


class Planner:
    def __init__(self, items: list[Item], cfg: PlanConfig, render_meta: dict[str, dict] | None = None,
                 supplementary: frozenset[str] | set[str] = frozenset()):
        self.cfg = cfg
        self.items = {i.key: i for i in items}
        self.supplementary = frozenset(supplementary)
        self.groups, self.split = {}, {}
        for part in (False, True):          # main packages, then supplementary ones: split apart
            its = [i for i in items if (i.package in self.supplementary) == part and i.package != NATURE_PACKAGE]
            groups = source_groups(its)
            self.groups.update(groups)
            self.split.update(assign_splits(its, groups, cfg))
        for i in items:                     # procedural clips: each its own recording, training split only
            if i.package == NATURE_PACKAGE:
                self.groups[i.key], self.split[i.key] = i.key, "train"
        self.render_meta = render_meta or {}

    def cat(self, it: Item) -> Category | None:
        return BY_NAME.get(it.category)

    def _boost(self, cat: Category) -> int:
        return self.cfg.eval_boost if cat.eval_prompt else 1

    def _pick_category(self, rng, names: list[str], k: int = 1) -> list[str]:
        w = np.array([1.5 * self.cfg.eval_boost if BY_NAME[n].eval_prompt else 1.0 for n in names])
        return [names[i] for i in rng.choice(len(names), k, replace=False, p=w / w.sum())]

    def plan(self) -> list[ClipSpec]:
        clips: list[ClipSpec] = []
        by_split_kind = defaultdict(list)
        for key in sorted(self.items):
            it = self.items[key]
            if it.duration < self.cfg.min_source_seconds:
                continue
            split = self.split[key]
            pool = ("supp:" if it.package in self.supplementary else "") + split   # see _pooled
            if it.package.startswith("render-"):
                clips.append(self._render_clip(it, split))
                continue
            cat = self.cat(it)
            if cat is None:
                clips += self._uncaptioned(it, split)
            elif cat.kind == "speech":
                by_split_kind[(pool, "speech")].append(it)
            elif cat.kind == "music":
                clips += self._music(it, cat, split)
            elif cat.kind == "bed":
                clips += self._bed(it, cat, split)
                by_split_kind[(pool, "bed")].append(it)
            elif cat.steps:
                by_split_kind[(pool, "steps")].append(it)
            else:
                clips += self._event(it, cat, split)
                if it.duration <= self.cfg.max_scene_event_seconds and cat.name not in NOT_IN_SCENES:
                    by_split_kind[(pool, "event")].append(it)
        for split in SPLITS:
            main_beds = by_split_kind[(split, "bed")]
            clips += self._pooled(by_split_kind, split, split, main_beds)
            # supplementary sources: their events over the beds of every package, own streams
            supp = "supp:" + split
            clips += self._pooled(by_split_kind, supp, split, main_beds + by_split_kind[(supp, "bed")],
                                  stream="supplementary-")
        uniq = {c.id: c for c in clips}
        return [uniq[k] for k in sorted(uniq)]

    # -- single-source clips --------------------------------------------------------------
    def _crops(self, it, split, kind, caption_fn, cats, max_crops):
        n = min(max_crops, int(it.duration // CLIP_SECONDS))
        rng = rng_for(self.cfg.seed, "crop", it.key)
        spare = it.duration - n * CLIP_SECONDS
        offset = float(rng.uniform(0, spare / (n + 1))) if spare > 0 else 0.0
        stride = CLIP_SECONDS + (spare / (n + 1) if spare > 0 else 0.0)
        return [_clip(split, kind, caption_fn(rng), cats,
                      [Layer(it.key, "crop", start=round(offset + k * stride, 3))]) for k in range(n)]

    def _render_clip(self, it, split):
        meta = self.render_meta.get(it.key, {})
        kind = "procedural" if it.package == NATURE_PACKAGE else "speech" if it.category.startswith("tts") else "render"
        return _clip(split, kind, meta.get("caption", ""), [it.category], [Layer(it.key, "crop")])

    def _uncaptioned(self, it, split):
        if it.duration >= CLIP_SECONDS:
            return self._crops(it, split, "crop", lambda r: "", [], self.cfg.max_crops_uncaptioned)
        rng = rng_for(self.cfg.seed, "unc", it.key)
        at = float(rng.uniform(0, max(0.0, CLIP_SECONDS - it.duration)))
        return [_clip(split, "event", "", [], [Layer(it.key, "event", at=round(at, 3))])]

    def _music(self, it, cat, split):
        phrase = lambda r: str(r.choice(cat.phrases))
        if it.duration >= CLIP_SECONDS:
            return self._crops(it, split, "crop", phrase, [cat.name], self.cfg.max_crops_music)
        rng = rng_for(self.cfg.seed, "mloop", it.key)
        return [_clip(split, "loop", phrase(rng), [cat.name], [Layer(it.key, "loop")])]

    def _bed(self, it, cat, split):
        phrase = lambda r: str(r.choice(cat.phrases))
        if it.duration >= CLIP_SECONDS:
            return self._crops(it, split, "crop", phrase, [cat.name], self.cfg.max_crops_other)
        rng = rng_for(self.cfg.seed, "bloop", it.key)
        out = []
        for k in range(self.cfg.loops_per_bed * self._boost(cat)):
            start = round(float(rng.uniform(0, it.duration)), 3)
            out.append(_clip(split, "loop", phrase(rng), [cat.name], [Layer(it.key, "loop", start=start)]))
        return out

    def _event(self, it, cat, split):
        if it.duration >= CLIP_SECONDS:
            return self._crops(it, split, "crop", lambda r: str(r.choice(cat.phrases)), [cat.name],
                               self.cfg.max_crops_other)
        rng = rng_for(self.cfg.seed, "single", it.key)
        out = []
        for k in range(self.cfg.singles_per_event * self._boost(cat)):
            max_n = int(CLIP_SECONDS // max(it.duration + 0.3, 0.5))
            n = 1 if not cat.repeat else int(rng.integers(1, max(1, min(3, max_n)) + 1))
            ats = _slots(rng, n, [it.duration + 0.2] * n)
            layers = [Layer(it.key, "event", at=a, gain_db=round(float(rng.uniform(-3, 0)), 2)) for a in ats]
            out.append(_clip(split, "event", event_caption(cat, n, rng), [cat.name], layers))
        return out

    # -- multi-source clips (always within one split) --------------------------------------
    def _speech(self, items, split):
        pools = defaultdict(list)
        for it in items:
            cat = self.cat(it)
            skey, gender = _speaker(it, cat)
            pools[(skey, gender, cat.name)].append(it)
        out = []
        for (skey, gender, cname), its in sorted(pools.items()):
            cat = BY_NAME[cname]
            rng = rng_for(self.cfg.seed, "speech", split, skey)
            order = [its[i] for i in rng.permutation(len(its))]
            while order:
                layers, t = [], float(rng.uniform(0, 0.5))
                while order and t + order[0].duration <= CLIP_SECONDS:
                    u = order.pop(0)
                    layers.append(Layer(u.key, "event", at=round(t, 3)))
                    t += u.duration + float(rng.uniform(0.15, 0.6))
                if not layers:                      # longer than a clip: crop its start
                    u = order.pop(0)
                    layers.append(Layer(u.key, "crop"))
                if gender == "voice":
                    caption = str(rng.choice(cat.phrases))
                else:
                    caption = speech_caption(gender, _language(self.items[layers[0].key]), rng)
                out.append(_clip(split, "speech", caption, [cname], layers))
        return out

    def _walk_layers(self, rng, steps: list[Item], t0: float, t1: float) -> list[Layer]:
        """Footsteps from `steps` (one surface) at a walking pace between t0 and t1."""
        pace = float(rng.uniform(0.42, 0.62))
        layers, t = [], t0
        while t < t1:
            s = steps[int(rng.integers(len(steps)))]
            layers.append(Layer(s.key, "event", at=round(t, 3), gain_db=round(float(rng.uniform(-3, 0)), 2),
                                role="event"))
            t += pace + float(rng.normal(0, 0.03))
        return layers

    def _surfaces(self, items):
        by = defaultdict(list)
        for it in items:
            by[self.groups[it.key]].append(it)
        return [by[k] for k in sorted(by)]

    def _walks(self, items, split):
        out = []
        for steps in self._surfaces(items):
            rng = rng_for(self.cfg.seed, "walk", split, steps[0].key)
            cat = self.cat(steps[0])
            surface = footstep_surface(steps[0].rel)
            for k in range(max(2, 2 * len(steps))):
                a = float(rng.uniform(0, 3))
                b = float(rng.uniform(max(a + 3, 6), CLIP_SECONDS - 0.5))
                out.append(_clip(split, "steps", event_caption(cat, 1, rng, surface), [cat.name],
                                 self._walk_layers(rng, steps, a, b)))
        return out

    def _scene_layers(self, rng, bed, chosen, ev_by):
        """The layers of a scene over ``bed`` with the event categories ``chosen`` (sources drawn
        from ``ev_by``), and the (category, count) of each for its caption."""
        layers = [Layer(bed.key, "crop" if bed.duration >= CLIP_SECONDS else "loop", role="bed",
                        start=round(float(rng.uniform(0, max(0.0, bed.duration - CLIP_SECONDS)))
                                    if bed.duration >= CLIP_SECONDS else float(rng.uniform(0, bed.duration)), 3),
                        gain_db=round(float(rng.uniform(-16, -8)), 2))]
        counts, placed = [], []
        budget = 4
        for i, c in enumerate(chosen):
            cat = BY_NAME[c]
            pick = ev_by[c][int(rng.integers(len(ev_by[c])))]
            if cat.steps:
                counts.append((cat, 1))
                placed.append(("steps", cat, pick))
                continue
            n = 1
            if cat.repeat:
                n = int(rng.integers(1, max(1, min(3, budget - (len(chosen) - 1 - i))) + 1))
                n = min(n, max(1, int(CLIP_SECONDS // (pick.duration + 0.5)) // len(chosen)))
            budget -= n
            counts.append((cat, n))
            placed.append(("event", cat, pick, n))
        # lay events out left to right: every occurrence gets its own slot
        seq = []
        for p in placed:
            if p[0] == "steps":
                seq.append(("steps", p[2], 4.0))
            else:
                seq += [("event", p[2], p[2].duration + 0.2)] * p[3]
        order = rng.permutation(len(seq))
        seq = [seq[i] for i in order]
        durs = [d for _, _, d in seq]
        if sum(durs) <= CLIP_SECONDS:
            ats = _slots(rng, len(seq), durs)
        else:                                   # too long to line up: let them overlap
            ats = [round(float(rng.uniform(0, max(0.0, CLIP_SECONDS - 0.6 * d))), 3) for d in durs]
        for (what, it, d), at in zip(seq, ats):
            g = round(float(rng.uniform(-6, 0)), 2)
            if what == "steps":
                steps = [s for s in ev_by[it.category] if self.groups[s.key] == self.groups[it.key]]
                layers += self._walk_layers(rng, steps, at, at + d)
            else:
                layers.append(Layer(it.key, "event", at=at, gain_db=g, role="event"))
        return layers, counts

    def _pooled(self, by_split_kind, pool, split, beds, stream: str = ""):
        """The clips built from the pooled sources of one split (``pool``: the split, or
        "supp:<split>" for the supplementary packages): packed speech, walks, and scenes of the
        pool's events over ``beds`` (plus the train split's extra and natural scenes), each from
        random streams named with ``stream``."""
        take = lambda kind: by_split_kind[(pool, kind)]   # noqa: E731
        clips = self._speech(take("speech"), split) + self._walks(take("steps"), split)
        events = take("event") + take("steps")
        clips += self._scenes(beds, events, split, stream=stream)
        if split == "train" and self.cfg.extra_train_scenes_per_event > 0:
            clips += self._scenes(beds, events, split, extra=True, stream=stream)
        if split == "train" and self.cfg.natural_scenes_per_event > 0:
            clips += self._natural_scenes(beds, events, split, stream=stream)
        if split == "train" and self.cfg.natural_fg_scenes_per_event > 0:
            clips += self._natural_scenes(beds, events, split, stream=stream, foreground_only=True)
        return clips

    def _natural_scenes(self, beds, events, split, stream: str = "", foreground_only: bool = False):
        """Scenes of an event over a bed it is naturally heard with (``Category.natural_beds``:
        thunder over rain or wind), captioned with both ("thunder rumbles while rain falls").
        ``natural_scenes_per_event`` of them for every event source whose category names such a
        bed present in the split; from their own random stream, so the rest of the plan (and every
        latent encoded from it) is unchanged. With ``foreground_only``: ``natural_fg_scenes_per_event``
        more from another stream, captioned with the event alone ("thunder rumbling" over rain),
        kind ``natural_fg`` (so that the trainer can weight them apart from the scene_fg scenes,
        whose beds are not the event's own)."""
        rng = rng_for(self.cfg.seed, stream + ("natural-fg-scenes" if foreground_only else "natural-scenes"), split)
        per_event = self.cfg.natural_fg_scenes_per_event if foreground_only else self.cfg.natural_scenes_per_event
        beds_by = _by_category(beds)
        out = []
        for ev in events:
            cat = BY_NAME[ev.category]
            names = [n for n in cat.natural_beds if n in beds_by]
            for _ in range(int(round(per_event)) if names else 0):
                bcat = BY_NAME[names[int(rng.integers(len(names)))]]
                bed = beds_by[bcat.name][int(rng.integers(len(beds_by[bcat.name])))]
                layers, counts = self._scene_layers(rng, bed, [cat.name], {cat.name: [ev]})
                if foreground_only:
                    caption, kind = event_caption(cat, counts[0][1], rng), "natural_fg"
                else:
                    caption, kind = scene_caption(counts, bcat, rng), "scene"
                out.append(_clip(split, kind, caption, [bcat.name, cat.name], layers))
        return out

    def _scenes(self, beds, events, split, extra: bool = False, stream: str = ""):
        if not beds or not events:
            return []
        rng = rng_for(self.cfg.seed, stream + ("extra-scenes" if extra else "scenes"), split)
        cap_rng = rng_for(self.cfg.seed, stream + "extra-scene-captions", split)    # only the extra ones draw here
        beds_by, ev_by = _by_category(beds), _by_category(events)
        bed_cats, ev_cats = sorted(beds_by), sorted(ev_by)
        per_event = self.cfg.extra_train_scenes_per_event if extra else self.cfg.scenes_per_event
        n_scenes = int(round(per_event * len(events)))
        out = []
        for _ in range(n_scenes):
            bcat = BY_NAME[self._pick_category(rng, bed_cats)[0]]
            bed = beds_by[bcat.name][int(rng.integers(len(beds_by[bcat.name])))]
            n_cats = 1 if (len(ev_cats) < 2 or rng.random() < 0.65) else 2
            chosen = self._pick_category(rng, ev_cats, n_cats)
            layers, counts = self._scene_layers(rng, bed, chosen, ev_by)
            caption = scene_caption(counts, bcat, rng)
            foreground_only = (extra and len(counts) == 1
                               and cap_rng.random() < self.cfg.extra_scene_event_only_captions)
            if foreground_only:
                caption = event_caption(counts[0][0], counts[0][1], cap_rng)
            clip = _clip(split, "scene", caption, [bcat.name] + chosen, layers)
            if foreground_only:
                # kind "scene_fg": a bed is heard that the caption does not name. The trainer can
                # weight these apart (--kind-weights scene_fg=…): they taught "thunder" a water bed
                # (session 9). Set after _clip so that the clip id (and its audio file) is unchanged.
                clip.kind = "scene_fg"
            out.append(clip)
        return out
