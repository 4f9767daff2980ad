"""The run config: one typed section per component, combined at the top.

Each component owns its config class in its own package and receives only its section (the
model its `ModelConfig`, the loader its `DataConfig`, ...); this module, above them all,
only combines them, as torchtitan's trainer combines its components' configs. Adding a
component means adding its section here and nowhere else in `config/`, which holds the
general machinery only (layers, typing, interpolation, checks).

Stable keys users rely on: `run.dir`, `data.train`, `data.val`, `model.*`, `train.steps`,
`train.seed`, `checkpoint.every`, `parallel.tensor`, `parallel.pipeline`,
`parallel.zero_stage`, `logging.wandb`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbtrain.checkpoint.config import CheckpointConfig
from mbtrain.cluster.config import ClusterConfig
from mbtrain.config.checks import Checks
from mbtrain.config.load import load_typed, problems, save_yaml, to_dict, to_yaml
from mbtrain.data.config import DataConfig
from mbtrain.model.config import ModelConfig
from mbtrain.monitor.config import LoggingConfig
from mbtrain.parallel.config import ParallelConfig
from mbtrain.parallel.layout import ParallelLayout
from mbtrain.train.config import OptimConfig, TrainConfig


@dataclass
class RunSection:
    """Config of the run itself (`run.*`): its name and the directory that holds everything."""

    name: str = "mbtrain"
    """Run name (wandb name, Slurm job name); any text, quoted wherever it is used."""
    dir: str = "runs/${run.name}"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, logs/, slurm/."""

    def validate(self) -> list[str]:
        c = Checks("run")
        c.require(bool(self.name.strip()), "name", "must not be empty")
        c.require(
            "\n" not in self.name and "\x00" not in self.name, "name", "must be one line of text"
        )
        c.require(bool(self.dir.strip()), "dir", "must not be empty")
        return c.errors


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
    """Tensor, pipeline, context and ZeRO data parallelism."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence, retention and resume."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """wandb and MFU settings (metrics.jsonl is always written)."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Slurm resources for `mbtrain submit`."""

    ENV_ALLOWED = ("run.dir", "data.", "checkpoint.resume", "cluster.python")
    """Keys (prefixes end in '.') whose values may come from the environment: paths. Free
    text never may (`config.interpolation`)."""

    PATH_KEYS = ("run.dir", "data.train", "data.val", "data.local_cache", "checkpoint.resume")
    """Local paths a job that runs elsewhere (a Slurm job starts in its run directory) must
    see as absolute (`with_absolute_paths`)."""


def load_config(
    recipe: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """The typed run config: defaults <- recipe (and its bases) <- `key=value` overrides;
    ConfigError listing every problem at once."""
    return load_typed(RunConfig, recipe, overrides)


def check_layout(cfg: RunConfig, world_size: int) -> ParallelLayout:
    """The layout of `cfg` on `world_size` processes, or ConfigError listing every problem:
    the parallel arithmetic (`ParallelLayout.problems`) and the batch arithmetic, before
    anything heavy starts (`train --dry-run` and `submit` run it on the login node)."""
    layout = ParallelLayout.from_config(cfg.parallel, world_size)
    errors = layout.problems(cfg.model)
    tr = cfg.train
    if layout.data:
        derived = tr.global_batch(layout.data)
        if tr.global_batch_size and tr.global_batch_size != derived:
            per = tr.micro_batch_size * layout.data
            hint = (
                f"; set train.grad_accum={tr.global_batch_size // per}"
                if tr.global_batch_size % per == 0
                else ""
            )
            errors.append(
                f"train.global_batch_size ({tr.global_batch_size}) must equal "
                f"train.micro_batch_size ({tr.micro_batch_size}) x train.grad_accum "
                f"({tr.grad_accum}) x data-parallel size ({layout.data}) = {derived}{hint}"
            )
    errors += _window_problems(cfg, layout)
    if errors:
        raise problems(f"invalid parallel layout for {world_size} processes", errors)
    return layout


def _window_problems(cfg: RunConfig, layout: ParallelLayout) -> list[str]:
    """Every scheduled window must be one the model and the layout can run: at most
    model.seq_len, whole patches, and (context parallelism) positions the context ranks
    share evenly; a pipeline passes fixed shapes between stages."""
    sched, model = cfg.train.seq_len_schedule, cfg.model
    if not sched:
        return []
    errors = []
    if layout.pipeline_enabled:
        errors.append("train.seq_len_schedule: not supported with parallel.pipeline (its stages "
                      "pass fixed shapes); use tensor x context x data")  # fmt: skip
    stride = model.patch_size if model.arch == "megabyte" else 1
    pieces = (2 if layout.ring_enabled else 1) * layout.context
    for step, length in sched:
        if length > model.seq_len:
            errors.append(f"train.seq_len_schedule: window {length} (step {step}) is longer "
                          f"than model.seq_len ({model.seq_len}), the longest the run builds for")  # fmt: skip
        elif length % (stride * pieces):
            errors.append(f"train.seq_len_schedule: window {length} (step {step}) must be a "
                          f"multiple of {stride * pieces} (patch size {stride} x {pieces} "
                          "context pieces)")  # fmt: skip
    return errors


def with_absolute_paths(cfg: RunConfig, base: str | os.PathLike = ".") -> RunConfig:
    """`cfg` with its local relative paths (`PATH_KEYS`, `data.mix[*].path`) made absolute
    against `base`; object-store URLs and `checkpoint.resume` words (auto, none) stay."""

    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or not value or "://" in value or value in ("auto", "none"):
            return value
        return str((Path(base) / value).absolute()) if not os.path.isabs(value) else value

    for key in RunConfig.PATH_KEYS:
        section, name = key.split(".")
        owner = getattr(cfg, section)
        setattr(owner, name, absolute(getattr(owner, name)))
    for spec in cfg.data.mix:
        spec["path"] = absolute(spec.get("path"))
    return cfg


config_to_dict = to_dict
config_to_yaml = to_yaml
save_config = save_yaml

__all__ = [
    "RunConfig",
    "RunSection",
    "check_layout",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
    "with_absolute_paths",
]
