"""Config of run monitoring (`logging.*`): metrics.jsonl is always written; wandb is optional."""

from __future__ import annotations

from dataclasses import dataclass

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LoggingConfig:
    wandb: str = "disabled"
    """wandb mode: online, offline (files under the run directory) or disabled."""
    project: str = "mbtrain"
    """wandb project."""
    entity: str = ""
    """wandb entity (team); empty: the default of the logged-in user."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0: measured (CPU) or looked up (known GPUs)."""
    progress_bar: bool = False
    """Show a tqdm progress bar on the console of rank 0 (the log lines are always written)."""

    def validate(self) -> list[str]:
        errors = []
        if self.wandb not in WANDB_MODES:
            errors.append(
                f"logging.wandb: must be one of {', '.join(WANDB_MODES)}; got {self.wandb!r}"
            )
        if self.peak_flops < 0:
            errors.append(f"logging.peak_flops: must be >= 0, got {self.peak_flops}")
        return errors
