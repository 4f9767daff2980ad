"""Parallelism applied from outside the model: topology, tensor and pipeline parallelism.

`apply_parallelism` is the one place where a plain model becomes a parallel one; the model
package never imports torch.distributed. The order of its steps, and why:

1. process groups from the topology (DeepSpeed's grid): every later step needs the groups;
2. tensor parallelism on the full, seeded model: sharded linears slice the full weights, so
   the full model must exist first, and pipeline stages then hold already-sharded blocks;
3. pipeline stages (DeepSpeed `PipelineModule`) over the sharded blocks;
4. the caller hands the result to `deepspeed.initialize`, which adds ZeRO data parallelism
   (with a pipeline DeepSpeed takes the PipelineModule's grid as its mpu, built from the
   same topology).

Modules: `topology` (DeepSpeed topology and grid, the `mpu`), `tensor` (sharded linears,
`apply_tensor_parallel`, the local-model split), `pipeline` (the PipelineModule and its
parameter names), `consolidate` (full weights from a live engine or from any layout's
checkpoint; DeepSpeed's `universal_checkpoint_info`), `reshard` (resume a checkpoint in
another layout), `distributed` (process-group start-up).

Known limits: ZeRO-3 is supported with tensor parallelism for training but not for
resharding or merging its checkpoints; with a pipeline, DeepSpeed's `train_batch` applies
the update itself, so a non-finite loss stops the run instead of skipping the step, and
ZeRO-0 reports no gradient norm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbtrain.parallel.config import ParallelConfig

# torch is imported inside the functions: `mbtrain.parallel.config` is read by config
# validation on login nodes, where importing torch would only slow `mbtrain submit` down.
if TYPE_CHECKING:
    from torch import nn


def apply_parallelism(
    module: nn.Module, cfg: ParallelConfig, layout
) -> tuple[nn.Module, object | None]:
    """Return (module, mpu); mpu is None without model parallelism.

    `module` is the LossModule around the model. With a pipeline the result is a
    `PipelineModule`, and the mpu must not be passed to `deepspeed.initialize` (DeepSpeed
    uses the module's grid); it still answers the data-parallel rank for the data loader.
    """
    if layout.tensor == 1 and layout.pipeline == 1:
        return module, None
    from mbtrain.parallel.tensor import apply_tensor_parallel
    from mbtrain.parallel.topology import build_mpu

    mpu = build_mpu(layout.pipeline, layout.data, layout.tensor)
    model = module.model
    apply_tensor_parallel(
        model,
        mpu.get_tensor_model_parallel_group(),
        mpu.get_tensor_model_parallel_rank(),
        layout.tensor,
        split_local=cfg.split_local,
    )
    if layout.pipeline == 1:
        return module, mpu
    from mbtrain.parallel.pipeline import build_pipeline_module

    pipe = build_pipeline_module(model, mpu.topology)
    _count_stage_params_once(pipe, mpu.get_tensor_model_parallel_rank())
    return pipe, mpu


def _count_stage_params_once(pipe: nn.Module, tp_rank: int) -> None:
    """Make DeepSpeed's ZeRO-0 gradient clipping see every pipeline stage.

    `deepspeed.runtime.utils.clip_grad_norm_` counts a non-sharded parameter only where the
    grid's model-parallel rank is 0, and that rank spans pipeline x tensor: only stage 0
    would count its replicated parameters, so clipping used a norm without the later
    stages. Marking replicated parameters `model_parallel` on tensor rank 0 counts each
    exactly once (ZeRO-1's own norm counts per tensor rank and is unaffected).
    """
    if tp_rank != 0:
        return
    for p in pipe.parameters():
        if not getattr(p, "tensor_model_parallel", False):
            p.model_parallel = True


def is_pipeline(module: nn.Module) -> bool:
    from deepspeed.pipe import PipelineModule

    return isinstance(module, PipelineModule)


def grad_norm_sq(module: nn.Module, mpu: object | None) -> float:
    """Squared global gradient norm of one model replica.

    Sharded parameters are summed over their tensor group; replicated ones are counted once
    (identical on every tensor rank); pipeline stages hold disjoint parameters, so the sum
    runs over the pipeline group too.
    """
    import torch
    import torch.distributed as dist

    params = [p for p in module.parameters() if p.grad is not None]
    device = params[0].grad.device if params else torch.device("cpu")
    # On the gradients' device: NCCL reduces only device tensors.
    local = torch.zeros(1, dtype=torch.float64, device=device)
    sharded = torch.zeros(1, dtype=torch.float64, device=device)
    for p in params:
        sq = p.grad.detach().double().pow(2).sum()
        if getattr(p, "tensor_model_parallel", False):
            sharded += sq
        else:
            local += sq
    if mpu is not None and dist.is_initialized():
        if mpu.get_tensor_model_parallel_world_size() > 1:
            dist.all_reduce(sharded, group=mpu.get_tensor_model_parallel_group())
        total = local + sharded
        if mpu.get_pipe_parallel_world_size() > 1:
            dist.all_reduce(total, group=mpu.get_pipe_parallel_group())
        return float(total.item())
    return float((local + sharded).item())
