"""The pipeline's step and evaluation loss: DeepSpeed's `train_batch` / `eval_batch`.

`train_batch` owns the micro-batch schedule and runs forward, backward and update in one
call, so the loss reaches the loop only after the update: the non-finite policy checks the
gradients from inside the update instead (`NonFinitePolicy.check_gradients`, set at ZeRO-0
and in bf16; ZeRO-1 in fp32 skips an update with invalid gradients by itself, and the policy
then applies to that skip). Every stage
reads the same batches from its loader (same data-parallel rank), so the stages agree; the
engine feeds x to the first stage and (x, mask) to the last.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist

from mbtrain.train.engine import TrainEngine
from mbtrain.train.nonfinite import NonFinitePolicy
from mbtrain.train.step import StepResult, fetch_step


def train_step(
    te: TrainEngine, batches: Iterator[dict], accum: int, policy: NonFinitePolicy
) -> StepResult:
    engine = te.engine
    micro_batches = fetch_step(te, batches, accum, doc_mask=False)
    count = sum(float(mask.sum().item()) for _, mask, _ in micro_batches)
    skipped_before = engine.skipped_steps
    policy.begin_update()  # decided by the first step() call inside train_batch
    # Mean loss over the micro-batches and the data-parallel replicas, on every stage.
    loss = float(engine.train_batch(iter([(x, (x, mask)) for x, mask, _ in micro_batches])))
    skipped = policy.end_update(engine.skipped_steps > skipped_before)
    if not skipped and not torch.isfinite(torch.tensor(loss)):
        policy.finite_loss_applied(loss)
    total_loss, total_count = te.all_reduce([loss * accum, count])
    reported = engine.get_global_grad_norm()
    return StepResult(
        loss=total_loss / (accum * te.env.world_size),
        bytes=total_count / te.layout.ranks_per_sample,
        grad_norm=None if reported is None or skipped else float(reported),
        skipped=skipped,
    )


def eval_loss(te: TrainEngine, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """This replica's loss on one micro-batch, from the last stage to every stage.

    Not eval_batch's own broadcast: that averages over data-parallel replicas first, and
    evaluation weights each replica's loss by its own mask count."""
    engine = te.engine
    out = engine.eval_batch(
        iter([(x, (x, mask))]), reduce_output=None, bcast_loss=False, num_micro_batches=1
    )
    loss = torch.zeros(1, dtype=torch.float32, device=te.device)
    if engine.is_last_stage():
        loss.copy_(out[0].detach().float().reshape(1))
    src = engine.grid.stage_to_global(engine.num_stages - 1)
    dist.broadcast(loss, src=src, group=engine.grid.get_pipe_parallel_group())
    return loss[0]
