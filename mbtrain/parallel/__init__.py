"""Parallelism applied from outside the model: topology, tensor and pipeline parallelism.

`apply_parallelism` is the one place where a plain model becomes a parallel one; the model
package never imports torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from mbtrain.parallel.config import ParallelConfig


def apply_parallelism(module: nn.Module, cfg: ParallelConfig, layout) -> tuple[nn.Module, object | None]:
    """Return (module, mpu) for `deepspeed.initialize`; mpu is None without model parallelism."""
    if cfg.tensor == 1 and cfg.pipeline == 1:
        return module, None
    from mbtrain.errors import ConfigError

    raise ConfigError(
        f"parallel.tensor={cfg.tensor} / parallel.pipeline={cfg.pipeline}: model parallelism is "
        "not available in this build; use parallel.tensor=1 parallel.pipeline=1"
    )


def grad_norm_sq(module: nn.Module, mpu: object | None) -> float:
    """Squared global gradient norm: sharded parameters summed over their tensor group."""
    local = torch.zeros(1, dtype=torch.float64)
    sharded = torch.zeros(1, dtype=torch.float64)
    for p in module.parameters():
        if p.grad is None:
            continue
        sq = p.grad.detach().double().pow(2).sum()
        if getattr(p, "tensor_model_parallel", False):
            sharded += sq.cpu()
        else:
            local += sq.cpu()
    if mpu is not None and dist.is_initialized():
        dist.all_reduce(sharded, group=mpu.get_model_parallel_group())
    return float((local + sharded).item())
