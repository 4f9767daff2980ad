"""Which checkpoint a starting run continues from, whether it can, and loading it.

Planning comes first and changes nothing (`plan_resume`, `check_resumable`): every check a
resume can fail (a damaged checkpoint, another architecture, another dataset, a layout that
must not be resharded, `checkpoint.resume=none`) is a one-line error before the run directory
is touched, so the unchanged requeue command keeps working once the cause is fixed. Only
then does the plan rename what it decided to set aside (`ResumePlan.apply`), and the
engine loads it (`load_resume`).

`checkpoint.resume`:
* `auto`: the newest loadable checkpoint of the current lineage (`paths.resume_candidates`).
  Checkpoints newer than `latest` that a rollback abandoned are set aside, so they never come
  back. Each candidate is checked by every rank (`integrity.py`) before anything is loaded;
  a damaged one (marker unreadable, a file missing, truncated or failing its CRC) is set
  aside (`<tag>.corrupt-<time>`, never deleted), one line says so, and the previous one is
  used. Unsafe content (pickled code) is refused, never skipped: falling back would hide it.
* `none`: refuse to start over existing checkpoints.
* a path: exactly that checkpoint (a run, checkpoints or tag directory); a problem is an
  error, not a fallback, since the user asked for that one.

All ranks plan and agree on every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbtrain.checkpoint.config import CheckpointConfig
from mbtrain.checkpoint.integrity import checkpoint_problem
from mbtrain.checkpoint.manager import CheckpointManager, agree, first_problem
from mbtrain.checkpoint.paths import (
    abandoned_tags,
    read_marker,
    resolve_checkpoint,
    resume_candidates,
    set_aside,
)
from mbtrain.checkpoint.reshard import load_resharded
from mbtrain.data.config import DataConfig
from mbtrain.data.splits import describe_identity_change
from mbtrain.errors import CheckpointError
from mbtrain.model import ModelConfig
from mbtrain.parallel import ParallelLayout
from mbtrain.train.config import OptimConfig
from mbtrain.train.engine import TrainEngine
from mbtrain.train.optim import apply_hyperparameters, apply_schedule
from mbtrain.train.rng import load_rng_state
from mbtrain.train.state import TrainState


@dataclass
class ResumePlan:
    """The checkpoint to continue from, and what to set aside before loading it."""

    root: Path
    tag: str
    info: dict
    """Its marker (step, layout, model, `dataset` identity, files)."""
    set_aside: list[tuple[str, str]] = field(default_factory=list)
    """(tag, why) renamed aside by `apply`: abandoned by a rollback, or damaged."""
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.root / self.tag

    def apply(self, rank: int, say) -> None:
        """Rename what the plan set aside (rank 0), say why; every rank waits for it."""
        problem = None
        if rank == 0:
            try:
                for tag, why in self.set_aside:
                    moved = set_aside(self.root, tag, why)
                    say(f"checkpoint {self.root / tag} set aside as {moved.name} ({why})")
            except OSError as e:
                problem = f"{self.root}: {e.strerror or e}"
            for note in self.notes:
                say(note)
        if (problem := first_problem(agree(problem))) is not None:
            raise CheckpointError(problem)


def _agreed_problem(ckpt_dir: Path, rank: int, world: int, allow_pickle: bool):
    """The first problem any rank found in `ckpt_dir` (each checks its share), or None."""
    for p in agree(checkpoint_problem(ckpt_dir, rank, world, allow_pickle)):
        if p is not None:
            return p
    return None


def plan_resume(
    root: Path, cfg: CheckpointConfig, rank: int, world: int, check_files: bool = True
) -> ResumePlan | None:
    """The checkpoint to resume from (None: start from scratch); nothing is renamed yet.
    `check_files=False` (a dry run) reads markers only."""
    if cfg.resume == "none":
        if resume_candidates(root):
            raise CheckpointError(
                f"{root}: holds checkpoints but checkpoint.resume=none; use "
                "checkpoint.resume=auto to continue, or another run.dir"
            )
        return None
    if cfg.resume != "auto":
        root, tag = resolve_checkpoint(cfg.resume)
        problem = (
            _agreed_problem(root / tag, rank, world, cfg.allow_pickle) if check_files else None
        )
        if problem is not None:
            raise CheckpointError(f"{root / tag}: cannot be loaded: {problem.message}")
        return ResumePlan(root, tag, read_marker(root / tag))
    aside = [(tag, "abandoned") for tag in abandoned_tags(root)]
    notes = [f"{tag} is newer than the checkpoint `latest` names: set aside" for tag, _ in aside]
    for tag in resume_candidates(root):
        problem = (
            _agreed_problem(root / tag, rank, world, cfg.allow_pickle) if check_files else None
        )
        if problem is None:
            if any(why == "corrupt" for _, why in aside):
                notes.append(f"resuming from {tag} instead (newer ones are damaged)")
            return ResumePlan(root, tag, read_marker(root / tag), aside, notes)
        if not problem.corrupt:
            raise CheckpointError(f"{root / tag}: refused: {problem.message}")
        notes.append(f"checkpoint {root / tag} cannot be loaded ({problem.message})")
        aside.append((tag, "corrupt"))
    if any(why == "corrupt" for _, why in aside):
        damaged = ", ".join(tag for tag, why in aside if why == "corrupt")
        raise CheckpointError(
            f"{root}: no loadable checkpoint left ({damaged} damaged); move them away to "
            "start over, or restore one of them"
        )
    return None


def check_resumable(
    plan: ResumePlan,
    model: ModelConfig,
    data: DataConfig,
    layout: ParallelLayout,
    reshard: bool,
    data_identity: dict,
) -> bool:
    """Refuse a checkpoint this run cannot continue from, with one line naming what differs.
    Returns whether the training data starts from its beginning (`data.on_change=restart`
    after the data changed) instead of the saved position."""
    changes = model.architecture_changes(plan.info.get("model") or {})
    if changes:
        raise CheckpointError(
            f"{plan.path}: saved with another model ({'; '.join(changes)}): set the saved "
            "values to continue this run, or use another run.dir for a new one"
        )
    if layout.differs_from(plan.info):
        saved = layout.describe_saved(plan.info)
        if not reshard:
            raise CheckpointError(
                f"{plan.path}: saved with another layout ({saved}); set checkpoint.reshard=true "
                "to convert it, or run with the saved layout"
            )
    saved_data = plan.info.get("dataset")
    change = describe_identity_change(saved_data, data_identity) if saved_data else None
    if change is None:
        return False
    if data.on_change != "restart":
        raise CheckpointError(
            f"{plan.path}: its data position belongs to other data ({change}); set "
            "data.on_change=restart to train on this data from its beginning, or point "
            "data.train back at the saved dataset"
        )
    return True


def load_resume(
    plan: ResumePlan,
    te: TrainEngine,
    manager: CheckpointManager,
    ckpt_cfg: CheckpointConfig,
    optim_cfg: OptimConfig,
    state: TrainState,
    train_loader: Any,
    restart_data: bool,
    say,
) -> None:
    """Weights, optimizer, scheduler, step, RNG and (unless `restart_data`) the loader's
    position, from the planned checkpoint into the built engine."""
    if te.layout.differs_from(plan.info):
        say(f"resharding {plan.path} (saved with {te.layout.describe_saved(plan.info)})")
        client = load_resharded(
            te.engine, plan.root, plan.tag, plan.info, te.model_cfg, te.layout, te.groups, ckpt_cfg
        )
        # Per-rank files belong to the old ranks. Every rank draws from identically seeded
        # generators and the loader position is global (streaming resumes at another
        # data-parallel size), so rank 0's state continues the run for every new rank.
        rank_state = manager.load_rank_state(plan.path, 0)
    else:
        client, rank_state = manager.load(te.engine, plan.root, plan.tag)
    # This config's schedule over the restored step count: a resumed run follows what its
    # config says now (a longer train.steps, another peak lr).
    if te.engine.lr_scheduler is not None:
        for old, new in apply_schedule(te.engine.lr_scheduler, optim_cfg)[:1]:
            say(f"resume: peak lr {old:g} -> {new:g} (optim.lr)")
    for line in apply_hyperparameters(te.engine.optimizer, optim_cfg):
        say(f"resume: {line}")
    state.update_from(client.get("mbtrain", {}))
    load_rng_state(rank_state["rng"])
    if restart_data:
        say("resume: the training data changed since this checkpoint; it starts from its beginning")
    elif rank_state.get("loader") is not None:
        train_loader.load_state_dict(rank_state["loader"])
    say(f"resumed from {plan.path} at step {state.step}")
