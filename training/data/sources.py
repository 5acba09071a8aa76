"""Debian packages with real audio: fetch (apt-get download), unpack, licences, inventory."""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .audio import load_mono, median_f0
from .captions import categorize

PACKAGES: tuple[str, ...] = (
    "megaglest-data", "redeclipse-data", "supertuxkart-data", "tuxpaint-stamps-default",
    "widelands-data", "sonic-pi-samples", "minetest-data", "hedgewars-data",
    "asterisk-core-sounds-en-wav",
)
AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")

# Supplementary packages: named files only, for a category the packages above hold too few
# recordings of. Thunder had three (stormbolts, lightningbolt, supertuxkart's thunder), too few to
# teach "thunder" (issue 3). Each file below is named thunder, lightning or storm (rain: rain) and
# YAMNet's top 5 for it holds Thunder or Thunderstorm (Rain, Water for the rain files); the other
# files of these names were left out because YAMNet hears them as something else (scorched3d's
# misc/thunder.wav: explosion, gunshot; searchandrescue's thunder_faint/thunder_loud: fireworks,
# music; scorched3d's apoc lightning.wav: a pop). They are split among themselves
# (plan.Planner), so adding them leaves every clip of the packages above as it was.
SUPPLEMENTARY: dict[str, tuple[str, ...]] = {
    "flightgear-data-base": ("usr/share/games/flightgear/Sounds/thunder.wav",
                             "usr/share/games/flightgear/Sounds/thunder1.wav",
                             "usr/share/games/flightgear/Sounds/thunder2.wav",
                             "usr/share/games/flightgear/Sounds/thunder3.wav",
                             "usr/share/games/flightgear/Sounds/rain.wav"),
    "scorched3d-data": ("usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/thunder2.wav",
                        "usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/thunder3.wav",
                        "usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/rain.wav",
                        "usr/share/games/scorched3d/data/globalmods/apoc/data/wav/explosions/lightningbolt.wav",
                        "usr/share/games/scorched3d/data/globalmods/apoc/data/wav/explosions/thunder.wav"),
    "searchandrescue-data": ("usr/share/games/searchandrescue/sounds/thunder_moderate.wav",),
    "supertux-data": ("usr/share/games/supertux2/sounds/thunder.wav",
                      "usr/share/games/supertux2/sounds/lightning.wav"),
    "7kaa-data": ("usr/share/games/7kaa/SOUND/THUNDER.WAV",),
    "cube2-data": ("usr/share/games/cube2/packages/sounds/0ad/thunder_10.ogg",),
    "gl-117-data": ("usr/share/games/gl-117/sounds/thunder1.wav",),
    "pachi-data": ("usr/share/pachi/sounds/storm.wav",),
}


class BuildError(RuntimeError):
    """A one-line, user-facing error."""


def log(msg: str) -> None:
    print(msg, flush=True)


def require_tool(tool: str, apt_package: str, install: bool) -> None:
    """Make sure a command exists; install its Debian package when allowed, else fail."""
    if shutil.which(tool):
        return
    if not install:
        raise BuildError(f"missing tool '{tool}': run 'apt-get install {apt_package}' "
                         "(or pass --install-tools)")
    log(f"[tools] '{tool}' missing: apt-get install -y {apt_package}")
    run(["apt-get", "install", "-y", "--no-install-recommends", apt_package],
        env_extra={"DEBIAN_FRONTEND": "noninteractive"})
    if not shutil.which(tool):
        raise BuildError(f"'{tool}' still missing after installing {apt_package}")


def run(cmd: list[str], cwd: Path | None = None, env_extra: dict | None = None) -> str:
    import os
    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BuildError(f"{' '.join(cmd[:3])} failed: {tail[0]}")
    return r.stdout


# ---- fetch and unpack -----------------------------------------------------------------

def deb_path(debs: Path, pkg: str) -> Path | None:
    hits = sorted(glob.glob(str(debs / f"{pkg}_*.deb")))
    return Path(hits[-1]) if hits else None


def fetch_debs(debs: Path, packages=PACKAGES, install_tools: bool = True) -> dict[str, Path]:
    """apt-get download each package into `debs` unless a .deb of it is already there."""
    require_tool("apt-get", "apt", False)
    require_tool("dpkg-deb", "dpkg", False)
    debs.mkdir(parents=True, exist_ok=True)
    out, updated = {}, False
    for pkg in packages:
        have = deb_path(debs, pkg)
        if have is None:
            log(f"[fetch] apt-get download {pkg}")
            try:
                run(["apt-get", "download", pkg], cwd=debs)
            except BuildError:
                if updated:
                    raise
                log("[fetch] apt-get update (package lists missing or stale)")
                run(["apt-get", "update"])
                updated = True
                run(["apt-get", "download", pkg], cwd=debs)
            have = deb_path(debs, pkg)
            if have is None:
                raise BuildError(f"apt-get download {pkg} left no .deb in {debs}")
        out[pkg] = have
    return out


def unpack(deb: Path, dest: Path, files: tuple[str, ...] | None = None) -> Path:
    """Extract the audio files (only ``files``, paths inside the package, when given) and the
    copyright file of a .deb (resumable: '.done' marker)."""
    done = dest / ".done"
    if done.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    log(f"[unpack] {deb.name}")
    if files is None:
        pats = ["*" + e for e in AUDIO_EXT] + ["*" + e.upper() for e in AUDIO_EXT] + ["*/copyright"]
    else:
        pats = [f"./{f}" for f in files] + [f"./usr/share/doc/{deb.name.split('_')[0]}/copyright"]
    cmd = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{dest}' --wildcards "
           + " ".join(f"'{p}'" for p in pats))
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    if r.returncode not in (0, 2):        # tar exits 2 when a wildcard matched nothing
        raise BuildError(f"unpacking {deb.name} failed: {r.stderr.strip()[-200:]}")
    missing = [f for f in files or () if not (dest / f).is_file()]
    if missing:
        raise BuildError(f"{deb.name} has no {missing[0]}")
    done.write_text(deb.name + "\n")
    return dest


# ---- licences -------------------------------------------------------------------------

KNOWN_LICENSES = ("CC0", "CC-BY-SA-4.0", "CC-BY-SA-3.0", "CC-BY-4.0", "CC-BY-3.0", "GPL-3", "GPL-2",
                  "LGPL-2.1", "GFDL-1.3", "MIT", "BSD", "Public Domain")


@dataclass
class Copyright:
    stanzas: list[tuple[list[str], str]]      # (Files patterns, License short name)
    default: str

    def license_for(self, path: str) -> str:
        """DEP-5: the last stanza whose Files pattern matches wins. Source-tree patterns are
        matched against installed paths by their tail ('data/sounds/x/*' ~ '.../data/sounds/x/a')."""
        found = self.default
        for patterns, lic in self.stanzas:
            if any(_tail_match(p, path) for p in patterns):
                found = lic
        return found


def _tail_match(pattern: str, path: str) -> bool:
    comps = pattern.strip("/").split("/")
    keep = min(2, len(comps))
    for i in range(len(comps) - keep + 1):
        tail = "/".join(comps[i:])
        if fnmatch.fnmatchcase(path, tail) or fnmatch.fnmatchcase(path, "*/" + tail):
            return True
    return False


def parse_copyright(text: str) -> Copyright:
    stanzas, default = [], ""
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.M)
        lic = re.search(r"^License:[ \t]*(\S.*)$", block, re.M)
        if not (files and lic):
            continue
        pats = files.group(1).split()
        name = lic.group(1).strip()
        if pats == ["*"] and not default:
            default = name
        stanzas.append((pats, name))
    if not default:
        default = "; ".join(k for k in KNOWN_LICENSES if k.lower() in text.lower()) or _gnu_prose(text) \
            or "see copyright"
    return Copyright(stanzas, default)


def _gnu_prose(text: str) -> str:
    """The licence of an old-style (not DEP-5) copyright file that states the GNU licence in prose:
    "... the GNU General Public License ... version 2 ... (at your option) any later version" → GPL-2+."""
    flat = " ".join(text.split())
    m = re.search(r"GNU (Lesser |Library )?General Public License,? (?:as published by [^,.]*?,? )?"
                  r"(?:either )?version (\d(?:\.\d)?)", flat, re.I)
    if not m:
        return ""
    name = ("LGPL-" if m.group(1) else "GPL-") + m.group(2)
    return name + ("+" if re.search(r"any later version", flat[m.end():m.end() + 200], re.I) else "")


def read_copyright(root: Path, pkg: str) -> Copyright:
    f = root / "usr/share/doc" / pkg / "copyright"
    return parse_copyright(f.read_text(errors="replace")) if f.exists() else Copyright([], "unknown")


# ---- inventory -------------------------------------------------------------------------

@dataclass
class Item:
    """One source recording (a file) with everything the planner needs."""
    key: str                 # "<package>/<path relative to package root>"
    package: str
    rel: str
    path: str                # absolute path on disk
    sha1: str
    duration: float
    category: str            # caption category name, "" when uncaptioned
    license: str
    f0: float = 0.0          # median F0 for speech whose speaker is estimated
    meta: str = ""           # free text: rendered items keep their caption details here


def sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_package(pkg: str, root: Path, cache: dict) -> list[Item]:
    """Every audio file under `root`, categorised. `cache` (key -> {size, sha1, duration, f0})
    keeps the costly facts between runs; captions are always re-derived from the table."""
    from .captions import BY_NAME
    cr = read_copyright(root, pkg)
    items = []
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() not in AUDIO_EXT or not f.is_file() or ".part" in f.name:
            continue
        rel = f.relative_to(root).as_posix()
        key = f"{pkg}/{rel}"
        st = f.stat()
        c = cache.get(key)
        if not (c and c.get("size") == st.st_size):
            try:
                duration = sf.info(str(f)).duration
            except Exception as e:           # unreadable file: skip, say so
                log(f"[scan] skip unreadable {key}: {str(e)[:80]}")
                continue
            c = cache[key] = {"key": key, "size": st.st_size, "sha1": sha1_file(f),
                              "duration": round(float(duration), 4), "f0": -1.0}
        cat = categorize(rel)
        if cat is not None and cat.kind == "speech" and cat.speaker == "pitch" and c["f0"] < 0:
            try:
                c["f0"] = round(median_f0(load_mono(f)), 1)
            except Exception:
                c["f0"] = 0.0
        items.append(Item(key=key, package=pkg, rel=rel, path=str(f), sha1=c["sha1"],
                          duration=c["duration"], category=cat.name if cat else "",
                          license=cr.license_for(rel), f0=max(0.0, c["f0"])))
    assert all(i.category == "" or i.category in BY_NAME for i in items)
    return items


def load_cache(path: Path) -> dict:
    cache = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                cache[d["key"]] = d
    return cache


def save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text("".join(json.dumps(cache[k], sort_keys=True) + "\n" for k in sorted(cache)))
    tmp.replace(path)
