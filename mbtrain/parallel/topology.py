"""The process topology and the `mpu` DeepSpeed queries, both from DeepSpeed's own grid.

World = pipeline x data x tensor, laid out by `PipeModelDataParallelTopology` with the axes
(pipe, data, model): the tensor axis varies fastest, so the ranks of one tensor group are
neighbours (one node, the fastest links), then data, then pipeline stages.

`PipelineParallelGrid` builds every process group from that topology; `GridMPU` is the thin
`mpu` handed to `deepspeed.initialize` (without a pipeline; with one DeepSpeed takes the
`PipelineModule`'s own grid, built from the same topology). It answers the six queries
DeepSpeed needs (`get_{model,data}_parallel_{rank,world_size,group}`) plus the tensor and
pipeline ones it probes. It deliberately has no `initialize_sequence_parallel`: with it,
ZeRO would take the model-parallel size as 1 and count sharded parameters wrong.
"""

from __future__ import annotations

from typing import Any


def build_topology(pipeline: int, data: int, tensor: int) -> Any:
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    return PipeModelDataParallelTopology(num_pp=pipeline, num_mp=tensor, num_dp=data)


class GridMPU:
    """Model-parallel unit over a `PipelineParallelGrid` (the one source of process groups)."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid

    # -- the six queries DeepSpeed always makes ---------------------------------------------
    # "Model parallel" is every rank holding a different part of one model replica:
    # pipeline x tensor (the grid's model group).
    def get_model_parallel_rank(self) -> int:
        return self.grid.get_model_parallel_rank()

    def get_model_parallel_world_size(self) -> int:
        return self.grid.get_model_parallel_world_size()

    def get_model_parallel_group(self) -> Any:
        return self.grid.get_model_parallel_group()

    def get_data_parallel_rank(self) -> int:
        return self.grid.get_data_parallel_rank()

    def get_data_parallel_world_size(self) -> int:
        return self.grid.get_data_parallel_world_size()

    def get_data_parallel_group(self) -> Any:
        return self.grid.get_data_parallel_group()

    def get_data_parallel_group_ranks(self) -> list[int]:
        return self.grid.get_data_parallel_group_ranks()

    # -- tensor and pipeline axes ------------------------------------------------------------
    def get_tensor_model_parallel_rank(self) -> int:
        return self.grid.get_slice_parallel_rank()

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.grid.get_slice_parallel_world_size()

    def get_tensor_model_parallel_group(self) -> Any:
        return self.grid.get_slice_parallel_group()

    def get_tensor_model_parallel_src_rank(self) -> int:
        return (
            self.grid.get_slice_parallel_group_ranks()[0]
            if hasattr(self.grid, "get_slice_parallel_group_ranks")
            else self.grid.slice_group[0]
        )

    def get_pipe_parallel_rank(self) -> int:
        return self.grid.get_pipe_parallel_rank()

    def get_pipe_parallel_world_size(self) -> int:
        return self.grid.get_pipe_parallel_world_size()

    def get_pipe_parallel_group(self) -> Any:
        return self.grid.get_pipe_parallel_group()

    @property
    def topology(self) -> Any:
        return self.grid.topology()


def build_mpu(pipeline: int, data: int, tensor: int) -> GridMPU:
    """Process groups for the layout (all ranks must call: it creates groups collectively)."""
    from deepspeed.runtime.pipe.topology import PipelineParallelGrid

    return GridMPU(PipelineParallelGrid(topology=build_topology(pipeline, data, tensor)))
