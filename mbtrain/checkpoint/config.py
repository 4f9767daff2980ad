"""Config of checkpointing (`checkpoint.*`)."""

from __future__ import annotations

from dataclasses import dataclass

from mbtrain.config.checks import Checks


@dataclass
class CheckpointConfig:
    every: int = 1000
    """Save every N steps (also at the end and on a signal); 0: only at the end and on signal."""
    keep: int = 3
    """Complete checkpoints to keep (older ones are deleted once a newer one is complete)."""
    resume: str = "auto"
    """auto (latest in the run directory, if any), none (refuse if checkpoints exist) or a path."""
    reshard: bool = True
    """Resume a checkpoint saved with another parallel layout (mbtrain's own resharding)."""
    allow_pickle: bool = False
    """Unpickle arbitrary objects from checkpoint files: only for checkpoints you wrote yourself
    with an older mbtrain (which pickled numpy arrays); by default only data is loaded."""

    def validate(self) -> list[str]:
        c = Checks("checkpoint")
        c.at_least("every", self.every, 0)
        c.at_least("keep", self.keep, 1)
        c.require(bool(self.resume), "resume", "must be auto, none or a checkpoint path")
        return c.errors
