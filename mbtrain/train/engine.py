"""Building the training engine: the seeded model, parallelism, optimizer, DeepSpeed.

The order, and why:
1. seed, then build the model: the same seed on every rank gives identical initial weights,
   so a TP/ZeRO run starts from exactly the model a single process would build;
2. parallelism from outside (`mbtrain.parallel.apply_parallelism`: groups, tensor shards,
   context spans or pipeline stages), then `torch.compile` per block if asked (after the
   blocks were rewritten: one graph serves every block of a stack);
3. the optimizer over the final parameters, asking the non-finite policy before each update;
4. DeepSpeed (ZeRO, precision, clipping, accumulation from the generated config); ZeRO-3 with
   context parallelism partitions first, over data x context (`parallel.context`);
5. a second seed for dropout: different streams per data-parallel rank would be fine, but
   identical ones keep runs reproducible across layouts (sharded regions fork their own).

DeepSpeed owns gradient accumulation: every micro-batch goes through `engine.backward` and
`engine.step`, and the update happens at the accumulation boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import deepspeed
import torch
import torch.distributed as dist

from mbtrain.checkpoint.shards import name_param_groups
from mbtrain.model import ModelConfig, build_model
from mbtrain.parallel import ParallelConfig, ParallelLayout, apply_parallelism
from mbtrain.parallel.context import partition_zero3
from mbtrain.parallel.distributed import DistEnv
from mbtrain.parallel.groups import ProcessGroups
from mbtrain.train.config import OptimConfig, TrainConfig
from mbtrain.train.ds_config import build_deepspeed_config
from mbtrain.train.module import LossModule
from mbtrain.train.optim import SkipQuestion, build_optimizer, build_scheduler
from mbtrain.train.rng import seed_everything


@dataclass
class TrainEngine:
    """The DeepSpeed engine of a run and what it was built from."""

    engine: Any
    """DeepSpeedEngine, or PipelineEngine with a pipeline."""
    optimizer: torch.optim.Optimizer
    layout: ParallelLayout
    groups: ProcessGroups
    env: DistEnv
    model_cfg: ModelConfig

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def pipeline(self) -> bool:
        return self.layout.pipeline_enabled

    @property
    def model(self) -> torch.nn.Module:
        """The plain MegaByte (or baseline) model inside the engine's wrappers."""
        module = self.engine.module
        return module.model if hasattr(module, "model") else module

    @property
    def dp_rank(self) -> int:
        """Index of this rank's data-parallel replica: its share of the samples."""
        return self.groups.data_rank

    def comm_device(self) -> torch.device:
        # NCCL reduces only GPU tensors; gloo only CPU ones.
        return self.device if self.env.backend == "nccl" else torch.device("cpu")

    def all_reduce(self, values: list[float]) -> list[float]:
        """Sums of `values` over every rank (float64, one collective)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def all_reduce_max(self, values: list[float]) -> list[float]:
        """Maxima of `values` over every rank."""
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.cpu().tolist()

    def broadcast(self, value: float, src: int = 0) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.comm_device())
        dist.broadcast(t, src=src)
        return float(t.item())


def build_engine(
    model_cfg: ModelConfig,
    parallel_cfg: ParallelConfig,
    train_cfg: TrainConfig,
    optim_cfg: OptimConfig,
    layout: ParallelLayout,
    env: DistEnv,
    should_skip: SkipQuestion | None = None,
) -> TrainEngine:
    """All ranks call it (group creation and DeepSpeed's start-up are collective)."""
    seed_everything(train_cfg.seed)
    model = build_model(model_cfg)
    module, groups = apply_parallelism(LossModule(model), parallel_cfg, layout)
    if train_cfg.compile:
        for stack in (model.global_model, getattr(model, "local_model", None)):
            for block in stack.blocks if stack is not None else ():
                block.compile()
    optimizer = build_optimizer(module, optim_cfg, should_skip)
    # Parameter names saved with the optimizer state: resharding a ZeRO-0 checkpoint
    # matches Adam moments to parameters by name (mbtrain.checkpoint.reshard).
    name_param_groups(optimizer, module)
    scheduler = build_scheduler(optimizer, optim_cfg, train_cfg.steps)
    ds_config = build_deepspeed_config(train_cfg, optim_cfg, layout)
    if layout.zero_stage == 3 and layout.context_enabled:
        partition_zero3(module, groups, ds_config)
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config,
        mpu=groups.deepspeed_mpu(),
        dist_init_required=False,
    )
    seed_everything(train_cfg.seed + 1)
    return TrainEngine(engine, optimizer, layout, groups, env, model_cfg)
