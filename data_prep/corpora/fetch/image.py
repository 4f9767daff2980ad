"""The `image` corpus: natural photographs from Debian wallpaper packages as raw RGB pixels.

Decoding needs Pillow, which the project's own venv must not get for this: it is installed
into `<out>/.venv`, and `decode_images.py` (stdlib and Pillow only) runs under that Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .apt import Ctx
from .pins import PILLOW_VERSION
from .shell import log, nice, run

# The decoder runs as `python -m data_prep.corpora.fetch.decode_images` from the repo root.
REPO = Path(__file__).resolve().parents[3]


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
    decoder = [str(py), "-m", "data_prep.corpora.fetch.decode_images"]
    run(nice([*decoder, str(manifest), str(IMAGE_MAX_SIDE)]), cwd=REPO)
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
            f"{len(PHOTOS)} JPEG photographs chosen by hand (the list is in data_prep/corpora/fetch/image.py; "
            "renders, gradients and drawings left out), decoded with Pillow "
            f"{PILLOW_VERSION} (bundled libjpeg-turbo), EXIF orientation applied, converted to RGB, "
            f"downscaled with Lanczos so that the longer side is at most {IMAGE_MAX_SIDE} px.",
            "Each written as raw interleaved 8-bit RGB, row-major, top row first, no header: "
            "`<source>_<name>_<W>x<H>.rgb`, exactly W*H*3 bytes.",
        ],
        "format": "raw RGB24, width and height in the file name.",
    }
