"""The run config: one typed section per component, composed.

Each component owns its config class in its own package and receives only that section;
this module only composes them. Stable keys users rely on: `run.dir`, `data.train`,
`data.val`, `model.*`, `train.steps`, `train.seed`, `checkpoint.every`, `parallel.tensor`,
`parallel.pipeline`, `parallel.zero_stage`, `logging.wandb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbtrain.checkpoint.config import CheckpointConfig
from mbtrain.cluster.config import ClusterConfig
from mbtrain.config.run import RunSection
from mbtrain.data.config import DataConfig
from mbtrain.model.config import ModelConfig
from mbtrain.monitor.config import LoggingConfig
from mbtrain.parallel.config import ParallelConfig
from mbtrain.train.config import OptimConfig, TrainConfig


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    """Run name and directory."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The MegaByte (or baseline) architecture."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation datasets."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop: steps, batch, precision, evaluation."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Tensor, pipeline and ZeRO data parallelism."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence, retention and resume."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """wandb and MFU settings (metrics.jsonl is always written)."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Slurm resources for `mbtrain submit`."""

    SECTIONS = (
        "run",
        "model",
        "data",
        "optim",
        "train",
        "parallel",
        "checkpoint",
        "logging",
        "cluster",
    )
