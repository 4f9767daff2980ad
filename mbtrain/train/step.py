"""One optimizer step: `train.grad_accum` micro-batches through DeepSpeed, one update.

Every micro-batch goes through `engine(...)`, `engine.backward` and `engine.step` (DeepSpeed
updates at the accumulation boundary). Before the last `engine.step`, the ranks agree on the
number of non-finite losses and the policy decides the update (`nonfinite.py`); the loss
reported is the mean of the finite micro-batch losses over every rank, and the bytes those
of every data-parallel replica (ranks that share a sample count it once). With a pipeline
the step is `pipeline_step.train_step`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from mbtrain.errors import DataError
from mbtrain.parallel import grad_norm_sq
from mbtrain.train.batches import Inputs, next_agreed, to_inputs
from mbtrain.train.engine import TrainEngine
from mbtrain.train.nonfinite import NonFinitePolicy


@dataclass
class StepResult:
    loss: float
    """Mean loss (nats per byte) of the step's finite micro-batches over every rank."""
    bytes: float
    """Training bytes (unmasked positions) of the step, over all data-parallel replicas."""
    grad_norm: float | None
    """Global gradient norm before clipping, where known."""
    skipped: bool
    """The update was not applied (non-finite loss or gradients)."""


def fetch_step(te: TrainEngine, batches: Iterator[dict], n: int, doc_mask: bool) -> list[Inputs]:
    """The step's n micro-batches, agreed by every rank before any computes (`batches.py`)."""
    out = []
    for _ in range(n):
        batch = next_agreed(batches, te)
        if batch is None:
            raise DataError("the training data ended (an epoch yielded no full batch)")
        out.append(to_inputs(batch, te.device, doc_mask))
    return out


def train_step(
    te: TrainEngine,
    batches: Iterator[dict],
    accum: int,
    policy: NonFinitePolicy,
    doc_mask: bool,
    precision: str = "fp32",
) -> StepResult:
    engine = te.engine
    micro_batches = fetch_step(te, batches, accum, doc_mask)
    loss_sum = count = nonfinite = 0.0
    grad_norm = None
    skipped_before = engine.skipped_steps  # moves only at the accumulation boundary
    policy.begin_update()
    for i, (x, mask, segments) in enumerate(micro_batches):
        loss = engine(x, mask, segments)
        value = float(loss.detach().float().item())
        nonfinite += 0.0 if math.isfinite(value) else 1.0
        loss_sum += value if math.isfinite(value) else 0.0
        count += float(mask.sum().item())
        engine.backward(loss)
        if i == accum - 1:
            # Every rank must agree before the update: one rank's NaN poisons all.
            bad = te.all_reduce([nonfinite])[0]
            if not policy.decide_from_loss(bad):
                grad_norm = _norm_deepspeed_does_not_report(te, precision)
        engine.step()
    total_loss, total_count, total_bad = te.all_reduce([loss_sum, count, nonfinite])
    skipped = policy.end_update(engine.skipped_steps > skipped_before)
    reported = engine.get_global_grad_norm()
    if reported is not None:
        grad_norm = float(reported)
    finite = accum * te.env.world_size - total_bad
    return StepResult(
        loss=total_loss / finite if finite else float("nan"),
        bytes=total_count / te.layout.ranks_per_sample,
        grad_norm=grad_norm,
        skipped=skipped,
    )


def _norm_deepspeed_does_not_report(te: TrainEngine, precision: str) -> float | None:
    """The global gradient norm where DeepSpeed reports none (ZeRO-0 in fp32)."""
    if te.layout.zero_stage != 0 or precision != "fp32":
        return None
    return math.sqrt(grad_norm_sq(te.engine.module, te.groups))
