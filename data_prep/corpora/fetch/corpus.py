"""Build one corpus: under a lock, skipping a complete one, run its builder, then its manifest."""

from __future__ import annotations

import fcntl
import shutil
import time

from .apt import Ctx, ensure_tools
from .audio import build_audio
from .code import build_code
from .exe import build_exe
from .image import build_image
from .manifest import finish
from .shell import log
from .text import build_text

CORPORA = ("text", "code", "image", "audio", "exe")

BUILDERS = {
    "text": build_text,
    "code": build_code,
    "image": build_image,
    "audio": build_audio,
    "exe": build_exe,
}


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
