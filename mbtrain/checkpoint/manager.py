"""Saving and loading training checkpoints around DeepSpeed's own.

DeepSpeed writes the weights, optimizer and scheduler (through `DurableCheckpointEngine`:
fsynced zip files, each recorded with its size); `client_state` carries the step, the wandb
run id and the config, and a small per-rank file carries what differs per rank (RNG states,
the data loader's position).

A save publishes in this order, so that at any instant the newest *complete* checkpoint is
whole on disk: every rank writes and fsyncs its files; the ranks agree that every write
succeeded (a full disk on one rank fails the save on all of them, with the previous checkpoint
untouched, instead of hanging the others in a barrier); rank 0 fsyncs the directory, writes
the marker (step, layout, and every file with its size), fsyncs again, then replaces
`latest`. A process killed at any point (even by SIGKILL) resumes from the previous complete
checkpoint. Pruning keeps `keep` checkpoints of the current lineage and never touches the one
just written, the one `latest` names, or anything of a newer step (see `paths.py`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from mbtrain.checkpoint.paths import (
    LATEST,
    atomic_write_text,
    complete_tags,
    is_complete,
    latest_complete,
    named_latest,
    read_marker,
    set_aside,
    step_of_tag,
    tag_for_step,
    write_marker,
)
from mbtrain.checkpoint.serialization import (
    fsync_path,
    install_checkpoint_engine,
    load_torch_file,
    save_torch_file,
)
from mbtrain.errors import CheckpointError

log = logging.getLogger(__name__)


def rank_file(ckpt_dir: Path, rank: int) -> Path:
    return ckpt_dir / f"mbtrain_rank{rank}.pt"


def agree(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (one all_gather_object; [value] without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def first_problem(problems: list[Any]) -> str | None:
    """The first non-empty answer of `agree`, prefixed by the rank that gave it."""
    for rank, p in enumerate(problems):
        if p:
            return p if len(problems) == 1 else f"rank {rank}: {p}"
    return None


class CheckpointManager:
    """Saves complete checkpoints, keeps the last `keep`, finds and checks the one to resume."""

    def __init__(
        self, root: str | Path, keep: int, rank: int, world_size: int, allow_pickle: bool = False
    ):
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self.allow_pickle = allow_pickle

    # ---------------------------------------------------------------- save
    def save(
        self, engine: Any, step: int, client_state: dict, rank_state: dict, info: dict
    ) -> Path:
        tag = tag_for_step(step)
        ckpt_dir = self.root / tag
        problem = None
        if self.rank == 0:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                if ckpt_dir.exists():
                    if is_complete(ckpt_dir):  # an older lineage's: never overwritten in place
                        moved = set_aside(self.root, tag, "replaced")
                        log.info(f"{ckpt_dir} existed: kept as {moved.name}")
                    else:
                        shutil.rmtree(ckpt_dir)  # leftovers of an interrupted save of this step
            except OSError as e:
                problem = f"{ckpt_dir}: {e.strerror or e}"
        self._raise_if(agree(problem), tag)

        durable = install_checkpoint_engine(engine, self.allow_pickle)
        durable.reset()
        engine.save_checkpoint(
            str(self.root), tag=tag, client_state=client_state, save_latest=False
        )
        if durable.error is None:
            path = rank_file(ckpt_dir, self.rank)
            try:
                durable.written[str(path.absolute())] = save_torch_file(rank_state, path)
            except OSError as e:
                durable.error = f"{path}: {e.strerror or e}"
        results = agree((durable.error, durable.written))
        self._raise_if([err for err, _ in results], tag, cleanup=ckpt_dir)

        problem = None
        if self.rank == 0:
            try:
                files = {}
                for _, written in results:
                    for path, size in written.items():
                        rel = Path(path).relative_to(ckpt_dir.absolute())
                        files[str(rel)] = size
                fsync_path(ckpt_dir)
                marker = {
                    "step": step,
                    "time": time.time(),
                    "world_size": self.world_size,
                    **info,
                    "files": dict(sorted(files.items())),
                }
                write_marker(ckpt_dir, marker)
                atomic_write_text(self.root / LATEST, tag)
            except OSError as e:
                problem = f"{e.filename or ckpt_dir}: {e.strerror or e}"
            else:
                self._prune(tag)
        self._raise_if(agree(problem), tag)
        return ckpt_dir

    def _raise_if(self, problems: list[Any], tag: str, cleanup: Path | None = None) -> None:
        problem = first_problem(problems)
        if problem is None:
            return
        if cleanup is not None and self.rank == 0:
            shutil.rmtree(cleanup, ignore_errors=True)  # free the space the partial save took
        latest = latest_complete(self.root)
        kept = (
            f"{self.root / latest} is intact and still the latest"
            if latest
            else "no earlier checkpoint exists"
        )
        raise CheckpointError(f"checkpoint {tag} could not be written ({problem}); {kept}")

    def _prune(self, written: str) -> None:
        """Keep `keep` complete checkpoints up to the one just written; drop dead saves."""
        step = step_of_tag(written) or 0
        protected = {written, named_latest(self.root)}
        older = [
            t
            for t in complete_tags(self.root)
            if (step_of_tag(t) or 0) < step and t not in protected
        ]
        for tag in older[: max(0, len(older) - (self.keep - 1))]:
            shutil.rmtree(self.root / tag, ignore_errors=True)
        # Incomplete directories older than the newest complete one are dead saves.
        for p in self.root.iterdir():
            s = step_of_tag(p.name)
            if p.is_dir() and s is not None and s < step and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)

    # ---------------------------------------------------------------- load
    def latest(self) -> str | None:
        return latest_complete(self.root)

    def load(self, engine: Any, root: Path, tag: str) -> tuple[dict, dict | None]:
        """Load weights/optimizer/scheduler; return (client_state, this rank's state or None).

        The checkpoint must have passed `integrity.checkpoint_problem` on every rank."""
        ckpt_dir = root / tag
        durable = install_checkpoint_engine(engine, self.allow_pickle)
        files = read_marker(ckpt_dir).get("files")
        if isinstance(files, dict):
            durable.listed = {os.path.abspath(ckpt_dir / name) for name in files}
        try:
            load_path, client_state = engine.load_checkpoint(
                str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        finally:
            durable.listed = None
        if load_path is None:
            raise CheckpointError(f"{ckpt_dir}: DeepSpeed could not load this checkpoint")
        return client_state or {}, self.load_rank_state(ckpt_dir, self.rank)

    def load_rank_state(self, ckpt_dir: Path, rank: int) -> dict:
        """The RNG and loader state rank `rank` saved; CheckpointError if it is missing."""
        path = rank_file(ckpt_dir, rank)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: missing (RNG and data position of rank {rank}); resuming without it "
                "would replay data"
            )
        return load_torch_file(path, allow_pickle=self.allow_pickle)
