"""Saving and loading training checkpoints around DeepSpeed's own.

DeepSpeed writes the weights, optimizer and scheduler; `client_state` carries the step, the
wandb run id and the config, and a small per-rank file carries what differs per rank (RNG
states, the data loader's position). Completion is published last (see `layout.py`), so a
process killed mid-save (even with SIGKILL) resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mbtrain.checkpoint.layout import (
    LATEST,
    atomic_write_text,
    complete_tags,
    is_complete,
    latest_complete,
    step_of_tag,
    tag_for_step,
    write_marker,
)
from mbtrain.errors import CheckpointError


def rank_file(ckpt_dir: Path, rank: int) -> Path:
    return ckpt_dir / f"mbtrain_rank{rank}.pt"


class CheckpointManager:
    """Saves complete checkpoints, keeps the last `keep`, finds the one to resume."""

    def __init__(self, root: str | Path, keep: int, rank: int, world_size: int):
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size

    def save(
        self, engine: Any, step: int, client_state: dict, rank_state: dict, info: dict
    ) -> Path:
        tag = tag_for_step(step)
        ckpt_dir = self.root / tag
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if ckpt_dir.exists() and not is_complete(ckpt_dir):
                shutil.rmtree(ckpt_dir)  # leftovers of an interrupted save of this same step
        dist.barrier()
        engine.save_checkpoint(
            str(self.root), tag=tag, client_state=client_state, save_latest=False
        )
        path = rank_file(ckpt_dir, self.rank)
        tmp = path.with_suffix(".tmp")
        torch.save(rank_state, tmp)
        os.replace(tmp, path)
        dist.barrier()  # every rank's shards are on disk before completion is published
        if self.rank == 0:
            write_marker(
                ckpt_dir, {"step": step, "time": time.time(), "world_size": self.world_size, **info}
            )
            atomic_write_text(self.root / LATEST, tag)
            self._prune(step)
        dist.barrier()
        return ckpt_dir

    def _prune(self, newest_step: int) -> None:
        tags = complete_tags(self.root)
        for tag in tags[: max(0, len(tags) - self.keep)]:
            shutil.rmtree(self.root / tag, ignore_errors=True)
        # Incomplete directories older than the newest complete one are dead saves.
        for p in self.root.iterdir():
            s = step_of_tag(p.name)
            if p.is_dir() and s is not None and s < newest_step and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> str | None:
        return latest_complete(self.root)

    def load(self, engine: Any, root: Path, tag: str) -> tuple[dict, dict | None]:
        """Load weights/optimizer/scheduler; return (client_state, this rank's state or None)."""
        ckpt_dir = root / tag
        if not is_complete(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: checkpoint is incomplete and cannot be loaded")
        load_path, client_state = engine.load_checkpoint(
            str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise CheckpointError(f"{ckpt_dir}: DeepSpeed could not load this checkpoint")
        path = rank_file(ckpt_dir, self.rank)
        rank_state = torch.load(path, weights_only=False) if path.is_file() else None
        return client_state or {}, rank_state
