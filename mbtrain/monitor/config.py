"""Config of run monitoring (`logging.*`): metrics.jsonl and samples.jsonl are always written;
wandb and TensorBoard are optional."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from mbtrain.config.checks import Checks

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LoggingConfig:
    wandb: str = "disabled"
    """wandb mode: online, offline (files under the run directory) or disabled."""
    project: str = "mbtrain"
    """wandb project."""
    entity: str = ""
    """wandb entity (team); empty: the default of the logged-in user."""
    tensorboard: bool = False
    """Also write TensorBoard event files under <run_dir>/tensorboard/ (every metrics row's
    numbers as scalars, evaluation samples as text, on the training-step axis)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0: measured (CPU) or looked up (known GPUs)."""
    progress_bar: bool = False
    """Show a tqdm progress bar on the console of rank 0 (the log lines are always written)."""

    def validate(self) -> list[str]:
        c = Checks("logging")
        c.one_of("wandb", self.wandb, WANDB_MODES)
        c.at_least("peak_flops", self.peak_flops, 0)
        # Found now, not at the first row of a run that waited hours in the queue.
        c.require(
            not self.tensorboard or importlib.util.find_spec("tensorboard") is not None,
            "tensorboard",
            "true needs the tensorboard package (pip install tensorboard), which is not installed",
        )
        return c.errors
