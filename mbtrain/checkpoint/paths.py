"""Where checkpoints live and which of them are complete.

`<run.dir>/checkpoints/<tag>/` is written by DeepSpeed (weights, optimizer, scheduler shards)
plus one `mbtrain_rank<R>.pt` per rank (RNG and data-loader state) and, last of all, the
marker `mbtrain_complete.json`, written by rank 0 only after every rank has finished.
`checkpoints/latest` (DeepSpeed's own format: the tag as text, so `zero_to_fp32.py` works)
is replaced atomically after the marker. A directory without the marker never loads.

A checkpoint that cannot be loaded (`integrity.py`), a newer one abandoned by a rollback, or
one about to be overwritten is never deleted: it is renamed aside, `<tag>.<why>-<time>`
(`set_aside`), out of the `stepNNNNNNNN` namespace, so nothing loads or prunes it again.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

COMPLETE_MARKER = "mbtrain_complete.json"
LATEST = "latest"
TAG_RE = re.compile(r"^step(\d+)$")


def tag_for_step(step: int) -> str:
    return f"step{step:08d}"


def step_of_tag(tag: str) -> int | None:
    m = TAG_RE.match(tag)
    return int(m.group(1)) if m else None


def is_complete(ckpt_dir: Path) -> bool:
    return (ckpt_dir / COMPLETE_MARKER).is_file()


def read_marker(ckpt_dir: Path) -> dict:
    """The completion marker's content; CheckpointError if it is missing or not valid JSON."""
    from mbtrain.errors import CheckpointError

    path = Path(ckpt_dir) / COMPLETE_MARKER
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{ckpt_dir}: checkpoint is incomplete (no {COMPLETE_MARKER})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return info


def named_latest(root: Path) -> str | None:
    """The tag the `latest` file names (whatever its state), or None."""
    try:
        tag = (Path(root) / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return tag if step_of_tag(tag) is not None else None


def resume_candidates(root: Path) -> list[str]:
    """Complete tags a restart may resume from, best first (newest step first).

    `latest` decides which lineage is current. A user rolls a run back (after a loss spike)
    by pointing `latest` at an older tag; the newer tags are then abandoned and must not come
    back at the next restart, nor be fallen back to. A newer tag is abandoned if its marker is
    older than the `latest` file; one whose marker is newer was completed after `latest` was
    last written, i.e. a crash came between its marker and the update of `latest`, and it is
    the newest checkpoint of the current lineage. Without a `latest`, every complete tag.
    """
    root = Path(root)
    tags = complete_tags(root)
    named = named_latest(root)
    if named is not None:
        cap = step_of_tag(named) or 0
        try:
            published = (root / LATEST).stat().st_mtime_ns
        except OSError:
            published = 0

        def current(tag: str) -> bool:
            if (step_of_tag(tag) or 0) <= cap:
                return True
            try:
                return (root / tag / COMPLETE_MARKER).stat().st_mtime_ns > published
            except OSError:
                return False

        tags = [t for t in tags if current(t)]
    return tags[::-1]


def abandoned_tags(root: Path) -> list[str]:
    """Complete tags that a rollback of `latest` abandoned (newer than every candidate)."""
    candidates = resume_candidates(root)
    if not candidates:
        return []
    first = step_of_tag(candidates[0]) or 0
    return [t for t in complete_tags(root) if (step_of_tag(t) or 0) > first]


def set_aside(root: Path, tag: str, why: str) -> Path:
    """Rename checkpoint `tag` to `<tag>.<why>-<UTC time>` (never deleted); return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = Path(root) / f"{tag}.{why}-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = Path(root) / f"{tag}.{why}-{stamp}-{n}"
    os.replace(Path(root) / tag, dest)
    return dest


def complete_tags(root: Path) -> list[str]:
    """Complete checkpoint tags, oldest first."""
    if not root.is_dir():
        return []
    tags = [p.name for p in root.iterdir() if p.is_dir() and step_of_tag(p.name) is not None]
    return sorted((t for t in tags if is_complete(root / t)), key=lambda t: step_of_tag(t) or 0)


def latest_complete(root: Path) -> str | None:
    """The checkpoint a restart resumes from: the first of `resume_candidates`, or None."""
    candidates = resume_candidates(root)
    return candidates[0] if candidates else None


def atomic_write_text(path: Path, text: str) -> None:
    """Write aside, fsync, rename over `path`, fsync the directory: all or nothing, durable."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve_checkpoint(path: str | Path) -> tuple[Path, str]:
    """(checkpoints root, tag) for a run directory, a checkpoints root or a tag directory."""
    from mbtrain.errors import CheckpointError

    path = Path(path)
    for root in (path / "checkpoints", path):
        tag = latest_complete(root) if root.is_dir() else None
        if tag:
            return root, tag
    if path.is_dir() and step_of_tag(path.name) is not None:
        if not is_complete(path):
            raise CheckpointError(
                f"{path}: checkpoint is incomplete (no {COMPLETE_MARKER}; it was interrupted while saving)"
            )
        return path.parent, path.name
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint")
    raise CheckpointError(
        f"{path}: holds no complete checkpoint (expected checkpoints/stepNNNNNNNN/{COMPLETE_MARKER})"
    )


def write_marker(ckpt_dir: Path, info: dict) -> None:
    atomic_write_text(ckpt_dir / COMPLETE_MARKER, json.dumps(info, indent=2))
