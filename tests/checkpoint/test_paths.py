"""Which checkpoint a restart takes, what pruning may delete, and what is set aside: on
checkpoint directories laid out as the manager writes them (no training needed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mbtrain.checkpoint.manager import CheckpointManager
from mbtrain.checkpoint.paths import (
    COMPLETE_MARKER,
    LATEST,
    abandoned_tags,
    latest_complete,
    resume_candidates,
    set_aside,
    tag_for_step,
)


def make(root: Path, step: int, complete: bool = True, when: float | None = None) -> str:
    tag = tag_for_step(step)
    (root / tag).mkdir(parents=True, exist_ok=True)
    (root / tag / "weights.pt").write_bytes(b"x" * step)
    if complete:
        marker = root / tag / COMPLETE_MARKER
        marker.write_text(json.dumps({"step": step}))
        if when is not None:
            os.utime(marker, (when, when))
    return tag


def point_latest(root: Path, tag: str, when: float | None = None) -> None:
    (root / LATEST).write_text(tag)
    if when is not None:
        os.utime(root / LATEST, (when, when))


def test_rollback_abandons_newer_checkpoints(tmp_path):
    t0 = time.time() - 1000
    for i, step in enumerate((100, 150, 200, 250, 300)):
        make(tmp_path, step, when=t0 + i)
    point_latest(tmp_path, tag_for_step(150), when=t0 + 100)  # the user rolled back later
    assert resume_candidates(tmp_path) == [tag_for_step(150), tag_for_step(100)]
    assert latest_complete(tmp_path) == tag_for_step(150)
    assert abandoned_tags(tmp_path) == [tag_for_step(s) for s in (200, 250, 300)]


def test_unpublished_newest_checkpoint_wins(tmp_path):
    """A crash between a marker and the update of `latest`: the newer complete checkpoint was
    finished after `latest` was written, so it is the current lineage's newest."""
    t0 = time.time() - 1000
    make(tmp_path, 100, when=t0)
    point_latest(tmp_path, tag_for_step(100), when=t0 + 1)
    make(tmp_path, 200, when=t0 + 2)
    assert latest_complete(tmp_path) == tag_for_step(200)
    assert abandoned_tags(tmp_path) == []


def test_latest_naming_a_vanished_tag_never_falls_forward(tmp_path):
    t0 = time.time() - 1000
    make(tmp_path, 100, when=t0)
    make(tmp_path, 300, when=t0 + 1)
    point_latest(tmp_path, tag_for_step(200), when=t0 + 50)  # 200 was set aside as corrupt
    assert resume_candidates(tmp_path) == [tag_for_step(100)]


def test_set_aside_renames_out_of_the_tag_namespace(tmp_path):
    make(tmp_path, 100)
    make(tmp_path, 200)
    moved = set_aside(tmp_path, tag_for_step(200), "corrupt")
    assert moved.is_dir() and moved.name.startswith("step00000200.corrupt-")
    assert (moved / "weights.pt").read_bytes() == b"x" * 200  # kept, not deleted
    assert resume_candidates(tmp_path) == [tag_for_step(100)]
    again = set_aside(tmp_path, tag_for_step(100), "corrupt")
    assert again != moved and again.exists()


def test_prune_keeps_the_written_and_the_latest_checkpoint(tmp_path):
    """The reported loss: after a rollback to 150 with keep lowered to 2, saving 150 deleted
    150 itself (pruning kept the newest tags by step: 250 and 300)."""
    t0 = time.time() - 1000
    for i, step in enumerate((100, 150, 200, 250, 300)):
        make(tmp_path, step, when=t0 + i)
    point_latest(tmp_path, tag_for_step(150), when=t0 + 100)
    manager = CheckpointManager(tmp_path, keep=2, rank=0, world_size=1)
    manager._prune(tag_for_step(150))
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    # 150 (just written, named by latest) and 100 (keep=2) stay; newer ones are not pruned
    # (they are set aside as abandoned by the next resume, never deleted).
    assert left == [tag_for_step(s) for s in (100, 150, 200, 250, 300)]
    make(tmp_path, 50, when=t0 - 10)
    manager._prune(tag_for_step(150))
    assert not (tmp_path / tag_for_step(50)).exists()
    assert (tmp_path / tag_for_step(100)).exists() and (tmp_path / tag_for_step(150)).exists()


def test_prune_drops_dead_saves_only_below_the_written_step(tmp_path):
    make(tmp_path, 100)
    make(tmp_path, 120, complete=False)  # killed mid-save
    make(tmp_path, 200)
    make(tmp_path, 220, complete=False)  # a save in flight by... nobody (locked run dir)
    point_latest(tmp_path, tag_for_step(200))
    CheckpointManager(tmp_path, keep=3, rank=0, world_size=1)._prune(tag_for_step(200))
    assert not (tmp_path / tag_for_step(120)).exists()
    assert (tmp_path / tag_for_step(220)).exists()
    assert (tmp_path / tag_for_step(100)).exists()
