"""What a checkpoint carries beyond DeepSpeed's own state."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    step: int = 0
    """Optimizer steps completed."""
    bytes_seen: int = 0
    """Training bytes (unmasked positions) consumed, over all data-parallel ranks."""
    wandb_id: str = ""
    """wandb run id, so that a resumed run continues the same wandb run."""
    elapsed_s: float = 0.0
    """Training wall time before this process started."""
    nonfinite_skips: int = 0
    """Consecutive steps skipped for a non-finite loss."""

    def to_dict(self) -> dict:
        return asdict(self)

    def update_from(self, d: dict) -> None:
        """Take the saved values (in place: the policy and the loop hold this object)."""
        for f in fields(self):
            if f.name in d:
                setattr(self, f.name, d[f.name])
