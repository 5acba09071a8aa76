"""Rendered material: General MIDI pieces through fluidsynth, and speech through espeak-ng/flite.

Every piece is described by a small spec drawn from a seeded generator, so the same seed gives
the same pieces, captions and ids; rendered files are cached and reused on a resumed build.
"""
from __future__ import annotations

import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import CLIP_SAMPLES, SR, load_mono, write_clip
from .captions import speech_caption
from .sources import BuildError, log, require_tool

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SEG_SECONDS = 13.0             # one piece every 13 s in a batch: 10.24 s of music + a tail gap
PIECE_SECONDS = CLIP_SAMPLES / SR


# ---- a tiny Standard MIDI File writer -----------------------------------------------------

TICKS_PER_SECOND = 960         # 480 ticks per quarter at the default 120 bpm


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def midi_bytes(events: list[tuple[float, bytes]]) -> bytes:
    """Format-0 MIDI file from (time in seconds, raw message) pairs (tempo fixed at 120 bpm)."""
    evs = sorted(((round(t * TICKS_PER_SECOND), i, m) for i, (t, m) in enumerate(events)))
    data, last = bytearray(), 0
    for tick, _, msg in evs:
        data += _vlq(tick - last) + msg
        last = tick
    data += _vlq(0) + b"\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
            + b"MTrk" + struct.pack(">I", len(data)) + bytes(data))


def note(t: float, dur: float, ch: int, pitch: int, vel: int) -> list[tuple[float, bytes]]:
    return [(t, bytes([0x90 | ch, pitch, vel])), (t + dur, bytes([0x80 | ch, pitch, 0]))]


# ---- instruments and pieces ---------------------------------------------------------------

@dataclass(frozen=True)
class Instrument:
    name: str
    program: int               # GM program (0-based); -1 = drum kit on channel 10
    phrase: str                # "a cello"
    low: int
    high: int
    sustained: bool            # bowed/blown: notes hold to the next one
    count: int                 # pieces to render
    eval_prompt: str = ""


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("piano", 0, "a piano", 45, 88, False, 170, "a piano playing"),
    Instrument("cello", 42, "a cello", 36, 69, True, 170, "a cello playing a slow melody"),
    Instrument("drums", -1, "a drum kit", 0, 0, False, 170, "a drum kit playing a beat"),
    Instrument("bells", 14, "tubular bells", 60, 77, False, 90, "a bell ringing"),
    Instrument("violin", 40, "a violin", 55, 91, True, 40, "a cello playing a slow melody"),
    Instrument("viola", 41, "a viola", 48, 81, True, 25),
    Instrument("double_bass", 43, "a double bass", 28, 55, True, 20),
    Instrument("strings", 48, "a string ensemble", 43, 84, True, 30),
    Instrument("harp", 46, "a harp", 40, 88, False, 25),
    Instrument("nylon_guitar", 24, "an acoustic guitar", 40, 76, False, 30),
    Instrument("electric_guitar", 27, "an electric guitar", 40, 79, False, 25),
    Instrument("electric_piano", 4, "an electric piano", 45, 84, False, 25, "a piano playing"),
    Instrument("organ", 19, "a church organ", 36, 84, True, 25),
    Instrument("accordion", 21, "an accordion", 53, 84, True, 20),
    Instrument("harmonica", 22, "a harmonica", 60, 84, True, 20),
    Instrument("flute", 73, "a flute", 60, 96, True, 30),
    Instrument("clarinet", 71, "a clarinet", 50, 86, True, 25),
    Instrument("oboe", 68, "an oboe", 58, 89, True, 20),
    Instrument("bassoon", 70, "a bassoon", 34, 70, True, 20),
    Instrument("trumpet", 56, "a trumpet", 55, 82, True, 25),
    Instrument("trombone", 57, "a trombone", 40, 72, True, 20),
    Instrument("french_horn", 60, "a french horn", 41, 77, True, 20),
    Instrument("saxophone", 65, "a saxophone", 49, 81, True, 25),
    Instrument("marimba", 12, "a marimba", 45, 84, False, 20),
    Instrument("xylophone", 13, "a xylophone", 60, 96, False, 20),
    Instrument("vibraphone", 11, "a vibraphone", 53, 89, False, 20),
    Instrument("music_box", 10, "a music box", 60, 96, False, 15),
    Instrument("banjo", 105, "a banjo", 48, 81, False, 15),
)
INSTRUMENT_BY_NAME = {i.name: i for i in INSTRUMENTS}

TEMPI = {"slow": (56, 78), "moderate": (84, 112), "fast": (126, 168)}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
          "dorian": (0, 2, 3, 5, 7, 9, 10), "pentatonic": (0, 2, 4, 7, 9)}
GROOVES = ("rock", "funk", "pop", "shuffle", "disco", "waltz", "half-time")


@dataclass(frozen=True)
class Piece:
    id: str
    instrument: str
    tempo: str                 # slow / moderate / fast
    bpm: int
    seed: int
    caption: str
    style: str = ""            # drum groove or scale


def melodic_caption(inst: Instrument, tempo: str, rng: np.random.Generator) -> str:
    p, n = inst.phrase, inst.phrase.split(" ", 1)[1]
    if inst.name == "bells":
        forms = {"slow": ["a bell ringing", "bells ringing slowly", "tubular bells chiming a slow tune"],
                 "moderate": ["a bell ringing", "bells chiming", "tubular bells playing a melody"],
                 "fast": ["bells ringing quickly", "chimes ringing a fast tune", "a bell ringing"]}[tempo]
    else:
        forms = {"slow": [f"{p} playing a slow melody", f"a slow {n} melody", f"{p} playing slowly",
                          f"{p} playing"],
                 "moderate": [f"{p} playing a melody", f"{p} playing", f"{p} playing at a moderate tempo"],
                 "fast": [f"{p} playing at a fast tempo", f"{p} playing a fast melody", f"a lively {n} tune",
                          f"{p} playing"]}[tempo]
    return str(rng.choice(forms))


def drum_caption(tempo: str, groove: str, rng: np.random.Generator) -> str:
    forms = ["a drum kit playing a beat", f"drums playing a {tempo} {groove} beat",
             f"a drummer playing a {groove} groove", f"a drum kit playing a {tempo} beat",
             "a drum beat"]
    return str(rng.choice(forms))


def piece_specs(seed: int, scale: float = 1.0) -> list[Piece]:
    """All MIDI pieces for a seed; `scale` multiplies every instrument's count (tests use 0.01)."""
    rng = np.random.default_rng([seed, 7001])
    out = []
    for inst in INSTRUMENTS:
        n = max(1, round(inst.count * scale))
        for k in range(n):
            # slow pieces are favoured for the cello, fast ones for drums
            weights = {"cello": (0.5, 0.3, 0.2), "drums": (0.2, 0.4, 0.4)}.get(inst.name, (0.34, 0.33, 0.33))
            tempo = str(rng.choice(list(TEMPI), p=weights))
            bpm = int(rng.integers(*TEMPI[tempo]))
            if inst.program < 0:
                style = str(rng.choice(GROOVES))
                cap = drum_caption(tempo, style, rng)
            else:
                style = str(rng.choice(list(SCALES)))
                cap = melodic_caption(inst, tempo, rng)
            out.append(Piece(f"gm-{inst.name}-{k:04d}", inst.name, tempo, bpm,
                             int(rng.integers(2**31)), cap, style))
    return out


def melody_events(p: Piece, t0: float) -> list[tuple[float, bytes]]:
    inst = INSTRUMENT_BY_NAME[p.instrument]
    rng = np.random.default_rng(p.seed)
    beat = 60.0 / p.bpm
    ch = 0
    ev = [(t0, bytes([0xC0 | ch, inst.program])), (t0, bytes([0xB0 | ch, 7, 110]))]
    scale = SCALES[p.style]
    root = int(rng.integers(inst.low, max(inst.low + 1, inst.high - 12)))
    pitches = [root + 12 * o + s for o in range(-2, 4) for s in scale]
    pitches = [x for x in pitches if inst.low <= x <= inst.high]
    durs = {"slow": ([1, 2, 1.5, 4], [0.4, 0.3, 0.15, 0.15]),
            "moderate": ([0.5, 1, 2], [0.35, 0.45, 0.2]),
            "fast": ([0.25, 0.5, 1], [0.35, 0.45, 0.2])}[p.tempo]
    idx = int(rng.integers(len(pitches)))
    t, end = t0 + float(rng.uniform(0, 0.3)), t0 + PIECE_SECONDS + 0.5
    chords = inst.name in ("piano", "electric_piano", "harp", "nylon_guitar", "organ", "strings") and rng.random() < 0.6
    bar = 4 * beat
    while t < end:
        d = float(rng.choice(durs[0], p=durs[1])) * beat
        idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]), 0, len(pitches) - 1))
        vel = int(np.clip(rng.normal(85, 12), 45, 120))
        hold = d * (0.98 if inst.sustained else 0.9)
        ev += note(t, hold, ch, pitches[idx], vel)
        t += d
    if chords:                     # a left hand / accompaniment: root and fifth on each bar
        t = t0
        while t < end:
            base = root - 12 + int(rng.choice([0, 5, 7, 9 if p.style == "major" else 8]))
            for iv in (0, 7, 12):
                if base + iv >= 24:
                    ev += note(t, bar * 0.95, 1, base + iv, int(rng.integers(50, 75)))
            t += bar
        ev.insert(0, (t0, bytes([0xC1, inst.program])))
    return ev


DRUM = {"kick": 36, "snare": 38, "hat": 42, "open_hat": 46, "ride": 51, "crash": 49, "tom_hi": 50,
        "tom_mid": 47, "tom_lo": 45, "clap": 39}


def drum_events(p: Piece, t0: float) -> list[tuple[float, bytes]]:
    rng = np.random.default_rng(p.seed)
    beat = 60.0 / p.bpm
    ch = 9
    ev = [(t0, bytes([0xB0 | ch, 7, 115]))]
    beats_per_bar = 3 if p.style == "waltz" else 4
    sub = 4 if p.style == "funk" else 2                        # hat subdivisions per beat
    hat = DRUM["ride"] if rng.random() < 0.25 else DRUM["hat"]
    t, bar_i, end = t0, 0, t0 + PIECE_SECONDS + 0.5
    kick_extra = rng.random(8) < 0.3
    while t < end:
        fill = bar_i % 4 == 3 and rng.random() < 0.6
        for b in range(beats_per_bar):
            tb = t + b * beat
            for s in range(sub):
                ts = tb + s * beat / sub
                if p.style == "shuffle" and s == 1:
                    ts = tb + beat * 2 / 3
                if not (fill and b >= beats_per_bar - 1):
                    ev += note(ts, 0.05, ch, hat, int(np.clip(rng.normal(70 if s else 90, 8), 30, 127)))
            if p.style == "waltz":
                kick, snare = b == 0, b > 0
            elif p.style == "half-time":
                kick, snare = b == 0, b == 2
            elif p.style == "disco":
                kick, snare = True, b % 2 == 1
            else:
                kick, snare = b % 2 == 0, b % 2 == 1
            if kick:
                ev += note(tb, 0.1, ch, DRUM["kick"], int(rng.integers(95, 120)))
            if kick_extra[(bar_i * beats_per_bar + b) % 8] and p.style in ("rock", "funk", "pop"):
                ev += note(tb + beat / 2, 0.1, ch, DRUM["kick"], int(rng.integers(80, 105)))
            if snare:
                ev += note(tb, 0.1, ch, DRUM["snare"], int(rng.integers(90, 120)))
        if fill:
            tb = t + (beats_per_bar - 1) * beat
            for k, tom in enumerate(("tom_hi", "tom_mid", "tom_lo", "snare")):
                ev += note(tb + k * beat / 4, 0.1, ch, DRUM[tom], int(rng.integers(90, 120)))
        if bar_i % 4 == 0 and rng.random() < 0.5:
            ev += note(t, 0.1, ch, DRUM["crash"], int(rng.integers(90, 115)))
        t += beats_per_bar * beat
        bar_i += 1
    return ev


def batch_midi(pieces: list[Piece]) -> bytes:
    events: list[tuple[float, bytes]] = []
    for k, p in enumerate(pieces):
        t0 = k * SEG_SECONDS
        evs = drum_events(p, t0) if INSTRUMENT_BY_NAME[p.instrument].program < 0 else melody_events(p, t0)
        end = t0 + PIECE_SECONDS + 0.6
        events += [(t, m) for t, m in evs if t <= end]
        for ch in range(16):     # all notes off, then all sound off before the next piece
            events.append((end, bytes([0xB0 | ch, 123, 0])))
            events.append((t0 + SEG_SECONDS - 0.3, bytes([0xB0 | ch, 120, 0])))
    return midi_bytes(events)


def render_midi(pieces: list[Piece], out_dir: Path, batch: int = 40, install_tools: bool = True) -> None:
    """Render pieces missing from out_dir (one <id>.wav each, 16 kHz mono, 10.24 s)."""
    todo = [p for p in pieces if not (out_dir / f"{p.id}.wav").exists()]
    if not todo:
        return
    require_tool("fluidsynth", "fluidsynth", install_tools)
    if not SOUNDFONT.exists():
        if not install_tools:
            raise BuildError(f"missing soundfont {SOUNDFONT}: run 'apt-get install fluid-soundfont-gm'")
        require_tool("apt-get", "apt", False)
        from .sources import run
        log("[tools] soundfont missing: apt-get install -y fluid-soundfont-gm")
        run(["apt-get", "install", "-y", "fluid-soundfont-gm"], env_extra={"DEBIAN_FRONTEND": "noninteractive"})
    out_dir.mkdir(parents=True, exist_ok=True)
    for b in range(0, len(todo), batch):
        chunk = todo[b: b + batch]
        log(f"[render] fluidsynth: pieces {b + 1}-{b + len(chunk)} of {len(todo)}")
        with tempfile.TemporaryDirectory() as td:
            mid, wav = Path(td) / "batch.mid", Path(td) / "batch.wav"
            mid.write_bytes(batch_midi(chunk))
            r = subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", str(wav),
                                str(SOUNDFONT), str(mid)], capture_output=True, text=True)
            if r.returncode != 0 or not wav.exists():
                raise BuildError(f"fluidsynth failed: {(r.stderr or r.stdout).strip()[-200:]}")
            x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if sr != SR:
                raise BuildError(f"fluidsynth wrote {sr} Hz, expected {SR}")
            for k, p in enumerate(chunk):
                a = int(k * SEG_SECONDS * SR)
                seg = np.zeros(CLIP_SAMPLES, dtype=np.float32)
                part = x[a: a + CLIP_SAMPLES]
                seg[: len(part)] = part
                write_clip(out_dir / f"{p.id}.wav", seg)


# ---- speech synthesis -------------------------------------------------------------------------

ESPEAK_MALE = ("Adam", "Alex", "Andy", "Benjamin", "Caleb", "David", "Ed", "Edward", "Gene", "John",
               "Lee", "Max", "Michael", "Mike", "Paul", "Rob", "Robert", "Storm", "Zac", "grandpa",
               "male1", "male2", "male3", "male4", "male5", "male6", "male7", "male8", "norbert",
               "travis", "victor")
ESPEAK_FEMALE = ("Alicia", "Andrea", "Annie", "Auntie", "Belinda", "Linda", "Steph", "anika",
                 "female1", "female2", "female3", "female4", "female5", "grandma")
FLITE_MALE = ("kal16", "awb", "rms", "kal")
FLITE_FEMALE = ("slt",)

_SUBJ = ("the old man", "my neighbour", "the teacher", "a young girl", "the farmer", "our team",
         "the driver", "the small dog", "the city council", "the children", "my brother", "the pilot",
         "a tall stranger", "the baker", "the doctor", "everyone in town", "the captain", "my aunt")
_VERB = ("walked to", "looked at", "talked about", "painted", "cleaned", "visited", "repaired",
         "forgot about", "waited near", "ran past", "photographed", "described", "built", "opened")
_OBJ = ("the red barn", "a broken window", "the quiet library", "an old bicycle", "the train station",
        "the river bank", "a wooden boat", "the market square", "the garden gate", "a tall lighthouse",
        "the kitchen table", "the mountain road", "a letter from home", "the new bridge")
_TIME = ("this morning", "yesterday afternoon", "last winter", "after the storm", "before dinner",
         "on Sunday", "every evening", "during the summer", "late at night", "at sunrise")
_EXTRA = ("Please remember to close the door when you leave.", "The weather should be better tomorrow.",
          "I think we should start again from the beginning.", "Thank you for calling, we will be right with you.",
          "Turn left at the next corner and keep going.", "The meeting has been moved to Thursday.",
          "Nobody expected the results to be so good.", "Could you read the last sentence once more?",
          "The museum opens at nine and closes at five.", "We counted forty two birds near the lake.",
          "It takes about ten minutes to walk there.", "Let me tell you a short story.")


def tts_text(rng: np.random.Generator, words: int = 24) -> str:
    out, n = [], 0
    while n < words:
        if rng.random() < 0.3:
            s = str(rng.choice(_EXTRA))
        else:
            s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)} {rng.choice(_TIME)}."
            s = s[0].upper() + s[1:]
        out.append(s)
        n += len(s.split())
    return " ".join(out)


@dataclass(frozen=True)
class Utterance:
    id: str
    engine: str                # espeak-ng or flite
    voice: str
    gender: str                # male / female
    rate: int                  # espeak words per minute, or flite duration stretch x100
    pitch: int                 # espeak pitch 0-99 (unused by flite)
    text: str
    caption: str


def utterance_specs(seed: int, n_male: int = 420, n_female: int = 160) -> list[Utterance]:
    rng = np.random.default_rng([seed, 7002])
    out = []
    for gender, n in (("male", n_male), ("female", n_female)):
        for k in range(n):
            if rng.random() < 0.35:
                engine = "flite"
                voice = str(rng.choice(FLITE_MALE if gender == "male" else FLITE_FEMALE))
                rate, pitch = int(rng.integers(85, 120)), 0
            else:
                engine = "espeak-ng"
                accent = str(rng.choice(["en-us", "en", "en-gb-scotland", "en-gb-x-rp"]))
                voice = f"{accent}+{rng.choice(ESPEAK_MALE if gender == 'male' else ESPEAK_FEMALE)}"
                rate = int(rng.integers(130, 185))
                pitch = int(rng.integers(25, 55) if gender == "male" else rng.integers(45, 75))
            text = tts_text(rng)
            cap = speech_caption(gender, "English", rng)
            out.append(Utterance(f"tts-{gender}-{k:04d}", engine, voice, gender, rate, pitch, text, cap))
    return out


def render_speech(utts: list[Utterance], out_dir: Path, install_tools: bool = True) -> None:
    todo = [u for u in utts if not (out_dir / f"{u.id}.wav").exists()]
    if not todo:
        return
    if any(u.engine == "espeak-ng" for u in todo):
        require_tool("espeak-ng", "espeak-ng", install_tools)
    if any(u.engine == "flite" for u in todo):
        require_tool("flite", "flite", install_tools)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"[render] speech: {len(todo)} utterances")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "u.wav"
        for u in todo:
            if u.engine == "flite":
                cmd = ["flite", "-voice", u.voice, "--setf", f"duration_stretch={u.rate / 100:.2f}",
                       "-t", u.text, "-o", str(tmp)]
            else:
                cmd = ["espeak-ng", "-v", u.voice, "-s", str(u.rate), "-p", str(u.pitch), "-w", str(tmp), u.text]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0 or not tmp.exists():
                raise BuildError(f"{u.engine} failed on voice {u.voice}: {(r.stderr or '').strip()[-160:]}")
            x = load_mono(tmp)[:CLIP_SAMPLES]
            write_clip(out_dir / f"{u.id}.wav", x)
            tmp.unlink()
