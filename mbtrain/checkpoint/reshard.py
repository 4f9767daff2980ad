"""Resume a checkpoint saved with another parallel layout (any axis sizes, another ZeRO stage).

This is mbtrain's own resharding, not DeepSpeed's universal checkpoint: `ds_to_universal`
needs `universal_checkpoint_info` in the checkpoint and handles neither ZeRO-0 checkpoints
nor the rename between a plain module and a PipelineModule, and DeepSpeed's universal load
fails across ZeRO stages. Here every layout reads into one layout-free form
(`shards.read_full_checkpoint`: full fp32 weights and Adam moments keyed by the plain
model's names, plus the step, scheduler and client state), and the current engine takes
its slice of each tensor (`tensor.shard_of`) through DeepSpeed's fragment API
(`safe_set_full_fp32_param` / `safe_set_full_optimizer_state`) at ZeRO-1/2/3 (ZeRO-3: and its
partition of the weights themselves), or directly at ZeRO-0. Whether a checkpoint needs this is the layout's answer
(`ParallelLayout.differs_from`, the keys its marker records).

Weights, moments, step and scheduler are restored exactly, so the first resumed loss and
the following updates equal those of the original layout. Per-rank state (RNG, data-loader
position) belongs to the old ranks; the caller decides what to do with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mbtrain.checkpoint.config import CheckpointConfig
from mbtrain.checkpoint.shards import read_full_checkpoint
from mbtrain.model.config import ModelConfig
from mbtrain.parallel.groups import ProcessGroups
from mbtrain.parallel.layout import ParallelLayout
from mbtrain.parallel.pipeline import plain_param_name
from mbtrain.parallel.tensor import shard_of

# Keys of a DeepSpeed model-states file that are DeepSpeed's own (the rest is client state).
_DS_KEYS = {
    "module",
    "buffer_names",
    "optimizer",
    "param_shapes",
    "frozen_param_shapes",
    "shared_params",
    "frozen_param_fragments",
    "lr_scheduler",
    "data_sampler",
    "random_ltd",
    "sparse_tensor_module_names",
    "skipped_steps",
    "global_steps",
    "global_samples",
    "dp_world_size",
    "mp_world_size",
    "ds_config",
    "ds_version",
}


def load_resharded(
    engine: Any,
    root: Path,
    tag: str,
    info: dict,
    model_cfg: ModelConfig,
    layout: ParallelLayout,
    groups: ProcessGroups,
    ckpt_cfg: CheckpointConfig,
) -> dict:
    """Load checkpoint root/tag (any layout) into `engine`; return its client state.

    All ranks call it. Replaces `engine.load_checkpoint` when `layout.differs_from(info)`.
    """
    full = read_full_checkpoint(Path(root), tag, info, model_cfg, ckpt_cfg.allow_pickle)
    module = engine.module
    pipeline = layout.pipeline_enabled
    tp_rank = groups.get_tensor_model_parallel_rank()
    tp_size = groups.get_tensor_model_parallel_world_size()
    zero = layout.zero_stage
    have_optim = bool(full.optim)

    if zero in (1, 2) and have_optim:
        _init_flat_states(engine.optimizer, full.step)
    if zero == 3 and have_optim:
        _init_zero3_states(engine.optimizer, full.step)
    for name, p in module.named_parameters():
        plain = plain_param_name(name, pipeline, model_cfg.stage_blocks)
        w = shard_of(plain, full.weights[plain], tp_rank, tp_size)
        moments = {}
        if have_optim:
            moments = {
                k: shard_of(plain, v, tp_rank, tp_size) for k, v in full.optim[plain].items()
            }
        if zero == 0:
            _set_zero0(engine.optimizer, p, w, moments, full.step)
        elif zero == 3:
            _set_zero3(p, w, moments)
        else:
            _set_zero(p, w, moments, zero)

    states = full.states
    if engine.lr_scheduler is not None and states.get("lr_scheduler") is not None:
        sched = engine.lr_scheduler
        sched.load_state_dict(states["lr_scheduler"])
        # The groups' current lr lives in the optimizer state, which is not loaded as such:
        # set it from the scheduler, as the next update would have used it.
        for group, lr in zip(sched.optimizer.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    engine.global_steps = int(states.get("global_steps", 0))
    engine.global_samples = int(states.get("global_samples", 0))
    engine.skipped_steps = int(states.get("skipped_steps", 0))
    return {k: v for k, v in states.items() if k not in _DS_KEYS}


def _set_zero0(
    optimizer: Any, p: torch.nn.Parameter, w: torch.Tensor, moments: dict, step: int
) -> None:
    with torch.no_grad():
        p.copy_(w.to(p.dtype))
    if moments:
        optimizer.state[p] = {
            "step": torch.tensor(float(step)),
            **{k: v.to(p.device, torch.float32).clone() for k, v in moments.items()},
        }


def _set_zero(p: torch.nn.Parameter, w: torch.Tensor, moments: dict, zero: int) -> None:
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    device = p.device
    if zero != 3:
        with torch.no_grad():
            p.copy_(w.to(p.dtype))  # the model's (low-precision) copy
    safe_set_full_fp32_param(p, w.to(device, torch.float32))
    for key, v in moments.items():
        safe_set_full_optimizer_state(p, v.to(device, torch.float32), key)


def _set_zero3(p: torch.nn.Parameter, w: torch.Tensor, moments: dict) -> None:
    """ZeRO-3: this rank's partition of the fp32 master, of the Adam moments and of the
    weights the forward gathers (`ds_tensor`; the engine copies masters into it only after an
    update, and the first resumed forward must already see the loaded weights)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    device = p.ds_tensor.device
    safe_set_full_fp32_param(p, w.to(device, torch.float32))
    for key, v in moments.items():
        safe_set_full_optimizer_state(p, v.to(device, torch.float32), key)
    part = p.ds_tensor.numel()
    rank = torch.distributed.get_rank(group=p.ds_process_group)
    flat = w.flatten()[rank * part : (rank + 1) * part]
    with torch.no_grad():
        p.ds_tensor.zero_()
        p.ds_tensor[: flat.numel()].copy_(flat.to(p.ds_tensor.dtype))


def _init_zero3_states(ds_optimizer: Any, step: int) -> None:
    """ZeRO-3 keeps one Adam state per flat fp32 sub-group partition, created at the first
    update: create it (filled per parameter next), with the checkpoint's step count."""
    base = ds_optimizer.optimizer
    # Not base.param_groups: ZeRO-3 puts its partitions there only for the time of a step.
    for flat in ds_optimizer.fp32_partitioned_groups_flat:
        state = base.state[flat]
        state["step"] = torch.tensor(float(step))
        for key in ("exp_avg", "exp_avg_sq"):
            state.setdefault(key, torch.zeros_like(flat))


def _init_flat_states(ds_optimizer: Any, step: int) -> None:
    """ZeRO-1/2 keep one Adam state per flat fp32 partition, created lazily at the first
    step: create it (the moments are filled in per parameter next) and link DeepSpeed's
    per-parameter views of it, so `safe_set_full_optimizer_state` can write them."""
    base = ds_optimizer.optimizer
    for flat in ds_optimizer.single_partition_of_fp32_groups:
        state = base.state[flat]
        state["step"] = torch.tensor(float(step))
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in state:
                state[key] = torch.zeros_like(flat)
    ds_optimizer._hp_optimizer_states_linked = False
    ds_optimizer._lazy_init_hp_params_optimizer_state()
