"""The parallel layout: one typed object answers how the ranks of a run are arranged.

World = the product of the axes' sizes. The axes, slowest-varying first (that order is the
rank order, so the fastest axis's groups are neighbouring ranks, i.e. one node):

    pipeline   stages of the global blocks           (DeepSpeed name "pipe")
    data       replicas that see different samples   ("data"; its size follows from the
                                                       world size, the others are set)
    context    spans of every sequence               ("context"; Ulysses x ring, see
                                                       context.py and ring.py)
    tensor     shards of the global model's weights  ("model")

Everything else is derived here and nowhere else: the data-parallel size, which axes are in
use, how many ranks share one batch (`ranks_per_sample`) or hold the same weights, the keys
a checkpoint's marker records, and the arithmetic checks a layout must pass before any
process group exists. Process groups are built from a layout by `groups.build_process_groups`.
Adding an axis means adding it to `AXES` and to the places that use it, not repeating
`tensor * pipeline` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AXES = (("pipeline", "pipe"), ("data", "data"), ("context", "context"), ("tensor", "model"))
"""(layout field, DeepSpeed topology axis), slowest-varying first."""
SAMPLE_AXES = ("data",)
"""Axes along which ranks see different samples; every other axis shares the batch."""
WEIGHT_AXES = ("pipeline", "tensor")
"""Axes along which ranks hold different weights."""
REPLICA_AXES = tuple(name for name, _ in AXES if name not in WEIGHT_AXES)
"""Axes along which ranks hold the same weights (gradients are reduced over them)."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class ParallelLayout:
    """Sizes of every parallel axis for one run, and what follows from them."""

    world_size: int
    """Processes in the run (from the launcher)."""
    tensor: int = 1
    """Tensor-parallel size (global model weights split Megatron style)."""
    pipeline: int = 1
    """Pipeline stages over the global blocks."""
    context: int = 1
    """Context-parallel size: each sequence split over this many ranks (Ulysses x ring)."""
    context_ring: int = 1
    """Of `context`, the ring attention ranks (the rest, `ulysses`, exchange heads)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: how optimizer state is partitioned over the data axis."""

    # ----------------------------------------------------------------- sizes
    @classmethod
    def from_config(cls, cfg: Any, world_size: int) -> ParallelLayout:
        """From the `parallel.*` section (a ParallelConfig) and the launcher's world size."""
        set_axes = {name: getattr(cfg, name) for name, _ in AXES if name != "data"}
        return cls(
            world_size=world_size,
            zero_stage=cfg.zero_stage,
            context_ring=getattr(cfg, "context_ring", 1),
            **set_axes,
        )

    def size(self, axis: str) -> int:
        return self.data if axis == "data" else getattr(self, axis)

    @property
    def ranks_per_replica(self) -> int:
        """Ranks that share one data-parallel replica (the product of every set axis)."""
        n = 1
        for name, _ in AXES:
            if name != "data":
                n *= getattr(self, name)
        return n

    @property
    def data(self) -> int:
        """Data-parallel size: what the world leaves after the other axes (0 if it does not divide)."""
        per = self.ranks_per_replica
        return self.world_size // per if per and self.world_size % per == 0 else 0

    @property
    def ranks_per_sample(self) -> int:
        """Ranks that see the same samples (every axis but the sample axes)."""
        return self.world_size // max(1, self.data)

    @property
    def weight_shards(self) -> int:
        """Ranks that hold different parts of one model replica."""
        n = 1
        for name in WEIGHT_AXES:
            n *= getattr(self, name)
        return n

    @property
    def tensor_enabled(self) -> bool:
        return self.tensor > 1

    @property
    def pipeline_enabled(self) -> bool:
        return self.pipeline > 1

    @property
    def data_enabled(self) -> bool:
        return self.data > 1

    @property
    def context_enabled(self) -> bool:
        return self.context > 1

    @property
    def ring_enabled(self) -> bool:
        return self.context_ring > 1

    @property
    def ulysses(self) -> int:
        """The context ranks that exchange heads by all-to-all (context / context_ring)."""
        return self.context // max(1, self.context_ring)

    @property
    def model_parallel_enabled(self) -> bool:
        """Any axis besides data (the run needs its own process groups for DeepSpeed)."""
        return self.ranks_per_replica > 1

    @property
    def sharded_weights(self) -> bool:
        """Whether a rank holds only part of the weights (merging needed to export them)."""
        return self.weight_shards > 1

    # ----------------------------------------------------------------- checkpoints
    MARKER_KEYS = (*(name for name, _ in AXES), "context_ring", "zero_stage")

    def marker(self) -> dict[str, int]:
        """The layout as a checkpoint's marker records it."""
        return {k: self.size(k) if k in dict(AXES) else getattr(self, k) for k in self.MARKER_KEYS}

    # A key an older checkpoint lacks is an axis it did not use: size 1, or ZeRO 0.
    _MARKER_DEFAULTS = {"zero_stage": 0}

    @staticmethod
    def saved(info: dict) -> dict[str, int]:
        """The layout keys of a checkpoint's marker; a key an older checkpoint lacks is an axis
        it did not use (size 1) or ZeRO 0."""
        defaults = ParallelLayout._MARKER_DEFAULTS
        return {k: int(info.get(k, defaults.get(k, 1))) for k in ParallelLayout.MARKER_KEYS}

    def differs_from(self, info: dict) -> bool:
        """True when a checkpoint was saved with another layout (it must be resharded)."""
        return self.saved(info) != self.marker()

    @staticmethod
    def describe_saved(info: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in ParallelLayout.saved(info).items())

    def describe(self) -> str:
        axes = " x ".join(f"{name} {self.size(name)}" for name, _ in AXES)
        if self.ring_enabled:
            axes += f" (context: Ulysses {self.ulysses} x ring {self.context_ring})"
        return f"{axes}, ZeRO-{self.zero_stage}"

    # ----------------------------------------------------------------- checks
    def problems(self, model: Any) -> list[str]:
        """Every arithmetic reason this layout cannot run `model` (a ModelConfig)."""
        errors: list[str] = []
        if self.world_size < 1:
            return [f"world size must be >= 1, got {self.world_size}"]
        per = self.ranks_per_replica
        if self.world_size % per:
            product = " x ".join(
                f"parallel.{n} ({getattr(self, n)})" for n, _ in AXES if n != "data"
            )
            ok = ", ".join(map(str, _divisors(self.world_size)))
            errors.append(
                f"{product} = {per} does not divide the world size ({self.world_size}); "
                f"valid products: {ok}"
            )
        prefix, heads, layers = _heads_layers(model)
        if heads % self.tensor:
            errors.append(
                f"{prefix}_heads ({heads}) must be divisible by parallel.tensor ({self.tensor}); "
                f"valid tensor sizes: {', '.join(map(str, _divisors(heads)))}"
            )
        if layers % self.pipeline:
            errors.append(
                f"{prefix}_layers ({layers}) must be divisible by parallel.pipeline "
                f"({self.pipeline}); valid pipeline sizes: {', '.join(map(str, _divisors(layers)))}"
            )
        if self.context_enabled:
            errors += self._context_problems(model, prefix, heads)
        if self.pipeline_enabled and getattr(model, "doc_mask", False):
            errors.append(
                f"model.doc_mask: document masking is not supported with parallel.pipeline "
                f"({self.pipeline}): the pipeline passes one tensor between stages; set "
                "model.doc_mask=false"
            )
        return errors

    def _context_problems(self, model: Any, prefix: str, heads: int) -> list[str]:
        errors = []
        if self.pipeline_enabled:
            errors.append(
                f"parallel.context ({self.context}) with parallel.pipeline ({self.pipeline}) is "
                "not supported (DeepSpeed's pipeline engine has no sequence parallelism); "
                "use tensor x context x data"
            )
        stride = model.patch_size if model.arch == "megabyte" else 1
        positions = model.seq_len // stride
        what = "K = model.seq_len / model.patch_size" if stride > 1 else "model.seq_len"
        # Ring attention cuts the sequence into 2 x ring chunks (zigzag), each shared by the
        # Ulysses ranks: K must split into 2 x context equal pieces; Ulysses alone needs context.
        pieces = 2 * self.context if self.ring_enabled else self.context
        if positions % pieces:
            valid = [
                d for d in _divisors(positions) if not self.ring_enabled or positions % (2 * d) == 0
            ]
            errors.append(
                f"parallel.context ({self.context}) must divide {what} ({positions})"
                + (
                    " into 2 x context equal chunks (ring attention's zigzag)"
                    if self.ring_enabled
                    else ""
                )
                + f": each rank holds whole positions; valid sizes: {', '.join(map(str, valid))}"
            )
        if heads % self.tensor == 0 and (heads // self.tensor) % self.ulysses:
            per = heads // self.tensor
            ring_sizes = [d for d in _divisors(self.context) if per % (self.context // d) == 0]
            errors.append(
                f"{prefix}_heads per tensor rank ({heads} / parallel.tensor {self.tensor} = "
                f"{per}) must be divisible by the Ulysses size (parallel.context {self.context} / "
                f"parallel.context_ring {self.context_ring} = {self.ulysses}) for its all-to-all "
                f"over heads; valid context_ring for this context: {', '.join(map(str, ring_sizes))}"
            )
        if self.ring_enabled and getattr(model, "dropout", 0.0) > 0:
            errors.append(
                f"model.dropout ({model.dropout}): attention dropout is not supported across "
                f"ring attention's blocks (parallel.context_ring {self.context_ring}); set "
                "model.dropout=0 or parallel.context_ring=1"
            )
        return errors


def _heads_layers(model: Any) -> tuple[str, int, int]:
    if model.arch == "megabyte":
        return "model.global", model.global_heads, model.global_layers
    return "model", model.heads, model.layers
