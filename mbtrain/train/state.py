"""What a checkpoint carries beyond DeepSpeed's own state."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
