"""Which checkpoint a starting run continues from.

`checkpoint.resume`:
* `auto`: the newest loadable checkpoint of the current lineage (`layout.resume_candidates`).
  Checkpoints newer than `latest` that a rollback abandoned are renamed aside first, so they
  never come back. Each candidate is checked by every rank (`integrity.py`) before anything is
  loaded; a damaged one (marker unreadable, a file missing, truncated or failing its CRC) is
  renamed aside (`<tag>.corrupt-<time>`, never deleted), one line says so, and the previous
  one is tried. Unsafe content (pickled code) is refused, never skipped: falling back would
  hide it.
* `none`: refuse to start over existing checkpoints.
* a path: exactly that checkpoint (a run, checkpoints or tag directory); a problem is an
  error, not a fallback, since the user asked for that one.

All ranks call `choose_checkpoint` and agree on every decision.
"""

from __future__ import annotations

from pathlib import Path

from mbtrain.checkpoint.config import CheckpointConfig
from mbtrain.checkpoint.integrity import checkpoint_problem
from mbtrain.checkpoint.layout import (
    abandoned_tags,
    resolve_checkpoint,
    resume_candidates,
    set_aside,
)
from mbtrain.checkpoint.manager import CheckpointManager, agree, first_problem
from mbtrain.errors import CheckpointError


def _say(rank: int, text: str) -> None:
    if rank == 0:
        print(f"[mbtrain] {text}", flush=True)


def _agreed_problem(ckpt_dir: Path, rank: int, world: int, allow_pickle: bool):
    """The first problem any rank found in `ckpt_dir` (each checks its share), or None."""
    found = agree(checkpoint_problem(ckpt_dir, rank, world, allow_pickle))
    for p in found:
        if p is not None:
            return p
    return None


def choose_checkpoint(
    ckpt: CheckpointManager, cfg: CheckpointConfig, rank: int, world: int
) -> tuple[Path, str] | None:
    """(checkpoints root, tag) to resume from, or None to start from scratch."""
    root = ckpt.root
    if cfg.resume == "none":
        if resume_candidates(root):
            raise CheckpointError(
                f"{root}: holds checkpoints but checkpoint.resume=none; use "
                "checkpoint.resume=auto to continue, or another run.dir"
            )
        return None
    if cfg.resume != "auto":
        root, tag = resolve_checkpoint(cfg.resume)
        problem = _agreed_problem(root / tag, rank, world, cfg.allow_pickle)
        if problem is not None:
            raise CheckpointError(f"{root / tag}: cannot be loaded: {problem.message}")
        return root, tag

    problem = None
    if rank == 0:
        try:
            for tag in abandoned_tags(root):
                moved = set_aside(root, tag, "abandoned")
                _say(
                    rank, f"{tag} is newer than the checkpoint `latest` names: kept as {moved.name}"
                )
        except OSError as e:
            problem = f"{root}: {e.strerror or e}"
    if (problem := first_problem(agree(problem))) is not None:
        raise CheckpointError(problem)

    tried = []
    for tag in resume_candidates(root):
        problem = _agreed_problem(root / tag, rank, world, cfg.allow_pickle)
        if problem is None:
            if tried:
                _say(rank, f"resuming from {tag} instead ({len(tried)} newer set aside)")
            return root, tag
        if not problem.corrupt:
            raise CheckpointError(f"{root / tag}: refused: {problem.message}")
        note = None
        if rank == 0:
            try:
                note = f"kept aside as {set_aside(root, tag, 'corrupt').name}"
            except OSError as e:
                note = f"could not be set aside ({e.strerror or e})"
        _say(rank, f"checkpoint {root / tag} cannot be loaded ({problem.message}); {note}")
        agree(None)  # every rank waits for the rename before looking at the next candidate
        tried.append(tag)
    if tried:
        raise CheckpointError(
            f"{root}: no loadable checkpoint left ({len(tried)} damaged, set aside as "
            f"<tag>.corrupt-*); run again to start over, or restore one of them"
        )
    return None
