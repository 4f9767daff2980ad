"""Full, unsharded float32 weights of a live engine, gathered to rank 0 (export at the end of
training). Sharded tensors are concatenated along their split dimension in tensor-rank order
(`tensor.merge_shards`); the names are the plain model's (`pipeline.plain_param_name`).
Reading a checkpoint's files instead is `mbtrain.checkpoint.shards`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

from mbtrain.model.config import ModelConfig
from mbtrain.parallel.groups import ProcessGroups
from mbtrain.parallel.layout import ParallelLayout
from mbtrain.parallel.pipeline import plain_param_name
from mbtrain.parallel.tensor import merge_shards


def local_plain_state(
    engine: Any, model_cfg: ModelConfig, layout: ParallelLayout
) -> dict[str, torch.Tensor]:
    """This rank's parameters (its tensor shard, its stage) as float32 CPU, plain names.

    All ranks of a data-parallel group must call it (ZeRO gathers are collective).
    """
    module = engine.module
    zero = layout.zero_stage
    params = dict(module.named_parameters())
    by_id = {id(p): n for n, p in params.items()}
    full: dict[str, torch.Tensor] = {}
    if zero == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
            for n, p in params.items():
                full[n] = p.detach().float().cpu().clone()
    elif zero in (1, 2):
        from deepspeed.utils import safe_get_full_fp32_param

        for n, p in params.items():  # same order on every data-parallel rank
            full[n] = safe_get_full_fp32_param(p).detach().float().cpu().clone()
    else:
        for n, p in params.items():
            full[n] = p.detach().float().cpu().clone()
    # Tied weights appear once in named_parameters, under every name in state_dict.
    for key, t in module.state_dict(keep_vars=True).items():
        if key not in full and id(t) in by_id:
            full[key] = full[by_id[id(t)]]
    return {
        plain_param_name(k, layout.pipeline_enabled, model_cfg.stage_blocks): v
        for k, v in full.items()
    }


def consolidated_state_dict(
    engine: Any, model_cfg: ModelConfig, layout: ParallelLayout, groups: ProcessGroups
) -> dict[str, torch.Tensor]:
    """Full float32 state dict of the plain model on rank 0 ({} elsewhere); all ranks call.

    Each shard is taken from the first of the ranks that hold it (replica rank 0)."""
    state = local_plain_state(engine, model_cfg, layout)
    tp_rank = groups.get_tensor_model_parallel_rank()
    mine = (tp_rank, state) if groups.replica_rank == 0 else None
    world = dist.get_world_size()
    gathered = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if dist.get_rank() != 0:
        return {}
    shards: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    for item in gathered:
        if item is None:
            continue
        rank, part = item
        for k, v in part.items():
            shards[k][rank] = v
    return {k: merge_shards(k, [v[r] for r in sorted(v)]) for k, v in shards.items()}
