"""Parallelism applied from outside the model: topology, tensor and pipeline parallelism.

`apply_parallelism` is the one place where a plain model becomes a parallel one; the model
package never imports torch.distributed. The order of its steps, and why:

1. process groups from the layout (`groups.py`): every later step needs them;
2. tensor parallelism on the full, seeded model: sharded linears slice the full weights, so
   the full model must exist first, and pipeline stages then hold already-sharded blocks;
3. context parallelism (`context.py`) wraps the attention cores of the sharded blocks (so
   its all-to-all splits the heads this tensor rank holds; a ring core inside the Ulysses
   exchange with `parallel.context_ring`, `ring.py`) and replaces the loss module by one
   that computes this rank's share of every sequence;
   or pipeline stages (DeepSpeed `PipelineModule`) over the sharded blocks (the two are
   exclusive: checked at config time);
4. the caller hands the result to `deepspeed.initialize`, which adds ZeRO data parallelism
   (with a pipeline DeepSpeed takes the PipelineModule's grid as its mpu, built from the
   same topology).

Modules: `layout` (the one typed layout object: sizes, derived sizes, checkpoint keys,
checks), `groups` (process groups and the `mpu` DeepSpeed queries), `tensor` (sharded
linears, `apply_tensor_parallel`, the local-model split), `pipeline` (the PipelineModule and
its parameter names), `gather` (full weights of a live engine), `distributed` (process-group
start-up). Reading and writing checkpoint files, resharding included, is `mbtrain.checkpoint`.

Known limits: with a pipeline, DeepSpeed's `train_batch` applies
the update itself, so a non-finite loss stops the run instead of skipping the step, and
ZeRO-0 reports no gradient norm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mbtrain.parallel.config import ParallelConfig
from mbtrain.parallel.layout import ParallelLayout

# torch is imported inside the functions: `mbtrain.parallel.config` and `.layout` are read by
# config validation on login nodes, where importing torch would only slow `mbtrain submit`.
if TYPE_CHECKING:
    from torch import nn

    from mbtrain.parallel.groups import ProcessGroups


def apply_parallelism(
    module: nn.Module, cfg: ParallelConfig, layout: ParallelLayout
) -> tuple[nn.Module, ProcessGroups]:
    """Return (module, groups). All ranks call it (group creation is collective).

    `module` is the LossModule around the model. With a pipeline the result is a
    `PipelineModule`; `groups.deepspeed_mpu()` says what `deepspeed.initialize` gets (nothing
    beside a pipeline, whose grid DeepSpeed uses); the groups still answer the loader's
    data-parallel rank and every other query.
    """
    from mbtrain.parallel.groups import build_process_groups

    groups = build_process_groups(layout)
    model = module.model
    if layout.tensor_enabled:
        from mbtrain.parallel.tensor import apply_tensor_parallel

        apply_tensor_parallel(
            model,
            groups.get_tensor_model_parallel_group(),
            groups.get_tensor_model_parallel_rank(),
            layout.tensor,
            split_local=cfg.split_local,
        )
    if layout.context_enabled:
        from mbtrain.parallel.context import apply_context_parallel

        return apply_context_parallel(module, groups, layout.zero_stage), groups
    if not layout.pipeline_enabled:
        return module, groups
    from mbtrain.parallel.pipeline import build_pipeline_module

    pipe = build_pipeline_module(model, groups.topology)
    _count_stage_params_once(pipe, groups.get_tensor_model_parallel_rank())
    return pipe, groups


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


def grad_norm_sq(module: nn.Module, groups: ProcessGroups) -> float:
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
    if groups.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(sharded, group=groups.get_tensor_model_parallel_group())
    total = local + sharded
    if groups.get_pipe_parallel_world_size() > 1:
        dist.all_reduce(total, group=groups.get_pipe_parallel_group())
    return float(total.item())
