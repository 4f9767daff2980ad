"""The output of `prepare` as a place: checked before anything is written, created before the
inputs are listed, marked incomplete before parts are rewritten, cleared of what an unpublished
run of another config left there; and the one-line error for a file that cannot be written.

An output is *published* once a merge has written its `mbtrain.json`: from then on someone may
train on it, so it is never replaced silently (see `preparation.py`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil

from mbtrain.data import storage
from mbtrain.data.parts import SPLITS
from mbtrain.errors import ConfigError, DataError


def check_output_path(out: str) -> None:
    """ConfigError if a local `out` is, or lies under, something that is not a directory."""
    if storage.is_remote(out):
        return
    path = os.path.abspath(out)
    while True:
        if os.path.lexists(path):
            if not os.path.isdir(path):
                what = (
                    "is a file" if path == os.path.abspath(out) else f"lies under the file {path}"
                )
                raise ConfigError(f"--out {out}: {what}; give a directory (new or earlier output)")
            return
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def output_error(e: OSError, out: str) -> DataError | None:
    """The one-line error for a file that could not be written (a full disk or quota, a
    read-only or forbidden directory); None for other OSErrors, which stay bugs."""
    if e.errno not in _WRITE_ERRORS:
        return None
    return DataError(
        f"{e.filename or out}: {e.strerror}; {out} is not published (finished parts are "
        "kept: fix this and re-run the same command)"
    )


def make_out_dir(out: str) -> list[str]:
    """Create a local `out` before the inputs are listed, so that an `--out` inside an input
    directory is met by the walk and listed in stats.json as excluded (a directory that does
    not exist yet is never met). Returns the directories created here, deepest first."""
    if storage.is_remote(out):
        return []
    created = []
    path = os.path.abspath(out)
    while not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(out, exist_ok=True)
    return created


def mark_incomplete(out: str) -> None:
    """Flip `complete` off in an existing dataset before its parts are rewritten."""
    for sp in SPLITS:
        path = storage.join(out, sp, "mbtrain.json")
        meta = storage.read_json(path)
        if meta is not None and meta.get("complete"):
            meta["complete"] = False
            storage.write_json(path, meta)


def published(out: str) -> bool:
    """Whether a merge ever published a dataset in `out`: its `mbtrain.json` exists, complete
    or marked incomplete by a re-run (someone may train on it: never replaced silently)."""
    return any(storage.read_json(storage.join(out, sp, "mbtrain.json")) for sp in SPLITS)


_PART_DIR = re.compile(r"^(\.?)part-\d{5}-of-(\d{5})(\.tmp)?$")


def discard_unpublished(out: str, old_total: int, new_total: int) -> None:
    """Remove what an unpublished prepare of another config left in a local `out`: its layout,
    markers, parts and merged indexes; nothing else.

    A `.part-*.tmp` of the new layout's names is left alone: it may be a part being written
    by another job of the new config, started at the same time (each writer clears its own).
    Remote outputs keep their objects (streaming's clients cannot delete them); they do no
    harm: merge reads only the parts named by the new layout and ignores markers of another
    fingerprint, and run_part rewrites such parts."""
    if storage.is_remote(out):
        return
    for name in ("layout.json", "stats.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "parts"), ignore_errors=True)
    for sp in SPLITS:
        split_dir = os.path.join(out, sp)
        if not os.path.isdir(split_dir):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(split_dir, "index.json"))
        for name in os.listdir(split_dir):
            m = _PART_DIR.match(name)
            if m and int(m.group(2)) == old_total and not (m.group(1) and old_total == new_total):
                shutil.rmtree(os.path.join(split_dir, name), ignore_errors=True)
