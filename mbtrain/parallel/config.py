"""Config of the parallel layout (`parallel.*`).

World = pipeline x data x context x tensor. The data-parallel size is not a field: it follows
from the world size the launcher provides, so one recipe runs on 1 CPU process or on 64 GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbtrain.config.checks import Checks

BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class ParallelConfig:
    tensor: int = 1
    """Tensor-parallel size of the global model (Megatron-style)."""
    pipeline: int = 1
    """Pipeline stages over the global blocks (DeepSpeed PipelineModule)."""
    context: int = 1
    """Context-parallel size: every sequence split over this many ranks, Ulysses x ring."""
    context_ring: int = 1
    """Of `context`, the ranks that pass keys and values around a ring (ring attention,
    zigzag-balanced); the other factor, context / context_ring, exchanges heads by
    DeepSpeed-Ulysses' all-to-all. Ring removes Ulysses' cap (heads per tensor rank)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3 (a pipeline allows 0 or 1)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    split_local: bool = True
    """With tensor > 1: split the K independent patches of the local model across TP ranks."""

    def validate(self) -> list[str]:
        c = Checks("parallel")
        for name in ("tensor", "pipeline", "context", "context_ring"):
            c.at_least(name, getattr(self, name), 1)
        if self.context_ring >= 1 and self.context >= 1:
            c.require(
                self.context % self.context_ring == 0,
                "context_ring",
                f"must divide parallel.context ({self.context}): context = Ulysses x ring; "
                f"valid: {', '.join(str(d) for d in range(1, self.context + 1) if self.context % d == 0)}",
            )
        if c.one_of("zero_stage", self.zero_stage, (0, 1, 2, 3)) and self.pipeline > 1:
            c.require(
                self.zero_stage <= 1,
                "zero_stage",
                f"DeepSpeed allows ZeRO 0 or 1 with a pipeline (parallel.pipeline="
                f"{self.pipeline}), got {self.zero_stage}; use parallel.zero_stage=1",
            )
        c.one_of("backend", self.backend, BACKENDS)
        return c.errors
