"""The `text` corpus: English prose and reference text from dictd dictionaries, public-domain
SWORD modules and the fortune cookie files."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

from .apt import Ctx
from .shell import log, nice, run

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_num(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64.index(c)
    return v


def _dictd_entry_starts(index: Path) -> list[int]:
    starts = set()
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                starts.add(_dictd_num(parts[1]))
    return sorted(starts)


def _sword_export(module: str, sword_path: Path) -> str:
    """The module as plain text: `mod2imp -s` (markup stripped), empty entries and entries whose
    text repeats an earlier one dropped (mod2imp repeats a linked entry for every verse)."""
    env = dict(os.environ, SWORD_PATH=str(sword_path), HOME=str(sword_path))
    r = run(nice(["mod2imp", module, "-s"]), capture_output=True, env=env)
    if r.stderr.strip():
        raise SystemExit(f"error: mod2imp {module}: {r.stderr.decode(errors='replace')[:300]}")
    data = r.stdout.decode("utf-8")
    parts = re.split(r"^\$\$\$(.*)\n", data, flags=re.M)
    out, seen = [], set()
    for i in range(1, len(parts), 2):
        key, body = parts[i].strip(), parts[i + 1].strip()
        if not body or body in seen:
            continue
        seen.add(body)
        out.append(f"{key}\n{body}\n\n")
    return "".join(out)


SWORD_MODULES = [  # (package, module name, output file)
    ("sword-text-kjv", "engKJV2006eb", "bible_kjv.txt"),
    ("sword-text-web", "engWEB2015eb", "bible_web.txt"),
    ("sword-comm-tdavid", "TDavid", "spurgeon_treasury_of_david.txt"),
    ("sword-comm-scofield", "Scofield", "scofield_reference_notes.txt"),
    ("sword-dict-naves", "Nave", "naves_topical_bible.txt"),
]
FORTUNES_SKIP = {"ascii-art", "translate-me"}
GCIDE_CHUNK = 2_000_000


def _dictionaries(ctx: Ctx, files: Path) -> list[str]:
    """dictd dictionaries: GCIDE in pieces, the smaller ones whole; returns SOURCE.md notes."""
    notes: list[str] = []
    # .dict.dz is dictzip, i.e. gzip with an index in its extra field.
    gdeb = ctx.deb("dict-gcide")
    dz = gdeb.root / "usr/share/dictd/gcide.dict.dz"
    raw = gzip.decompress(dz.read_bytes())
    starts = _dictd_entry_starts(gdeb.root / "usr/share/dictd/gcide.index")
    cuts, nxt = [0], GCIDE_CHUNK
    for s in starts:  # cut at the first entry start past every GCIDE_CHUNK bytes
        if s >= nxt and len(raw) - s >= GCIDE_CHUNK // 4:
            cuts.append(s)
            nxt = s + GCIDE_CHUNK
    cuts.append(len(raw))
    (files / "gcide").mkdir(parents=True)
    for i in range(len(cuts) - 1):
        (files / "gcide" / f"gcide_{i:02d}.txt").write_bytes(raw[cuts[i] : cuts[i + 1]])
    notes.append(
        f"GCIDE: `gcide.dict.dz` gunzipped ({len(raw):,} bytes, plain text as dictd serves it) and "
        f"cut into {len(cuts) - 1} consecutive pieces of about {GCIDE_CHUNK:,} bytes at entry starts "
        "(from `gcide.index`); entries are in alphabetical order. Bytes unchanged: three pieces "
        "hold a stray cp1252 byte from the source (`\\x92`, `\\xe7`, `\\xb9`), so they are not strict UTF-8."
    )
    (files / "dict").mkdir()
    for pkg, stem in (
        ("dict-jargon", "jargon"),
        ("dict-foldoc", "foldoc"),
        ("dict-devil", "devil"),
    ):
        d = ctx.deb(pkg)
        data = gzip.decompress((d.root / f"usr/share/dictd/{stem}.dict.dz").read_bytes())
        (files / "dict" / f"{stem}.txt").write_bytes(data)
    notes.append(
        "Jargon File, FOLDOC, Devil's Dictionary: the whole `.dict.dz`, gunzipped, one file each."
    )
    return notes


def _sword(ctx: Ctx, files: Path) -> list[str]:
    """SWORD modules, exported as plain text; returns SOURCE.md notes."""
    notes: list[str] = []
    sword = ctx.cache / "work" / "sword"
    shutil.rmtree(sword, ignore_errors=True)
    for pkg, _, _ in SWORD_MODULES:
        shutil.copytree(ctx.deb(pkg).root / "usr/share/sword", sword, dirs_exist_ok=True)
    (files / "sword").mkdir()
    for _pkg, module, fname in SWORD_MODULES:
        log(f"  mod2imp {module}")
        (files / "sword" / fname).write_text(_sword_export(module, sword), encoding="utf-8")
    notes.append(
        "SWORD modules: `mod2imp MODULE -s` (markup stripped), written as `Key\\nText\\n\\n` per "
        "entry, empty entries and repeats of an earlier entry's text dropped. (Matthew Henry's "
        "Concise Commentary, sword-comm-mhcc, is left out: mod2imp reads it as garbage.)"
    )
    return notes


def _fortunes(ctx: Ctx, files: Path) -> list[str]:
    """The English fortune cookie files; returns SOURCE.md notes."""
    notes: list[str] = []
    fdeb = ctx.deb("fortunes")
    fdir = fdeb.root / "usr/share/games/fortunes"
    (files / "fortunes").mkdir()
    for p in sorted(fdir.iterdir()):
        if p.is_symlink() or not p.is_file() or p.suffix == ".dat" or p.name in FORTUNES_SKIP:
            continue
        shutil.copyfile(p, files / "fortunes" / f"{p.name}.txt")
    notes.append(
        f"fortunes: every cookie file except {sorted(FORTUNES_SKIP)} (no .dat, no symlinks)."
    )
    return notes


def build_text(ctx: Ctx, files: Path) -> dict:
    # In the order the notes of SOURCE.md list them: dictionaries, SWORD modules, fortunes.
    notes = _dictionaries(ctx, files) + _sword(ctx, files) + _fortunes(ctx, files)
    pkgs = (
        ["dict-gcide", "dict-jargon", "dict-foldoc", "dict-devil"]
        + [p for p, _, _ in SWORD_MODULES]
        + ["fortunes"]
    )
    return {
        "title": "English text: dictionaries, public-domain Bible texts and commentaries, fortunes",
        "packages": pkgs,
        "licence": (
            "GCIDE: GPL-2+; Jargon File: public domain; FOLDOC: GFDL-1.1+; Devil's Dictionary: "
            "public domain; SWORD modules (KJV 1769, World English Bible, Treasury of David, "
            "Scofield 1917, Nave's): public domain (per their .conf); fortunes: BSD and various "
            "(see the package copyright)."
        ),
        "how": notes,
        "format": "UTF-8 (mostly ASCII) plain text, `.txt`.",
    }
