"""The DeepSpeed config, generated from the typed config.

There is no hand-written DeepSpeed JSON: batch sizes, clipping, precision and ZeRO stage
exist once, in the typed config, and this function is the only translation.
"""

from __future__ import annotations

from typing import Any

from mbtrain.parallel.layout import ParallelLayout
from mbtrain.train.config import OptimConfig, TrainConfig


def build_deepspeed_config(
    train: TrainConfig, optim: OptimConfig, layout: ParallelLayout
) -> dict[str, Any]:
    """DeepSpeed config dict for `deepspeed.initialize(config=...)`."""
    bf16 = train.precision == "bf16"
    zero: dict[str, Any] = {"stage": layout.zero_stage}
    if layout.zero_stage == 3:
        # Whole weights on save so that export never needs the optimizer shards.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        # Pinned, not defaulted: context parallelism scales its loss's gradient for the
        # reduce-scatter path, which averages over the whole partition group
        # (mbtrain.parallel.context); the all-reduce path would divide differently.
        zero["reduce_scatter"] = True
    cfg: dict[str, Any] = {
        "train_batch_size": train.global_batch(layout.data),
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        # The training loop logs by itself (metrics.jsonl); DeepSpeed's prints would interleave.
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        # Our AdamW (with decoupled decay groups) is a torch optimizer DeepSpeed wraps.
        "zero_allow_untested_optimizer": True,
    }
    if bf16 and (layout.pipeline_enabled or layout.zero_stage >= 1):
        # bf16 gradients accumulated in bf16 lose small updates; DeepSpeed's pipeline requires
        # fp32 accumulation, and it is the better default with ZeRO-1+ (refused at ZeRO-0).
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    if layout.pipeline_enabled:
        cfg["pipeline"] = {"activation_checkpoint_interval": 0}
    return cfg
