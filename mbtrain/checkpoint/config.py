"""Config of checkpointing (`checkpoint.*`)."""

from __future__ import annotations

from dataclasses import dataclass


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
        errors = []
        if self.every < 0:
            errors.append(f"checkpoint.every: must be >= 0, got {self.every}")
        if self.keep < 1:
            errors.append(f"checkpoint.keep: must be >= 1, got {self.keep}")
        if not self.resume:
            errors.append("checkpoint.resume: must be auto, none or a checkpoint path")
        return errors
