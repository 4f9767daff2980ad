"""Where checkpoints live and which of them are complete.

`<run.dir>/checkpoints/<tag>/` is written by DeepSpeed (weights, optimizer, scheduler shards)
plus one `mbtrain_rank<R>.pt` per rank (RNG and data-loader state) and, last of all, the
marker `mbtrain_complete.json`, written by rank 0 only after every rank has finished.
`checkpoints/latest` (DeepSpeed's own format: the tag as text, so `zero_to_fp32.py` works)
is replaced atomically after the marker. A directory without the marker never loads.
"""

from __future__ import annotations

import json
import os
import re
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
    return json.loads((ckpt_dir / COMPLETE_MARKER).read_text())


def complete_tags(root: Path) -> list[str]:
    """Complete checkpoint tags, oldest first."""
    if not root.is_dir():
        return []
    tags = [p.name for p in root.iterdir() if p.is_dir() and step_of_tag(p.name) is not None]
    return sorted((t for t in tags if is_complete(root / t)), key=lambda t: step_of_tag(t) or 0)


def latest_complete(root: Path) -> str | None:
    """The tag `latest` names if it is complete, else the newest complete one.

    `latest` wins over a newer complete tag: a user rolls a run back (after a loss spike) by
    pointing `latest` at an older tag, and the abandoned newer ones must not come back at the
    next restart. The price: a crash between a checkpoint's marker and the `latest` update (an
    atomic rename right after it) resumes from the previous checkpoint.
    """
    latest = root / LATEST
    if latest.is_file():
        tag = latest.read_text().strip()
        if tag and is_complete(root / tag):
            return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
