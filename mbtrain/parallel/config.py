"""Config of the parallel layout (`parallel.*`).

World = pipeline x data x context x tensor. The data-parallel size is not a field: it follows
from the world size the launcher provides, so one recipe runs on 1 CPU process or on 64 GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class ParallelConfig:
    tensor: int = 1
    """Tensor-parallel size of the global model (Megatron-style)."""
    pipeline: int = 1
    """Pipeline stages over the global blocks (DeepSpeed PipelineModule)."""
    context: int = 1
    """Context-parallel size: every sequence split into this many contiguous spans of patches,
    one per rank (DeepSpeed-Ulysses all-to-all in the global attention)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3 (a pipeline allows 0 or 1)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    split_local: bool = True
    """With tensor > 1: split the K independent patches of the local model across TP ranks."""

    def validate(self) -> list[str]:
        errors = []
        if self.tensor < 1:
            errors.append(f"parallel.tensor: must be >= 1, got {self.tensor}")
        if self.pipeline < 1:
            errors.append(f"parallel.pipeline: must be >= 1, got {self.pipeline}")
        if self.context < 1:
            errors.append(f"parallel.context: must be >= 1, got {self.context}")
        if self.zero_stage not in (0, 1, 2, 3):
            errors.append(f"parallel.zero_stage: must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.pipeline > 1 and self.zero_stage > 1:
            errors.append(
                f"parallel.zero_stage: DeepSpeed allows ZeRO 0 or 1 with a pipeline "
                f"(parallel.pipeline={self.pipeline}), got {self.zero_stage}; "
                "use parallel.zero_stage=1"
            )
        if self.backend not in BACKENDS:
            errors.append(f"parallel.backend: must be one of {', '.join(BACKENDS)}")
        return errors
