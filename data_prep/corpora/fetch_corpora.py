#!/usr/bin/env python3
"""Fetch real corpora of different kinds for the byte-level quality benchmark.

    python data_prep/corpora/fetch_corpora.py --out data/corpora text code image audio exe

Every corpus comes from pinned Debian packages (bookworm, `main`) fetched with `apt-get download`
and unpacked with `dpkg-deb -x`; nothing else is downloaded, except Pillow from PyPI for the image
step (into `<out>/.venv`, never the project's own venv). Output of corpus NAME:

    <out>/NAME/files/...        the documents, one file each (what `mbtrain prepare` reads)
    <out>/NAME/SOURCE.md        packages, versions, sha256, licences, decoding, sizes, compressor bpb
    <out>/NAME/MANIFEST.sha256  sha256sum of every document (to check that a rerun gave the same bytes)
    <out>/NAME/.complete        written last; a corpus with it is skipped (use --force to rebuild)

Corpora:
  text   English prose/reference text: GCIDE (Webster 1913 + supplements), Jargon File, FOLDOC,
         Devil's Dictionary (dictd files, dictzip-decompressed), five public-domain SWORD modules
         (KJV, WEB, Spurgeon's Treasury of David, Scofield notes, Nave's Topical Bible; exported
         with `mod2imp -s`, markup stripped) and the English fortune cookie files.
  code   C sources (*.c, *.h) of Linux 6.1 (linux-source-6.1): kernel/ mm/ fs/ (less fs/nls) net/
         block/ ipc/ init/ io_uring/.
  image  38 natural photographs from Debian wallpaper packages, EXIF-orientated, downscaled to at
         most 1024 px on the long side (Lanczos), raw 8-bit RGB, no header; the size is in the name
         (`..._<W>x<H>.rgb`, row-major, W*H*3 bytes).
  audio  Wesnoth's orchestral game music (Ogg Vorbis) decoded by sox to raw PCM: signed 16-bit
         little-endian, mono, 16 kHz, no header (`.s16le`), whole tracks of >= 30 s, up to 100 MB.
  exe    x86-64 ELF executables and shared libraries (regular files with the ELF magic) from a
         dozen common packages (coreutils, binutils, libc6, gdb, ...).

Reproducibility: package versions and .deb sha256 are pinned below; Debian keeps only the current
version of a package in the archive, so when a security/point update replaces one, rerun with
`--allow-newer` (takes the candidate version, records it in SOURCE.md, and skips the hash check).
File lists are sorted and every tool runs in a repeatable mode (sox -R, no dither). The decoding
tools' versions are recorded in SOURCE.md as well. Stdlib only, apart from Pillow in the image step
(run as a subprocess of `<out>/.venv/bin/python this_script.py _decode-images ...`).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PILLOW_VERSION = "13.0.0"

# name -> (version, sha256 of the .deb as downloaded on 2025-12 from Debian bookworm main/security)
PINS: dict[str, tuple[str, str]] = {
    # text
    "dict-gcide": (
        "0.48.5+nmu2",
        "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
    ),
    "dict-jargon": (
        "4.4.7-3.1",
        "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1",
    ),
    "dict-foldoc": (
        "20230119-1",
        "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3",
    ),
    "dict-devil": ("1.0-13.1", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"),
    "sword-text-kjv": (
        "14.3-1",
        "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
    ),
    "sword-text-web": (
        "426.0-1",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
    ),
    "sword-comm-tdavid": (
        "2.1-1",
        "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f",
    ),
    "sword-comm-scofield": (
        "2.1-1",
        "0c11a9533d4870ec40cc72792ecde8aae6e4cc00eca12301150aac018fd5dfcb",
    ),
    "sword-dict-naves": (
        "3.0-1",
        "244597b26cb8aaad3fffad7081d82174b8a7559c95a1e7722e9f716177ec287f",
    ),
    "fortunes": (
        "1:1.99.1-7.3",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
    ),
    # code
    "linux-source-6.1": (
        "6.1.192-3",
        "5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67",
    ),
    # image
    "lomiri-wallpapers-16.04": (
        "20.04.0-2",
        "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab",
    ),
    "lomiri-wallpapers-20.04": (
        "20.04.0-2",
        "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709",
    ),
    "mate-backgrounds": (
        "1.26.0-1",
        "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
    ),
    "plasma-workspace-wallpapers": (
        "4:5.27.5-2",
        "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
    ),
    # audio
    "wesnoth-1.16-music": (
        "1:1.16.9-1",
        "f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb",
    ),
    # exe
    "coreutils": ("9.1-1", "61038f857e346e8500adf53a2a0a20859f4d3a3b51570cc876b153a2d51a3091"),
    "binutils-x86-64-linux-gnu": (
        "2.40-2",
        "2d7ea8a570d768224d7f2424abbe6f373d2154865a1fa7f56c80d43ecf492521",
    ),
    "libc6": (
        "2.36-9+deb12u14",
        "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
    ),
    "libstdc++6": (
        "12.2.0-14+deb12u1",
        "5cd3171216d4ab0fc911cfe9c35509bf2dd8f47761c43b7f6a4296701551a24d",
    ),
    "gdb": ("13.1-3", "65e29803ae582f0094c0412eca8032f2a5a1188664c59e14c35b9528fc81a9a5"),
    "libperl5.36": (
        "5.36.0-7+deb12u4",
        "ed8480b621ad574c25aea30d36194d0133ea74093756ecbe3dff157d0510ef7f",
    ),
    "libpython3.11": (
        "3.11.2-6+deb12u9",
        "5737023cb469c012203bc6f4e6f522459d7561be499a69139df278785ec62129",
    ),
    "libsqlite3-0": (
        "3.40.1-2+deb12u2",
        "a8d78b40e9b4e422224aeebfe0e4dfc243f6acf3532490b0c05480d4283d41e2",
    ),
    "openssh-client": (
        "1:9.2p1-2+deb12u10",
        "42c250b8b9110382488c53c066a960bc564ddac2cb9e449f47b6cdbb5fc1cb60",
    ),
    "vim-nox": (
        "2:9.0.1378-2+deb12u2",
        "47a06a97610b70a65e5571c22a205d51aea178f8bcab6322e4e1f67824454889",
    ),
    "libgtk-3-0": (
        "3.24.38-2~deb12u3",
        "0ff7375c98b5a8d6aafc6096b21d9f7bae4ecb581d31fce5d37be18f55b489a2",
    ),
    "busybox": (
        "1:1.35.0-4+deb12u1+b1",
        "4b355fad07d4fe1f5aa282e949281f8dcb7bcdebb023d7e40f4f8fe475e21e29",
    ),
}

# Debian packages of the tools each step runs (installed with apt-get when missing and root).
TOOLS = {
    "text": {"mod2imp": "libsword-utils"},
    "code": {},
    "image": {},
    "audio": {"sox": "sox", "soxi": "sox"},
    "exe": {},
}
TOOL_EXTRA_PKGS = {"audio": ["libsox-fmt-all"]}
TOOL_VERSION_PKGS = {
    "text": ["libsword-utils", "libsword1.9.0"],
    "audio": ["sox", "libsox3", "libsox-fmt-ogg", "libvorbisfile3"],
    "code": [],
    "image": [],
    "exe": [],
}

COMPRESSORS = [
    ("gzip -9", ["gzip", "-9", "-c", "-n"]),
    ("bzip2 -9", ["bzip2", "-9", "-c"]),
    ("xz -9e", ["xz", "-9e", "-c", "-T1"]),
    ("zstd -19", ["zstd", "-19", "-c", "-q", "--single-thread"]),
]

CORPORA = ("text", "code", "image", "audio", "exe")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def nice(cmd: list[str]) -> list[str]:
    return (["nice", "-n", "10"] if shutil.which("nice") else []) + cmd


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Deb:
    name: str
    version: str
    sha256: str
    path: Path
    root: Path  # where `dpkg-deb -x` unpacked it
    pinned: bool

    def copyright_file(self) -> Path:
        return self.root / "usr/share/doc" / self.name / "copyright"


@dataclass
class Ctx:
    out: Path
    cache: Path
    jobs: int
    allow_newer: bool
    force: bool
    debs: dict[str, Deb] = field(default_factory=dict)

    # ---- packages -----------------------------------------------------------------------
    def deb(self, name: str) -> Deb:
        """Download (once) the pinned version of package NAME and unpack it (once)."""
        if name in self.debs:
            return self.debs[name]
        version, want_sha = PINS[name]
        ddir = self.cache / "debs"
        ddir.mkdir(parents=True, exist_ok=True)
        path = self._find_deb(ddir, name, version)
        pinned = True
        if path is None:
            log(f"apt-get download {name}={version}")
            r = run(_apt_download([f"{name}={version}"]), cwd=ddir, check=False)
            if r.returncode != 0:
                if not self.allow_newer:
                    raise SystemExit(
                        f"error: {name}={version} is no longer downloadable (Debian replaced it); "
                        "rerun with --allow-newer to take the current version"
                    )
                log(f"  {name}={version} gone; --allow-newer: apt-get download {name}")
                run(_apt_download([name]), cwd=ddir)
                pinned = False
            path = self._find_deb(ddir, name, None if not pinned else version)
            if path is None:
                raise SystemExit(f"error: downloaded .deb of {name} not found in {ddir}")
        real_version = _deb_field(path, "Version")
        sha = sha256_file(path)
        if real_version != version:
            pinned = False
        if pinned and sha != want_sha:
            raise SystemExit(f"error: {path.name}: sha256 {sha} != pinned {want_sha}")
        root = self.cache / "unpacked" / f"{name}_{real_version.replace(':', '%3a')}"
        if not (root / ".unpacked").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            log(f"dpkg-deb -x {path.name}")
            run(["dpkg-deb", "-x", str(path), str(root)])
            (root / ".unpacked").write_text("ok\n")
        d = Deb(name, real_version, sha, path, root, pinned)
        self.debs[name] = d
        return d

    @staticmethod
    def _find_deb(ddir: Path, name: str, version: str | None) -> Path | None:
        found = []
        for p in sorted(ddir.glob(f"{name}_*.deb")):
            if p.name.split("_", 1)[0] != name:
                continue
            v = _deb_field(p, "Version")
            if version is None or v == version:
                found.append((v, p))
        if not found:
            return None
        if version is None:  # newest, by dpkg's ordering
            best = found[0]
            for v, p in found[1:]:
                if (
                    run(["dpkg", "--compare-versions", v, "gt", best[0]], check=False).returncode
                    == 0
                ):
                    best = (v, p)
            return best[1]
        return found[0][1]


def _apt_download(specs: list[str]) -> list[str]:
    # Running as root into a directory _apt cannot write: tell apt not to drop privileges.
    opt = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    return ["apt-get", *opt, "download", *specs]


def _deb_field(path: Path, fld: str) -> str:
    return run(["dpkg-deb", "-f", str(path), fld], capture_output=True, text=True).stdout.strip()


def ensure_tools(corpus: str) -> None:
    missing = sorted({pkg for tool, pkg in TOOLS[corpus].items() if not shutil.which(tool)})
    extra = [p for p in TOOL_EXTRA_PKGS.get(corpus, []) if not _dpkg_installed(p)]
    need = missing + extra
    for tool in ("dpkg-deb", "apt-get"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} not found (this script needs a Debian system)")
    if not need:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"error: {corpus} needs Debian packages {need}: apt-get install {' '.join(need)}"
        )
    log(f"apt-get install {' '.join(need)}")
    run(["apt-get", "install", "-y", "--no-install-recommends", *need])


def _dpkg_installed(pkg: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _dpkg_version(pkg: str) -> str | None:
    r = run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


# ---- text ---------------------------------------------------------------------------------

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


def build_text(ctx: Ctx, files: Path) -> dict:
    notes: list[str] = []
    # 1. dictd dictionaries: .dict.dz is dictzip, i.e. gzip with an index in its extra field.
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
    # 2. SWORD modules, exported as plain text.
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
    # 3. fortunes (English).
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


# ---- code ---------------------------------------------------------------------------------

LINUX_DIRS = ("kernel", "mm", "fs", "net", "block", "ipc", "init", "io_uring")
LINUX_EXCLUDE = ("fs/nls/",)  # codepage tables: generated data, not code


def build_code(ctx: Ctx, files: Path) -> dict:
    d = ctx.deb("linux-source-6.1")
    tars = sorted((d.root / "usr/src").glob("linux-source-*.tar.xz"))
    if len(tars) != 1:
        raise SystemExit(f"error: expected one linux-source tarball, found {tars}")
    n = 0
    log(f"  reading {tars[0].name} (xz, ~1.4 GB unpacked; selected files only)")
    with tarfile.open(tars[0], mode="r|xz") as tf:
        for m in tf:
            if not m.isreg():
                continue
            parts = m.name.split("/", 1)
            if len(parts) != 2:
                continue
            rel = parts[1]
            if not rel.endswith((".c", ".h")) or rel.split("/", 1)[0] not in LINUX_DIRS:
                continue
            if rel.startswith(LINUX_EXCLUDE):
                continue
            dst = files / "linux" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            f = tf.extractfile(m)
            assert f is not None
            dst.write_bytes(f.read())
            n += 1
    return {
        "title": "C source code: Linux 6.1 core kernel, file systems and networking",
        "packages": ["linux-source-6.1"],
        "licence": "GPL-2.0 (the kernel's COPYING; some files dual-licensed, see their SPDX lines).",
        "how": [
            f"`{tars[0].name}` from the package, streamed with Python's tarfile; kept every regular "
            f"`*.c`/`*.h` under {', '.join(d + '/' for d in LINUX_DIRS)} except {', '.join(LINUX_EXCLUDE)} "
            f"({n} files), bytes unchanged, at `files/linux/<path in the tree>`."
        ],
        "format": "C source, bytes as in the kernel tree.",
    }


# ---- image --------------------------------------------------------------------------------

IMAGE_MAX_SIDE = 1024
# (package, path under the unpacked root): the photographs among the wallpapers (renders,
# gradients and drawings left out on inspection).
_L16 = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
_KDE = "usr/share/wallpapers/"
PHOTOS: list[tuple[str, str]] = (
    [
        ("lomiri-wallpapers-16.04", _L16 + f)
        for f in (
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        )
    ]
    + [("lomiri-wallpapers-20.04", _L16 + "Kleiber_by_Lukas_Baubkus.jpg")]
    + [
        ("mate-backgrounds", _MATE + f + ".jpg")
        for f in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ]
    + [
        ("plasma-workspace-wallpapers", _KDE + f"{w}/contents/images/{s}.jpg")
        for w, s in (
            ("BytheWater", "2560x1600"),
            ("ColdRipple", "2560x1600"),
            ("ColorfulCups", "2560x1600"),
            ("DarkestHour", "2560x1600"),
            ("EveningGlow", "2560x1600"),
            ("FallenLeaf", "2560x1600"),
            ("Grey", "2560x1600"),
            ("Kite", "2560x1600"),
            ("OneStandsOut", "2560x1600"),
            ("Path", "2560x1600"),
            ("summer_1am", "2560x1600"),
        )
    ]
)


def _image_venv(ctx: Ctx) -> Path:
    venv = ctx.out / ".venv"
    py = venv / "bin" / "python"
    ok = (
        py.exists()
        and run(
            [str(py), "-c", f"import PIL,sys; sys.exit(PIL.__version__ != {PILLOW_VERSION!r})"],
            check=False,
        ).returncode
        == 0
    )
    if not ok:
        log(f"creating {venv} with pillow=={PILLOW_VERSION}")
        run([sys.executable, "-m", "venv", "--clear", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", f"pillow=={PILLOW_VERSION}"])
    return py


def _photo_stem(pkg: str, rel: str) -> str:
    if pkg == "plasma-workspace-wallpapers":
        return "kde_" + rel.split("/")[3]
    short = {
        "lomiri-wallpapers-16.04": "ubuntu16",
        "lomiri-wallpapers-20.04": "ubuntu20",
        "mate-backgrounds": "mate",
    }[pkg]
    return short + "_" + Path(rel).stem


def build_image(ctx: Ctx, files: Path) -> dict:
    py = _image_venv(ctx)
    jobs = []
    for pkg, rel in PHOTOS:
        src = ctx.deb(pkg).root / rel
        if not src.is_file():
            raise SystemExit(f"error: {pkg}: {rel} missing")
        jobs.append({"src": str(src), "dst_stem": str(files / _photo_stem(pkg, rel))})
    manifest = ctx.cache / "work" / "images.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(jobs, indent=1))
    run(
        nice(
            [
                str(py),
                str(Path(__file__).resolve()),
                "_decode-images",
                str(manifest),
                str(IMAGE_MAX_SIDE),
            ]
        )
    )
    pkgs = sorted({p for p, _ in PHOTOS})
    return {
        "title": "Natural photographs as raw RGB pixels",
        "packages": pkgs,
        "licence": (
            "lomiri-wallpapers-*: CC-BY-4.0 / CC-BY-SA-3.0/4.0 / CC0 per picture (Ubuntu wallpaper "
            "contests); mate-backgrounds: GPL-2+; plasma-workspace-wallpapers: GPL-2+ / LGPL (see "
            "each package's copyright file)."
        ),
        "how": [
            f"{len(PHOTOS)} JPEG photographs chosen by hand (the list is in fetch_corpora.py; "
            "renders, gradients and drawings left out), decoded with Pillow "
            f"{PILLOW_VERSION} (bundled libjpeg-turbo), EXIF orientation applied, converted to RGB, "
            f"downscaled with Lanczos so that the longer side is at most {IMAGE_MAX_SIDE} px.",
            "Each written as raw interleaved 8-bit RGB, row-major, top row first, no header: "
            "`<source>_<name>_<W>x<H>.rgb`, exactly W*H*3 bytes.",
        ],
        "format": "raw RGB24, width and height in the file name.",
    }


def decode_images(manifest: str, max_side: str) -> int:
    """Runs under <out>/.venv/bin/python (Pillow)."""
    from PIL import Image, ImageOps

    limit = int(max_side)
    for job in json.loads(Path(manifest).read_text()):
        with Image.open(job["src"]) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            w, h = im.size
            scale = min(1.0, limit / max(w, h))
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                im = im.resize(size, Image.Resampling.LANCZOS)
            w, h = im.size
            data = im.tobytes()
        assert len(data) == w * h * 3
        dst = f"{job['dst_stem']}_{w}x{h}.rgb"
        Path(dst).write_bytes(data)
        print(f"  {Path(job['src']).name} -> {Path(dst).name} ({len(data):,} bytes)", flush=True)
    return 0


# ---- audio --------------------------------------------------------------------------------

AUDIO_RATE = 16000
AUDIO_BUDGET = 100_000_000
AUDIO_MIN_SECONDS = 30.0


def build_audio(ctx: Ctx, files: Path) -> dict:
    d = ctx.deb("wesnoth-1.16-music")
    tracks = sorted((d.root / "usr/share/games/wesnoth/1.16/data/core/music").glob("*.ogg"))
    total, kept, skipped_short, skipped_budget = 0, [], [], []
    for t in tracks:
        secs = float(run(["soxi", "-D", str(t)], capture_output=True, text=True).stdout.strip())
        if secs < AUDIO_MIN_SECONDS:
            skipped_short.append(t.name)
            continue
        est = int(secs * AUDIO_RATE) * 2
        if total + est > AUDIO_BUDGET:
            skipped_budget.append(t.name)
            continue
        dst = files / f"wesnoth_{t.stem}_{AUDIO_RATE}hz_mono.s16le"
        # -R: repeatable; -D: no dither (plain rounding), so the bytes do not depend on a seed.
        run(
            nice(
                [
                    "sox",
                    "-R",
                    "-D",
                    "-V1",
                    str(t),
                    "-t",
                    "raw",
                    "-e",
                    "signed-integer",
                    "-b",
                    "16",
                    "-L",
                    "-c",
                    "1",
                    "-r",
                    str(AUDIO_RATE),
                    str(dst),
                ]
            )
        )
        size = dst.stat().st_size
        total += size
        kept.append((t.name, secs))
        log(f"  {t.name} ({secs:.0f} s) -> {dst.name} ({size:,} bytes)")
    return {
        "title": "Music as raw PCM: Battle for Wesnoth soundtrack",
        "packages": ["wesnoth-1.16-music"],
        "licence": "GPL-2+ (Wesnoth's data, per the package copyright).",
        "how": [
            f"Ogg Vorbis tracks in sorted order; tracks shorter than {AUDIO_MIN_SECONDS:.0f} s left out "
            f"({', '.join(skipped_short) or 'none'}); tracks that would take the total past "
            f"{AUDIO_BUDGET:,} bytes left out ({', '.join(skipped_budget) or 'none'}).",
            f"Decoded with `sox -R -D in.ogg -t raw -e signed-integer -b 16 -L -c 1 -r {AUDIO_RATE} out`: "
            "stereo mixed down to mono (channel average), resampled by sox's `rate` (high quality), "
            "no dither.",
            f"{len(kept)} tracks, {sum(s for _, s in kept) / 60:.1f} minutes.",
        ],
        "format": f"raw PCM, signed 16-bit little-endian, mono, {AUDIO_RATE} Hz, no header (`.s16le`).",
    }


# ---- exe ----------------------------------------------------------------------------------

EXE_PACKAGES = [
    "binutils-x86-64-linux-gnu",
    "busybox",
    "coreutils",
    "gdb",
    "libc6",
    "libgtk-3-0",
    "libperl5.36",
    "libpython3.11",
    "libsqlite3-0",
    "libstdc++6",
    "openssh-client",
    "vim-nox",
]


def build_exe(ctx: Ctx, files: Path) -> dict:
    n = 0
    for pkg in EXE_PACKAGES:
        d = ctx.deb(pkg)
        for dirpath, dirnames, filenames in os.walk(d.root):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if p.is_symlink() or not p.is_file():
                    continue
                with open(p, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                rel = p.relative_to(d.root)
                dst = files / pkg / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)
                n += 1
    return {
        "title": "x86-64 ELF executables and shared libraries",
        "packages": EXE_PACKAGES,
        "licence": "Each package's own (GPL, LGPL, BSD, MIT, ...; see their copyright files).",
        "how": [
            f"Every regular file (not a symlink) starting with the ELF magic in the packages, "
            f"bytes unchanged (stripped, as Debian ships them): {n} files at `files/<package>/<path>`."
        ],
        "format": "ELF64 x86-64 binaries.",
    }


BUILDERS = {
    "text": build_text,
    "code": build_code,
    "image": build_image,
    "audio": build_audio,
    "exe": build_exe,
}


# ---- statistics, SOURCE.md ----------------------------------------------------------------


def _compressed_size(cmd: list[str], path: Path) -> int:
    with open(path, "rb") as f:
        p = subprocess.Popen(nice(cmd), stdin=f, stdout=subprocess.PIPE)
        assert p.stdout is not None
        n = 0
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            n += len(chunk)
        if p.wait() != 0:
            raise SystemExit(f"error: {' '.join(cmd)} < {path} failed")
    return n


def compressor_table(paths: list[Path], jobs: int) -> dict[str, int]:
    out = {}
    for name, cmd in COMPRESSORS:
        if not shutil.which(cmd[0]):
            log(f"  {cmd[0]} not installed: skipping {name}")
            continue
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=jobs) as ex:
            out[name] = sum(ex.map(lambda p, c=cmd: _compressed_size(c, p), paths))
        log(f"  {name}: {out[name]:,} bytes ({time.time() - t0:.0f} s)")
    return out


def finish(ctx: Ctx, name: str, cdir: Path, info: dict, seconds: float) -> None:
    files = cdir / "files"
    paths = sorted(p for p in files.rglob("*") if p.is_file())
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    log(f"{name}: {len(paths)} files, {total:,} bytes; hashing and compressing per file")
    with open(cdir / "MANIFEST.sha256", "w") as f:
        for p in paths:
            f.write(f"{sha256_file(p)}  {p.relative_to(cdir).as_posix()}\n")
    comp = compressor_table(paths, ctx.jobs)
    (cdir / "stats.json").write_text(
        json.dumps(
            {
                "files": len(paths),
                "bytes": total,
                "median_file_bytes": int(statistics.median(sizes)),
                "min_file_bytes": min(sizes),
                "max_file_bytes": max(sizes),
                "compressed_bytes_per_file_summed": comp,
                "bits_per_byte": {k: 8 * v / total for k, v in comp.items()},
            },
            indent=1,
        )
        + "\n"
    )
    lines = [
        f"# {name}: {info['title']}",
        "",
        "Produced by `data_prep/corpora/fetch_corpora.py` "
        f"(`python data_prep/corpora/fetch_corpora.py --out {ctx.out} {name}`); the files took {seconds:.0f} s "
        "to make, the statistics below some minutes more.",
        "",
    ]
    lines += [
        "## Source packages (Debian 12 bookworm, main)",
        "",
        "| package | version | .deb sha256 | pinned |",
        "|---|---|---|---|",
    ]
    for pkg in info["packages"]:
        d = ctx.debs[pkg]
        lines.append(
            f"| {d.name} | {d.version} | `{d.sha256}` | {'yes' if d.pinned else 'NO (--allow-newer)'} |"
        )
    tools = [(p, _dpkg_version(p)) for p in TOOL_VERSION_PKGS.get(name, [])]
    tools = [f"{p} {v}" for p, v in tools if v]
    if name == "image":
        tools.append(f"Pillow {PILLOW_VERSION} (PyPI wheel, in {ctx.out / '.venv'})")
    lines += [
        "",
        f"Tools: {', '.join(tools) or 'Python ' + sys.version.split()[0] + ' stdlib, dpkg-deb'}.",
        "",
    ]
    lines += ["## Licence", "", info["licence"], "", "## How the files were made", ""]
    lines += [f"- {h}" for h in info["how"]]
    lines += ["", f"Format: {info['format']}", ""]
    lines += [
        "## Size",
        "",
        f"- files: {len(paths)}",
        f"- total bytes: {total:,}",
        f"- file size median / min / max: {int(statistics.median(sizes)):,} / {min(sizes):,} / {max(sizes):,}",
        "",
        "## Compressors (each file compressed alone, sizes summed; bpb = 8 * compressed / raw)",
        "",
        "| compressor | compressed bytes | bits per byte |",
        "|---|---|---|",
    ]
    for k, v in comp.items():
        lines.append(f"| {k} | {v:,} | {8 * v / total:.4f} |")
    lines += [
        "",
        "`MANIFEST.sha256` lists every file's sha256 (`cd` here, then `sha256sum -c MANIFEST.sha256`).",
        "",
    ]
    (cdir / "SOURCE.md").write_text("\n".join(lines))
    (cdir / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def build(ctx: Ctx, name: str) -> None:
    # Two fetchers of one corpus (a benchmark started beside a manual fetch) would delete each
    # other's files mid-build: the second waits for the first, then finds the corpus complete.
    with open(ctx.out / f".{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{name}: another fetch is building it; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _build_locked(ctx, name)


def _build_locked(ctx: Ctx, name: str) -> None:
    cdir = ctx.out / name
    if (cdir / ".complete").exists() and not ctx.force:
        log(f"{name}: complete already ({cdir}); skipping (--force rebuilds)")
        return
    ensure_tools(name)
    log(f"{name}: building in {cdir}")
    t0 = time.time()
    shutil.rmtree(cdir, ignore_errors=True)
    (cdir / "files").mkdir(parents=True)
    info = BUILDERS[name](ctx, cdir / "files")
    finish(ctx, name, cdir, info, time.time() - t0)
    log(f"{name}: done in {time.time() - t0:.0f} s -> {cdir / 'SOURCE.md'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_decode-images":
        return decode_images(*argv[1:])
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("corpora", nargs="+", choices=CORPORA, help="which corpora to build")
    ap.add_argument("--out", required=True, type=Path, help="output root, e.g. data/corpora")
    ap.add_argument(
        "--cache", type=Path, help="where .debs and unpacked packages go (default <out>/.cache)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="compressor processes at once (default 1)")
    ap.add_argument(
        "--allow-newer",
        action="store_true",
        help="take the current version of a package whose pin is gone",
    )
    ap.add_argument("--force", action="store_true", help="rebuild corpora that are complete")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    ctx = Ctx(
        out=out,
        cache=(args.cache or out / ".cache").resolve(),
        jobs=max(1, args.jobs),
        allow_newer=args.allow_newer,
        force=args.force,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(args.corpora):
        build(ctx, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
