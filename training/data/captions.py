"""Hand-written caption table: file and folder names -> honest caption phrases.

Every source file is matched (lower-cased path relative to its package root, first matching
row wins) against ``TABLE``. A row names a *category* with a kind:

- ``event``    a short sound: stands alone in a clip, or is mixed over a bed in a scene
- ``bed``      an ambience: cropped or looped, and used as the background of scenes
- ``music``    music: cropped (or looped when it is a loop sample)
- ``speech``   a voice: short utterances of one speaker are packed into a clip

Files that match no row are kept for unconditional pre-training with an empty caption.
Rows only name what the file name really says; where a name is vague (``day.ogg``,
``primary.ogg``) the caption stays vague or the file stays uncaptioned.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

KINDS = ("event", "bed", "music", "speech")


@dataclass(frozen=True)
class Category:
    name: str
    kind: str
    patterns: tuple[str, ...]
    phrases: tuple[str, ...]            # stand-alone captions
    subject: str = ""                   # event: "a dog"      bed: "rain"
    verb: str = ""                      # event: "barks"      bed: "falls"
    gerund: str = ""                    # event: "barking"    bed: "falling"
    repeat: bool = True                 # event may occur several times in one clip
    steps: bool = False                 # event is one footstep: clips are walking sequences
    eval_prompt: str = ""               # evaluation prompt this category serves
    speaker: str = ""                   # speech: "female", "male", "pitch" (estimate), "voice"
    natural_beds: tuple[str, ...] = ()  # event: beds it is naturally heard over (natural scenes)
    _compiled: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"category {self.name}: unknown kind {self.kind!r}")
        object.__setattr__(self, "_compiled", tuple(re.compile(p) for p in self.patterns))

    def matches(self, path: str) -> bool:
        return any(p.search(path) for p in self._compiled)


def _ev(name, patterns, subject, verb, gerund, phrases=(), eval_prompt="", repeat=True, natural_beds=()):
    """An event row; the stand-alone phrases always include '<subject> <gerund>'."""
    base = (f"{subject} {gerund}", f"{subject} {verb}")
    return Category(name, "event", tuple(patterns), tuple(dict.fromkeys(base + tuple(phrases))),
                    subject=subject, verb=verb, gerund=gerund, repeat=repeat,
                    eval_prompt=eval_prompt, natural_beds=tuple(natural_beds))


def _bed(name, patterns, subject, verb, gerund, phrases=(), eval_prompt=""):
    base = (f"{subject} {gerund}",)
    return Category(name, "bed", tuple(patterns), tuple(dict.fromkeys(base + tuple(phrases))),
                    subject=subject, verb=verb, gerund=gerund, eval_prompt=eval_prompt)


MG = r"megaglest/.*"
RE = r"redeclipse/data/"
STK = r"supertuxkart/data/"
TUX = r"tuxpaint/stamps/"
WL = r"widelands/data/"
MT = r"minetest/games/.*"
HW = r"hedgewars/data/"
SP = r"sonic-pi/samples/"

# Order matters: the first row that matches wins (animals before unit voices, and so on).
TABLE: tuple[Category, ...] = (
    # tuxpaint's spoken stamp descriptions (<stamp>_desc_<lang>.ogg) come first: their names
    # also contain the stamp's subject ("scissors_small_open_desc_fr.ogg").
    Category("speech_tuxpaint", "speech", (TUX + r".*_desc(_[a-z]+)?\.\w+$",),
             ("a person speaking",), speaker="pitch", eval_prompt="a man speaking"),
    # --- weather -------------------------------------------------------------------------
    _ev("thunder", [STK + r"sfx/thunder\.", TUX + r"naturalforces/lightningbolt\.",
                    RE + r"sounds/ambience/morph/stormbolts\.",
                    # supplementary packages (sources.SUPPLEMENTARY: only these files are unpacked)
                    r"flightgear/sounds/thunder\d*\.", r"scorched3d/data/globalmods/none/data/wav/misc/thunder[23]\.",
                    r"scorched3d/data/globalmods/apoc/data/wav/explosions/(lightningbolt|thunder)\.",
                    r"searchandrescue/sounds/thunder_moderate\.", r"supertux2/sounds/(thunder|lightning)\.",
                    r"games/7kaa/sound/thunder\.", r"cube2/packages/sounds/0ad/thunder_\d+\.",
                    r"gl-117/sounds/thunder\d*\.", r"pachi/sounds/storm\."],
        "thunder", "rumbles", "rumbling",
        ["thunder", "a clap of thunder", "thunder rumbling in the distance",
         "a thunderstorm with loud thunder"], eval_prompt="thunder", natural_beds=("rain", "wind")),
    _bed("rain", [MG + r"tilesets/[^/]+/sounds/rain\.", RE + r"sounds/ambience/morph/(storm)?rain\.",
                  STK + r"sfx/rain\.", r"flightgear/sounds/rain\.",
                  r"scorched3d/data/globalmods/none/data/wav/misc/rain\."],
         "rain", "falls", "falling",
         ["rain falling", "steady rain pouring down", "the sound of heavy rain", "rain pattering",
          "rainfall", "rain coming down hard"], eval_prompt="rain falling on a roof"),
    _bed("wind", [RE + r"sounds/ambience/(morph/)?(storm)?wind\d*\.",
                  RE + r"sounds/ambience/(blow|hollow|waste)wind\.",
                  MG + r"tilesets/[^/]+/sounds/wind\."],
         "wind", "blows", "blowing",
         ["strong wind blowing", "wind howling", "a gusty wind", "wind whistling",
          "the wind blowing hard"], eval_prompt="strong wind blowing"),
    # --- water -----------------------------------------------------------------------------
    _bed("stream", [RE + r"sounds/ambience/(creek|river|water)\.", STK + r"sfx/river_loop\.",
                    MT + r"minetest_game/mods/env_sounds/sounds/env_sounds_water\."],
         "a stream", "flows", "flowing",
         ["a stream of water flowing", "a babbling brook", "a creek trickling",
          "water flowing in a river", "running water"], eval_prompt="a stream of water flowing"),
    _bed("waterfall", [RE + r"sounds/ambience/waterfall", STK + r"sfx/waterfall_loop"],
         "a waterfall", "roars", "roaring",
         ["water rushing down a waterfall", "the roar of a waterfall", "rushing water"],
         eval_prompt="a stream of water flowing"),
    _ev("drip", [RE + r"sounds/ambience/cavedrip\.", HW + r"sounds/droplet\d"],
        "water", "drips", "dripping", ["water drops dripping", "water dripping in a cave"]),
    _ev("splash", [RE + r"sounds/sfx/(splashin|splosh)\d*\.", STK + r"sfx/splash\.",
                   HW + r"sounds/splash\."],
        "something", "splashes into water", "splashing into water",
        ["a splash of water", "something splashes into water"]),
    # --- fire, explosions ------------------------------------------------------------------
    _bed("fire", [RE + r"sounds/ambience/fire\.", RE + r"sounds/sfx/(burnfire|burning)\.",
                  MT + r"minetest_game/mods/fire/sounds/fire_(fire|large|small)",
                  MG + r"wicker_behemoth/sounds/wicker_fire\."],
         "a fire", "crackles", "crackling",
         ["a fire crackling", "flames crackling and popping", "a campfire burning",
          "the crackle of a burning fire"], eval_prompt="a fire crackling"),
    _ev("explosion", [RE + r"sounds/weapons/(\w+/)?explode\d*\.", HW + r"sounds/explosion\.",
                      STK + r"sfx/explosion\.", MT + r"tnt/sounds/tnt_explode\.",
                      SP + r"misc_cineboom\."],
        "an explosion", "booms", "booming",
        ["an explosion", "a loud explosion", "a bomb exploding", "a blast going off",
         "an explosion goes off"], eval_prompt="an explosion"),
    _ev("fireworks", [TUX + r"seasonal/newyears/fireworks\.", STK + r"sfx/fireworks_show\."],
        "fireworks", "bang", "going off", ["fireworks exploding", "fireworks popping in the sky"]),
    _ev("gunshot", [HW + r"sounds/shotgunfire\.", RE + r"sounds/weapons/(pistol|rifle|shotgun|smg)/primary\d*\."],
        "a gun", "fires", "firing", ["a gunshot", "a gun being fired", "gunfire"]),
    _ev("reload", [HW + r"sounds/(shotgun|sniper)reload\."],
        "a gun", "is reloaded", "being reloaded", ["a gun being reloaded"], repeat=False),
    # --- vehicles, machines ----------------------------------------------------------------
    _ev("engine", [STK + r"sfx/(engine_(large|small)|car_(accel|revup))\."],
        "a car engine", "runs", "running",
        ["a car engine running", "an engine revving", "a motor running", "a car engine idling",
         "the sound of a running engine"], eval_prompt="a car engine running"),
    _bed("traffic", [RE + r"sounds/ambience/distant_cars\."],
         "traffic", "passes", "passing by",
         ["cars passing by in the distance", "distant traffic"], eval_prompt="a car engine running"),
    _ev("jet", [STK + r"sfx/airplane_jetengine\."], "a jet engine", "roars", "roaring",
        ["an airplane jet engine roaring"]),
    _ev("train", [STK + r"(library|tracks)/.*steamlocomotive\."], "a steam locomotive", "chugs",
        "chugging", ["a steam train chugging along"]),
    _ev("horn", [STK + r"sfx/horn\."], "a horn", "honks", "honking", ["a horn honking"]),
    _ev("vacuum", [TUX + r"household/vacuum_cleaner\."], "a vacuum cleaner", "runs", "running", ()),
    _ev("washing_machine", [TUX + r"household/washing-machine\."], "a washing machine", "runs",
        "running", ()),
    _ev("toilet", [TUX + r"household/toilet\."], "a toilet", "flushes", "flushing", (), repeat=False),
    _ev("saw", [WL + r"sound/atlanteans/saw/(sawing|benchsaw)", TUX + r"household/tools/saw\.",
                WL + r"sound/sawmill/sawmill"],
        "a saw", "cuts wood", "cutting wood", ["someone sawing wood"]),
    _ev("chopping", [WL + r"sound/woodcutting/(fast_)?woodcutting"],
        "an axe", "chops wood", "chopping wood", ["someone chopping wood with an axe"]),
    _ev("tree_fall", [WL + r"sound/woodcutting/tree_falling"], "a tree", "falls", "falling",
        ["a tree crashing to the ground"], repeat=False),
    _ev("hammer", [WL + r"sound/hammering/", WL + r"sound/smiths/(smith|toolsmith)",
                   TUX + r"household/tools/(hammer|mallet_metal)\."],
        "a hammer", "strikes", "striking", ["hammering", "someone hammering", "a hammer hitting metal"]),
    _ev("anvil", [MG + r"commondata/sounds/anvil\d", STK + r"sfx/anvil\."],
        "a hammer", "strikes an anvil", "striking an anvil", ["a blacksmith hammering on an anvil"]),
    _ev("glass", [MT + r"default/sounds/default_break_glass"], "glass", "shatters", "shattering",
        ["glass breaking", "a window shattering"], repeat=False),
    _ev("door", [MT + r"doors/sounds/doors_(door|steel_door|glass_door|fencegate)_(open|close)",
                 MT + r"default/sounds/default_chest_(open|close)"],
        "a door", "creaks", "opening and closing", ["a door opening", "a door closing"]),
    _ev("camera", [TUX + r"hobbies/camera_35mm\.", HW + r"sounds/shutterclick\."],
        "a camera shutter", "clicks", "clicking", ["a camera taking a picture"]),
    _ev("scissors", [TUX + r"household/arttools/scissors"], "scissors", "snip", "snipping", ()),
    _ev("whip", [HW + r"sounds/whipcrack\."], "a whip", "cracks", "cracking", ()),
    _ev("squeak_toy", [TUX + r"household/rubberduck\.", HW + r"sounds/rubberduck_die\."],
        "a rubber duck", "squeaks", "squeaking", ["a squeaky toy"]),
    _ev("clock", [STK + r"sfx/clock\."], "a clock", "ticks", "ticking", ()),
    _bed("static", [STK + r"sfx/static-radio\."], "radio static", "hisses", "hissing",
         ["the hiss of radio static", "white noise from a radio"]),
    _bed("lava", [RE + r"sounds/ambience/lava\d", MT + r"env_sounds/sounds/env_sounds_lava\."],
         "lava", "bubbles", "bubbling", ["molten lava bubbling"]),
    _bed("rumble", [RE + r"sounds/ambience/lavarumble"], "a deep rumble", "rolls", "rolling",
         ["a low rumbling sound"]),
    _bed("underwater", [RE + r"sounds/sfx/underwater\."], "underwater sound", "gurgles", "gurgling",
         ["the muffled sound of being underwater"]),
    # --- footsteps (each file is a single step: clips become walking sequences) -------------
    Category("footsteps", "event",
             (MT + r"default/sounds/default_\w+_footstep", RE + r"sounds/player/(footstep|concstep)\d*\.",
              HW + r"sounds/steps\."),
             ("footsteps", "someone walking", "footsteps of a person walking", "a person walking"),
             subject="footsteps", verb="sound", gerund="walking", steps=True,
             eval_prompt="footsteps"),
    # --- bells and drums (real samples) -----------------------------------------------------
    _ev("bell", [SP + r"perc_bell\d*\."], "a bell", "rings", "ringing",
        ["a bell ringing", "a bell chiming", "the ring of a bell"], eval_prompt="a bell ringing"),
    _ev("cymbal", [TUX + r"hobbies/music/percussion/cymbal_crash\.", SP + r"drum_(cymbal|splash)_"],
        "a cymbal", "crashes", "crashing", ["a cymbal crash", "a cymbal being struck"],
        eval_prompt="a drum kit playing a beat"),
    _ev("drum_hit", [TUX + r"hobbies/music/percussion/drum_tomtom_floor\.", SP + r"drum_(tom|snare|bass|heavy_kick)",
                     SP + r"(sn|bd)_(dolf|dub|generic|zome|808|ada|boom|fat|gas|haus|klub|mehackit|pure|sone|tek|zum)\."],
        "a drum", "is hit", "being hit", ["a drum hit", "a single drum beat", "someone striking a drum"],
        eval_prompt="a drum kit playing a beat"),
    _ev("drum_roll", [SP + r"drum_roll\."], "a drum", "rolls", "rolling", ["a drum roll"], repeat=False),
    _ev("tabla", [SP + r"tabla_"], "a tabla", "is struck", "being struck", ["a tabla drum hit"]),
    # --- animals -----------------------------------------------------------------------------
    _ev("dog", [TUX + r"animals/mammals/dogs/dog\."], "a dog", "barks", "barking",
        ["a dog barking", "a dog barks", "barking of a dog", "a dog barking loudly"],
        eval_prompt="a dog barking"),
    _ev("rooster", [MG + r"tilesets/[^/]+/sounds/rooster\.", TUX + r"animals/birds/rooster\."],
        "a rooster", "crows", "crowing", ["a rooster crowing", "a cock crowing in the morning",
                                          "a cock-a-doodle-doo"], eval_prompt="a rooster crowing"),
    _ev("chicken", [MG + r"tilesets/[^/]+/sounds/chicken\.", TUX + r"animals/birds/hen\.",
                    MG + r"units/chicken/sounds/chicken_(ack|select|standing)"],
        "a chicken", "clucks", "clucking", ["chickens clucking", "a hen clucking"],
        eval_prompt="a rooster crowing"),
    _ev("cow", [TUX + r"animals/mammals/bovines/(cow|cow_white|bull)\.", STK + r"tracks/black_forest/cow\.",
                MG + r"tilesets/[^/]+/sounds/mudchute_cow", MG + r"commondata/sounds/cow_(ack|select)",
                MG + r"units/bull/sounds/bull_(ack|select)", WL + r"sound/farm/ox_"],
        "a cow", "moos", "mooing", ["a cow mooing", "cattle mooing", "a cow lowing", "the moo of a cow"],
        eval_prompt="a cow mooing"),
    _ev("owl", [MG + r"tilesets/[^/]+/sounds/owl\.", TUX + r"animals/birds/owl\."],
        "an owl", "hoots", "hooting", ["an owl hooting", "an owl hooting at night", "the hoot of an owl"],
        eval_prompt="an owl hooting"),
    _ev("crow", [TUX + r"animals/birds/crow\.", SP + r"misc_crow\."], "a crow", "caws", "cawing",
        ["a crow cawing"], eval_prompt="birds singing"),
    _ev("duck", [TUX + r"animals/birds/(duck|drake)\.", WL + r"world/critters/duck/"],
        "a duck", "quacks", "quacking", ["ducks quacking"]),
    _ev("goose", [TUX + r"animals/birds/gander\."], "a goose", "honks", "honking", ()),
    _ev("turkey", [TUX + r"animals/birds/turkey\."], "a turkey", "gobbles", "gobbling", ()),
    _ev("seagull", [TUX + r"animals/birds/seagull\."], "a seagull", "cries", "crying",
        ["seagulls calling"], eval_prompt="birds singing"),
    _ev("cuckoo", [TUX + r"animals/birds/cuckoo\."], "a cuckoo", "calls", "calling",
        ["a cuckoo bird calling"], eval_prompt="birds singing"),
    _ev("hawk", [MG + r"tilesets/[^/]+/sounds/hawk\."], "a hawk", "screeches", "screeching", ()),
    _ev("bird", [WL + r"sound/animals/bird\d", TUX + r"animals/birds/(blackbird|lark|quetzal|tucan|nandou|vulture|heron\w*)\."],
        "a bird", "sings", "singing",
        ["birds singing", "a bird chirping", "birds chirping and tweeting", "a songbird singing",
         "birdsong"], eval_prompt="birds singing"),
    _bed("birds_bed", [STK + r"sfx/exotic-birds", RE + r"sounds/ambience/forest\d\."],
         "birds", "sing", "singing",
         ["birds singing in a forest", "many birds chirping", "tropical birds calling",
          "a forest full of birdsong"], eval_prompt="birds singing"),
    _bed("crickets", [RE + r"sounds/ambience/nightcrickets\.", WL + r"sound/animals/crickets\d"],
         "crickets", "chirp", "chirping", ["crickets chirping at night", "the chirping of crickets"]),
    _bed("cicadas", [RE + r"sounds/ambience/cycadas\."], "cicadas", "buzz", "buzzing",
         ["cicadas buzzing loudly"]),
    _ev("wolf", [MG + r"tilesets/[^/]+/sounds/wolf\.", WL + r"sound/animals/wolf_"],
        "a wolf", "howls", "howling", ["a wolf howling", "wolves howling"]),
    _ev("coyote", [WL + r"sound/animals/coyote_"], "a coyote", "howls", "howling", ()),
    _ev("sheep", [TUX + r"animals/mammals/bovines/(sheep|sheep_lamb)\.", MG + r"units/sheep/sounds/sheep\d",
                  WL + r"sound/farm/sheep_", STK + r"tracks/scotland/sheep\."],
        "a sheep", "bleats", "bleating", ["sheep bleating", "a lamb bleating"]),
    _ev("goat", [TUX + r"animals/mammals/bovines/(goat|mountaingoat)\."], "a goat", "bleats", "bleating", ()),
    _ev("horse", [TUX + r"animals/mammals/equines/horse\.", WL + r"sound/farm/horse_"],
        "a horse", "neighs", "neighing", ["a horse whinnying"]),
    _ev("donkey", [TUX + r"animals/mammals/equines/donkey\.", WL + r"sound/farm/donkey\."],
        "a donkey", "brays", "braying", ()),
    _ev("pig", [TUX + r"animals/mammals/pig(_golden\d?)?\.", MG + r"commondata/sounds/pig_(ack|select)"],
        "a pig", "oinks", "oinking", ["a pig grunting"]),
    _ev("boar", [WL + r"sound/animals/boar\."], "a boar", "grunts", "grunting", ()),
    _ev("elephant", [TUX + r"animals/mammals/elephant\.", MG + r"units/elephant/sounds/ele\d"],
        "an elephant", "trumpets", "trumpeting", ()),
    _ev("lion", [TUX + r"animals/mammals/cats/(lion|tiger)\."], "a big cat", "roars", "roaring",
        ["a lion roaring"]),
    _ev("bear", [TUX + r"animals/mammals/bears/bear\."], "a bear", "growls", "growling", ()),
    _ev("cat", [TUX + r"seasonal/halloween/blackcat\."], "a cat", "meows", "meowing", ()),
    _ev("frog", [TUX + r"animals/amphibians/frog\.", WL + r"sound/animals/frog\."],
        "a frog", "croaks", "croaking", ["frogs croaking"]),
    _ev("bee", [TUX + r"animals/insects/(bee|hornet)\.", MG + r"units/beehive/sounds/bee\d",
                HW + r"sounds/bee\."],
        "a bee", "buzzes", "buzzing", ["bees buzzing", "an insect buzzing"]),
    _ev("mosquito", [TUX + r"animals/insects/mosquito\."], "a mosquito", "buzzes", "buzzing", ()),
    _ev("deer", [WL + r"sound/animals/(stag|moose)_", TUX + r"animals/mammals/deer/(deer|caribou)\."],
        "a deer", "bellows", "bellowing", ["a stag calling"]),
    _ev("chimp", [TUX + r"animals/mammals/apes/chimp\."], "a chimpanzee", "screeches", "screeching", ()),
    _ev("sea_lion", [TUX + r"animals/mammals/aquatic/sea_lion\."], "a sea lion", "barks", "barking", ()),
    _ev("whale", [TUX + r"animals/mammals/aquatic/(whale|orca)\."], "a whale", "calls", "calling",
        ["whale song"]),
    _ev("dolphin", [TUX + r"animals/mammals/aquatic/dolphin\."], "a dolphin", "clicks", "clicking",
        ["a dolphin chattering"]),
    _ev("mouse", [TUX + r"animals/mammals/rodents/mouse\."], "a mouse", "squeaks", "squeaking", ()),
    # --- human non-speech --------------------------------------------------------------------
    _ev("scream", [STK + r"sfx/wilhelmscream\."], "a man", "screams", "screaming", (), repeat=False),
    _ev("burp", [SP + r"misc_burp\."], "a person", "burps", "burping", ()),
    _ev("snap", [SP + r"perc_snap\d*\."], "fingers", "snap", "snapping", ["a finger snap"]),
    _ev("applause_like_vinyl", [SP + r"vinyl_scratch\."], "a record", "scratches", "scratching",
        ["a DJ scratching a vinyl record"]),
    # --- musical instruments (real samples) -----------------------------------------------
    Category("cello_sample", "music", (TUX + r"hobbies/music/string/cello\.",),
             ("a cello playing", "a cello", "the sound of a cello"), eval_prompt="a cello playing a slow melody"),
    Category("violin_sample", "music", (TUX + r"hobbies/music/string/violin\.",),
             ("a violin playing", "a fiddle playing"), eval_prompt="a cello playing a slow melody"),
    Category("bassoon_sample", "music", (TUX + r"hobbies/music/wind/bassoon\.",),
             ("a bassoon playing",)),
    Category("drumkit_sample", "music", (TUX + r"hobbies/music/percussion/drumkit\.",),
             ("a drum kit playing", "drums playing a beat"), eval_prompt="a drum kit playing a beat"),
    Category("drum_loop", "music", (SP + r"loop_(amen|amen_full|breakbeat)\.",),
             ("a drum kit playing a beat", "a breakbeat drum loop", "drums playing a fast breakbeat",
              "a drummer playing a funky beat"), eval_prompt="a drum kit playing a beat"),
    Category("tabla_loop", "music", (SP + r"loop_tabla\.",), ("tabla drums playing a rhythm",)),
    Category("piano_sample", "music", (SP + r"ambi_piano\.",),
             ("a piano playing", "soft piano notes"), eval_prompt="a piano playing"),
    Category("guitar_sample", "music", (SP + r"guit_",), ("an electric guitar playing",
                                                            "a guitar chord ringing")),
    Category("choir_sample", "music", (SP + r"ambi_choir\.",), ("a choir singing",)),
    Category("flute_sample", "music", (STK + r"sfx/gnu_flute\.",), ("a flute playing a melody",)),
    # --- music tracks ------------------------------------------------------------------------
    Category("music", "music",
             (WL + r"music/", STK + r"music/", HW + r"music/", RE + r"sounds/music/",
              RE + r"sounds/(theme|theme_chip|original)\.", MG + r"(core/menu/music|factions/\w+/music)/",
              STK + r"tracks/\w+/[^/]*(theme|remix|rabbit_hole|intro2)[^/]*\."),
             ("instrumental music playing", "a piece of background music", "music playing",
              "an instrumental tune", "video game music")),
    # --- speech --------------------------------------------------------------------------------
    Category("speech_asterisk", "speech", (r"asterisk/sounds/en",),
             ("a woman speaking",), speaker="female", eval_prompt="a man speaking"),
    Category("speech_game", "speech",
             (RE + r"sounds/(voice|announcer)/",
              MG + r"(units|commondata)/.*/?(archer|archmage|axe_thrower|battlemage|guard|horseman|initiate|"
                   r"summoner|swordman|technician|worker|spearman|stickfighter|princess|valkyrie|cudgel|"
                   r"genie|warrior|shaman|dr|carpet|magician/sounds/)_?(ack|select|sel)\d*\.wav$"),
             ("a person speaking",), speaker="pitch", eval_prompt="a man speaking"),
    Category("speech_hedgewars", "speech", (HW + r"sounds/voices/",),
             ("a voice shouting a short phrase", "a cartoonish voice exclaiming",
              "a character shouting"), speaker="voice"),
)

BY_NAME = {c.name: c for c in TABLE}


def categorize(path: str) -> Category | None:
    """Category of a file (path relative to its package root); None = uncaptioned."""
    p = path.replace("\\", "/").lower()
    for cat in TABLE:
        if cat.matches(p):
            return cat
    return None


# ---- composition -------------------------------------------------------------------------

COUNT_WORDS = {1: "", 2: " twice", 3: " three times"}

LANGUAGES = {"": "English", "en": "English", "be": "Belarusian", "bg": "Bulgarian", "ca": "Catalan",
             "da": "Danish", "el": "Greek", "es": "Spanish", "fr": "French", "lt": "Lithuanian",
             "nl": "Dutch", "ro": "Romanian", "ru": "Russian", "ml": "Malayalam", "pl": "Polish",
             "uk": "Ukrainian"}


def count_phrase(n: int) -> str:
    return COUNT_WORDS.get(n, " several times")


SURFACES = {"dirt": "dirt", "grass": "grass", "gravel": "gravel", "sand": "sand", "snow": "snow",
            "wood": "a wooden floor", "metal": "metal", "ice": "ice", "glass": "glass",
            "water": "shallow water", "hard": "a hard floor", "conc": "concrete"}


def footstep_surface(path: str) -> str:
    """'gravel' for default_gravel_footstep.1.ogg, '' when the name does not say."""
    m = re.search(r"(?:default_(\w+?)_footstep|(conc)step)", path.lower())
    return SURFACES.get((m.group(1) or m.group(2)) if m else "", "")


def event_caption(cat: Category, count: int, rng: np.random.Generator, surface: str = "") -> str:
    """Caption of a clip holding `count` occurrences of one event category (no bed)."""
    if cat.steps:
        if surface and rng.random() < 0.7:
            return str(rng.choice([f"footsteps on {surface}", f"someone walking on {surface}"]))
        return str(rng.choice(cat.phrases))
    if count <= 1 or not cat.repeat:
        return str(rng.choice(cat.phrases))
    if count >= 3 and rng.random() < 0.5:
        return f"{cat.subject} {cat.gerund} repeatedly"
    return f"{cat.subject} {cat.verb}{count_phrase(count)}"


def scene_caption(events: list[tuple[Category, int]], bed: Category, rng: np.random.Generator) -> str:
    """Caption of a scene: one or two event categories (with counts) over a bed."""
    def clause(cat, n):
        if cat.steps:
            return "someone walks" if n else "footsteps"
        return f"{cat.subject} {cat.verb}{count_phrase(n) if cat.repeat else ''}"

    bed_clause = f"{bed.subject} {bed.verb}"
    bed_gerund = f"{bed.subject} {bed.gerund}"
    ev = " and ".join(clause(c, n) for c, n in events)
    if len(events) == 1:
        c, n = events[0]
        ev_np = ("footsteps" if c.steps else f"{c.subject} {c.gerund}")
        forms = [f"{ev} while {bed_clause}",
                 f"{bed_gerund} as {ev}",
                 f"{ev_np} with {bed.subject} in the background",
                 f"{ev} over the sound of {bed.subject} {bed.gerund}"]
    else:
        forms = [f"{ev} while {bed_clause}", f"{bed_gerund} as {ev}"]
    text = forms[int(rng.integers(len(forms)))]
    return text[0].lower() + text[1:]


VAGUE_SUBJECTS = {"something", "someone", "somebody"}   # no label on their own: "something splashing"


def tag_captions(category_field: str) -> tuple[str, ...]:
    """Short label captions of a clip, from its manifest categories (``"rain;thunder"``).

    A clip holding one event category (alone, over a bed or a walk) gets the event's label and its
    base phrase (``"thunder"``, ``"thunder rumbling"``; ``"a dog"``, ``"a dog barking"``): the
    event is the clip's salient sound, and the bed goes unnamed as in a tag. Two events: their
    labels joined by "and". A bed alone (a crop, a loop): the bed's label and phrase. Music, speech
    and rows naming no table category get none: their captions are already a label and more.
    ``training.tag_captions`` writes these into a latent store; ``train_impact
    --tag-caption-prob`` trains on them in place of the full caption for a share of the rows."""
    cats = [BY_NAME[n] for n in category_field.split(";") if n in BY_NAME]
    events = [c for c in cats if c.kind == "event"]
    if any(c.subject in VAGUE_SUBJECTS for c in cats):
        return ()
    if len(events) == 1:
        forms = (events[0].subject, events[0].phrases[0])
    elif len(events) == 2:
        forms = (f"{events[0].subject} and {events[1].subject}",)
    elif not events and len(cats) == 1 and cats[0].kind == "bed":
        forms = (cats[0].subject, cats[0].phrases[0])
    else:
        return ()
    return tuple(dict.fromkeys(f for f in forms if f))


def speech_caption(gender: str, language: str, rng: np.random.Generator) -> str:
    """gender: 'male', 'female' or 'unknown'; language: English name or ''."""
    who = {"male": ["a man speaking", "a man talking", "a male voice speaking", "a man is speaking"],
           "female": ["a woman speaking", "a woman talking", "a female voice speaking",
                      "a woman is speaking"],
           "unknown": ["a person speaking", "someone talking", "a voice speaking"]}[gender]
    text = str(rng.choice(who))
    if language and language != "English" and rng.random() < 0.5:
        text += f" in {language}"
    return text


def gender_from_f0(f0: float) -> str:
    """Median F0 of voiced frames -> 'male' (< 160 Hz), 'female' (190-300 Hz) or 'unknown'."""
    if 60.0 <= f0 < 160.0:
        return "male"
    if 190.0 <= f0 <= 300.0:
        return "female"
    return "unknown"
