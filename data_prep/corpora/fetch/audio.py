"""The `audio` corpus: Wesnoth's orchestral music decoded by sox to raw 16 kHz mono PCM."""

from __future__ import annotations

from pathlib import Path

from .apt import Ctx
from .shell import log, nice, run

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
