"""Is a complete-looking checkpoint loadable? Checked before anything is loaded from it.

A checkpoint is complete once its marker exists (`paths.py`); it can still be unusable: the
marker cut short or edited into invalid JSON, a shard truncated or missing (a full disk, a
file system that lost a write, a user's `rm`), bytes flipped, or a file that is not what
mbtrain wrote (pickled code). Loading such a checkpoint fails half way, and with several
ranks half way is inside DeepSpeed's collectives: one rank raising while the others wait in
an all-gather hangs the job. So every problem is looked for first, by every rank, and the
ranks agree on the verdict before any of them loads:

* the marker parses and lists the checkpoint's files with their sizes (`files`): each must
  exist with exactly that size (a stat per file, on every rank);
* the zip-format torch files are read once in total, split over the ranks: CRC-32 of every
  record (truncation and bit flips), and their pickles are scanned, without running them,
  for classes outside the trusted list (`serialization.py`).

Checkpoints written before the marker listed its files get the content checks only.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import NamedTuple

from mbtrain.checkpoint.paths import COMPLETE_MARKER

MANIFEST_KEY = "files"


class Problem(NamedTuple):
    """Why a checkpoint cannot be loaded. `corrupt`: damaged (fall back to an earlier one);
    otherwise refused by policy (unsafe content): falling back would hide the reason."""

    message: str
    corrupt: bool = True


def _scan_file(path: Path, allow_pickle: bool) -> Problem | None:
    """Why one torch file cannot be loaded safely, or None."""
    if not zipfile.is_zipfile(path):
        if allow_pickle:
            return None
        return Problem(
            f"{path.name}: not a zip-format torch file (written by an older mbtrain, or not by "
            "mbtrain: set checkpoint.allow_pickle=true only if you wrote it yourself)",
            corrupt=False,
        )
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            return Problem(f"{path.name}: record {bad} fails its CRC check")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return Problem(f"{path.name}: unreadable zip ({e})")
    if allow_pickle:
        return None
    import torch

    from mbtrain.checkpoint.serialization import trusted_classes

    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # a malformed pickle stream
        return Problem(f"{path.name}: unreadable pickle ({e})")
    trusted = {f"{c.__module__}.{c.__qualname__}" for c in trusted_classes()}
    unsafe = sorted(set(found) - trusted)
    if unsafe:
        return Problem(
            f"{path.name}: holds {', '.join(unsafe[:3])}, which only running code could build "
            "(mbtrain loads only data; see checkpoint.allow_pickle)",
            corrupt=False,
        )
    return None


def checkpoint_problem(
    ckpt_dir: Path, rank: int = 0, world_size: int = 1, allow_pickle: bool = False
) -> Problem | None:
    """Why `ckpt_dir` cannot be loaded, as seen by this rank (its share of the content
    checks); None if nothing is wrong. Callers with several ranks combine the answers."""
    ckpt_dir = Path(ckpt_dir)
    try:
        info = json.loads((ckpt_dir / COMPLETE_MARKER).read_text())
    except FileNotFoundError:
        return Problem(f"no {COMPLETE_MARKER} (the save was interrupted)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Problem(f"{COMPLETE_MARKER} is unreadable ({e})")
    if not isinstance(info, dict):
        return Problem(f"{COMPLETE_MARKER} is not a JSON object")
    files = info.get(MANIFEST_KEY)
    if files is not None:
        for name, size in sorted(files.items()):
            try:
                actual = (ckpt_dir / name).stat().st_size
            except OSError:
                return Problem(f"{name} is missing")
            if actual != size:
                return Problem(f"{name} has {actual} bytes, {size} were written (truncated?)")
        names = sorted(n for n in files if n.endswith(".pt"))
    else:
        names = sorted(p.name for p in ckpt_dir.glob("*.pt"))
    for i, name in enumerate(names):
        if i % world_size == rank:
            problem = _scan_file(ckpt_dir / name, allow_pickle)
            if problem:
                return problem
    return None
