"""Every check a run can fail, before anything is built or written.

In order: the layout arithmetic (world size, heads, layers, batch), the datasets (each split
exists, is complete and was prepared at the model's seq_len or longer), and the resume plan
(which checkpoint, whether this config can continue from it). Nothing here writes: the run
directory changes only after every rank passed every check (`setup.py`), so a refused start
leaves a requeue command that works again once the cause is fixed. `train --dry-run` runs the
same checks on the login node (with markers only, no checkpoint file is read).

With several ranks each runs the checks and the ranks agree on the outcome: one rank that
cannot see a dataset stops all of them with its message, instead of leaving the others
waiting in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mbtrain import errors
from mbtrain.checkpoint.manager import agree
from mbtrain.data.splits import check_data
from mbtrain.errors import MbtrainError
from mbtrain.parallel import ParallelLayout
from mbtrain.train.resume import ResumePlan, check_resumable, plan_resume
from mbtrain.train.run_config import RunConfig, check_layout

T = TypeVar("T")


@dataclass
class Preflight:
    layout: ParallelLayout
    data_identity: dict
    """What the training loader reads (`data.splits.data_identity`), recorded in checkpoints."""
    resume: ResumePlan | None
    """The checkpoint to continue from; None starts a new run."""
    restart_data: bool = False
    """The data changed since the checkpoint and `data.on_change=restart`."""


def checkpoints_root(cfg: RunConfig) -> Path:
    return Path(cfg.run.dir) / "checkpoints"


def preflight(
    cfg: RunConfig, world_size: int, rank: int = 0, check_files: bool = True
) -> Preflight:
    """Raise the first problem (agreed by every rank) or return what the run will do."""
    layout = agreed(lambda: check_layout(cfg, world_size))
    identity = agreed(lambda: check_data(cfg.data, cfg.model.seq_len))
    plan = agreed(
        lambda: plan_resume(checkpoints_root(cfg), cfg.checkpoint, rank, world_size, check_files)
    )
    restart = False
    if plan is not None:
        restart = agreed(
            lambda: check_resumable(
                plan, cfg.model, cfg.data, layout, cfg.checkpoint.reshard, identity
            )
        )
    return Preflight(layout, identity, plan, restart)


def agreed(check: Callable[[], T]) -> T:
    """`check()` on every rank; if any rank raised a user error, every rank raises it."""
    try:
        result: Any = check()
        mine = None
    except MbtrainError as e:
        result, mine = None, e
    problems = agree(None if mine is None else (type(mine).__name__, str(mine)))
    if mine is not None:
        raise mine
    for rank, problem in enumerate(problems):
        if problem is not None:
            name, message = problem
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, MbtrainError)):
                cls = MbtrainError
            raise cls(f"rank {rank}: {message}")
    return result
