"""Process groups of a layout, and the `mpu` DeepSpeed queries, built in one place.

The rank <-> coordinates map is DeepSpeed's own `ProcessTopology` over the layout's axes
(`layout.AXES`, slowest first), so it is the one a DeepSpeed `PipelineModule` computes for
itself from `PipeModelDataParallelTopology` (same axes when only pipe, data and model are
used). Every group is the set of ranks that differ only along some axes:

* one axis: tensor ("model"), data, pipe;
* model parallel = pipe x tensor: every rank holding a different part of one replica (what
  DeepSpeed calls the model-parallel group: checkpoint file names, gradient norms);
* replicas = every axis whose ranks hold the same weights (`layout.REPLICA_AXES`):
  consolidation reads each shard from the first replica only.

`ProcessGroups` answers DeepSpeed's mpu queries (`get_{model,data}_parallel_*`, the tensor and
pipe ones it probes). It deliberately has no `initialize_sequence_parallel`: with it, ZeRO would
take the model-parallel size as 1 and count sharded parameters wrong. `torch.distributed.
new_group` is collective: every rank creates every group, in the same order.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch.distributed as dist

from mbtrain.parallel.layout import AXES, REPLICA_AXES, WEIGHT_AXES, ParallelLayout

_DS = dict(AXES)  # layout axis -> DeepSpeed topology axis


_DEEPSPEED_AXES = ("pipe", "data", "model")
"""The axes of DeepSpeed's PipeModelDataParallelTopology, always present in the topology."""


def topology_axes(layout: ParallelLayout) -> list[tuple[str, str]]:
    """The layout's axes in the topology: DeepSpeed's own always, others only when used (a
    PipelineModule names its checkpoint files after every axis of its topology)."""
    return [(n, ds) for n, ds in AXES if ds in _DEEPSPEED_AXES or layout.size(n) > 1]


def build_topology(layout: ParallelLayout) -> Any:
    """DeepSpeed's topology of the layout (what a PipelineModule and the groups are built on)."""
    from deepspeed.runtime.pipe.topology import ProcessTopology

    axes = topology_axes(layout)
    return ProcessTopology(axes=[ds for _, ds in axes], dims=[layout.size(n) for n, _ in axes])


class _Group:
    """One process group this rank belongs to: its torch group, ranks and our place in it."""

    def __init__(self, group: Any, ranks: list[int], me: int) -> None:
        self.group, self.ranks = group, ranks
        self.rank, self.size = ranks.index(me), len(ranks)


class ProcessGroups:
    """Every group of `layout` (all ranks must construct it: group creation is collective)."""

    def __init__(self, layout: ParallelLayout) -> None:
        self.layout = layout
        self.topology = build_topology(layout)
        self.global_rank = dist.get_rank()
        self._groups: dict[tuple[str, ...], _Group] = {}
        self.coords = self.topology.get_coord(self.global_rank)
        for axes in self.GROUPS:
            self._groups[axes] = self._build(axes)
        if layout.ring_enabled:
            self._build_context_split()
        else:  # the whole context group is Ulysses'; the ring is this rank alone
            self._groups[("ulysses",)] = self._groups[("context",)]

    GROUPS: tuple[tuple[str, ...], ...] = tuple(
        dict.fromkeys([*((name,) for name, _ in AXES), WEIGHT_AXES, REPLICA_AXES])
    )

    def _build(self, varying: tuple[str, ...]) -> _Group:
        """The groups of ranks that differ only along `varying` (each rank gets its own)."""
        mine = None
        for ranks in self._rank_lists(varying):
            group = dist.new_group(ranks=ranks)
            if self.global_rank in ranks:
                mine = _Group(group, ranks, self.global_rank)
        assert mine is not None
        return mine

    def _rank_lists(self, varying: tuple[str, ...]) -> list[list[int]]:
        """Every group of ranks that differ only along `varying`, each sorted (the same list
        on every rank: group creation is collective and in order)."""
        fixed = [name for name, _ in topology_axes(self.layout) if name not in varying]
        sizes = {name: self.layout.size(name) for name, _ in topology_axes(self.layout)}
        out = []
        for key in itertools.product(*(range(sizes[f]) for f in fixed)):
            where = dict(zip((_DS[f] for f in fixed), key))
            out.append(sorted(self.topology.filter_match(**where)))
        return out

    def _build_context_split(self) -> None:
        """Ulysses x ring inside every context group: context rank c = ring rank x U + Ulysses
        rank, so a Ulysses group is U neighbouring ranks (one node, for the all-to-all) and a
        ring group takes every U-th."""
        u, r = self.layout.ulysses, self.layout.context_ring
        for context_ranks in self._rank_lists(("context",)):
            for name, parts in (
                ("ulysses", [context_ranks[i * u : (i + 1) * u] for i in range(r)]),
                ("ring", [context_ranks[i::u] for i in range(u)]),
            ):
                for ranks in parts:
                    group = dist.new_group(ranks=ranks)
                    if self.global_rank in ranks:
                        self._groups[(name,)] = _Group(group, ranks, self.global_rank)

    def group(self, *axes: str) -> _Group:
        return self._groups[tuple(axes)]

    # -- what mbtrain asks ---------------------------------------------------------------------
    @property
    def data_rank(self) -> int:
        """Index of this rank's data-parallel replica: its share of the samples."""
        return self.group("data").rank

    @property
    def replica_group(self) -> Any:
        """The torch group of every rank holding the same weights as this one."""
        return self.group(*REPLICA_AXES).group

    @property
    def replica_rank(self) -> int:
        """0 on the first of the ranks holding the same weights (where shards are read)."""
        return self.group(*REPLICA_AXES).rank

    def deepspeed_mpu(self) -> Any:
        """What `deepspeed.initialize(mpu=...)` gets: None without model parallelism (DeepSpeed's
        own world group is then the data group) and with a pipeline (the PipelineModule brings
        its own grid, and DeepSpeed refuses an mpu beside it)."""
        if not self.layout.model_parallel_enabled or self.layout.pipeline_enabled:
            return None
        return self

    # -- the six queries DeepSpeed always makes ---------------------------------------------------
    def get_model_parallel_rank(self) -> int:
        return self.group(*WEIGHT_AXES).rank

    def get_model_parallel_world_size(self) -> int:
        return self.group(*WEIGHT_AXES).size

    def get_model_parallel_group(self) -> Any:
        return self.group(*WEIGHT_AXES).group

    def get_data_parallel_rank(self) -> int:
        return self.group("data").rank

    def get_data_parallel_world_size(self) -> int:
        return self.group("data").size

    def get_data_parallel_group(self) -> Any:
        return self.group("data").group

    def get_data_parallel_group_ranks(self) -> list[int]:
        return self.group("data").ranks

    # -- tensor and pipeline axes ---------------------------------------------------------------
    def get_tensor_model_parallel_rank(self) -> int:
        return self.group("tensor").rank

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.group("tensor").size

    def get_tensor_model_parallel_group(self) -> Any:
        return self.group("tensor").group

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.group("tensor").ranks[0]

    def get_pipe_parallel_rank(self) -> int:
        return self.group("pipeline").rank

    def get_pipe_parallel_world_size(self) -> int:
        return self.group("pipeline").size

    def get_pipe_parallel_group(self) -> Any:
        return self.group("pipeline").group

    # -- context axis: DeepSpeed's "sequence parallel" ---------------------------------------------
    # With these, DeepSpeed's engine reduces gradients and partitions ZeRO state over the
    # sequence-data-parallel group (every rank holding the same weights: data x context),
    # summing over the context axis and averaging over the data axis only.
    def get_sequence_parallel_rank(self) -> int:
        return self.group("context").rank

    def get_sequence_parallel_world_size(self) -> int:
        return self.group("context").size

    def get_sequence_parallel_group(self) -> Any:
        return self.group("context").group

    def get_sequence_data_parallel_rank(self) -> int:
        return self.group(*REPLICA_AXES).rank

    def get_sequence_data_parallel_world_size(self) -> int:
        return self.group(*REPLICA_AXES).size

    def get_sequence_data_parallel_group(self) -> Any:
        return self.group(*REPLICA_AXES).group


def build_process_groups(layout: ParallelLayout) -> ProcessGroups:
    """All groups of the layout (collective: every rank calls it once, at start-up)."""
    return ProcessGroups(layout)
