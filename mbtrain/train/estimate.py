"""Memory and time per rank of a run, before any allocation: what `train --dry-run` prints.

Memory per rank:
* model states under the ZeRO stage, over the replica group R = data x context (the ranks
  holding the same weights; DeepSpeed partitions over it):

                    weights      gradients            optimizer (Adam m, v + fp32 master)
      fp32, ZeRO-0  4            4                    8
      fp32, ZeRO-1  4            4                    (8 + 4) / R
      fp32, ZeRO-2  4            4 / R                (8 + 4) / R
      bf16, ZeRO-0  2            2 + 4 (fp32 copy)    8 + 4
      bf16, ZeRO-1  2            2 + 4 / R            (8 + 4) / R
      bf16, ZeRO-2  2            (2 + 4) / R          (8 + 4) / R
      ZeRO-3        weights / R as well                (bytes per parameter of this rank)

  where a rank's parameters are the replicated ones plus its tensor shard of the global
  blocks, and with a pipeline the heavier of the first and last stages;
* activations of one micro-batch (`mbtrain.model.memory`), with and without activation
  checkpointing;
* a fixed overhead of the framework (CUDA context and NCCL buffers; on CPU, the interpreter
  with torch and DeepSpeed imported), `FRAMEWORK_BYTES`;
* on CPU with `train.keep_host_memory`, freed blocks the heap keeps but cannot hand out again
  (fragmentation: the process's peak grows past its live peak), `KEPT_HEAP_FRACTION` of the
  activations. Measured by bench_context on the 2-core CPU, peak / estimate without it:
  1.10-1.16 at T = 65,536 and 1.30-1.47 at T = 262,144 (CP = 1 and 2); estimate / peak with
  it 0.88-1.01.

Time per optimizer step: the model's training FLOPs of one global batch, spread over the
world, at an assumed model FLOPs utilisation of the device's dense peak (`--mfu`; the default
is what this codebase's benchmarks reached, not a promise).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbtrain.model.config import ModelConfig
from mbtrain.model.flops import block_matmul_params, count_parameters, flops_per_byte
from mbtrain.model.memory import ActivationMemory, activation_memory
from mbtrain.parallel.layout import ParallelLayout
from mbtrain.train.config import TrainConfig

GIB = 2**30
FRAMEWORK_BYTES = {"cuda": int(1.5 * GIB), "cpu": int(0.8 * GIB)}
DEFAULT_MFU = {"cuda": 0.40, "cpu": 0.60}
DEFAULT_DEVICE_MEMORY = {"cuda": 80 * GIB}
KEPT_HEAP_FRACTION = 0.5


@dataclass(frozen=True)
class RankEstimate:
    """Bytes per rank, and seconds per optimizer step."""

    params: int
    """Parameters held by this rank (count)."""
    weights: int
    gradients: int
    optimizer: int
    activations: ActivationMemory
    """With the configured activation checkpointing."""
    activations_other: ActivationMemory
    """With the opposite setting, for comparison."""
    framework: int
    kept_heap: int
    """Freed host memory the process keeps (CPU with train.keep_host_memory), see above."""
    step_seconds: float
    mfu: float
    peak_flops: float

    @property
    def states(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.states + self.activations.total + self.framework + self.kept_heap


def rank_params(model: ModelConfig, layout: ParallelLayout) -> int:
    """Parameters one rank holds: its tensor shard, its pipeline stage (the heavier end)."""
    total = count_parameters(model)
    width = model.global_width if model.arch == "megabyte" else model.dim
    per_block = block_matmul_params(model, width)
    sharded = model.stage_blocks * per_block
    replicated = total - sharded
    if not layout.pipeline_enabled:
        return replicated + sharded // layout.tensor
    # Every stage holds blocks/pipeline blocks; the ends hold the rest as well (embedding on
    # the first, local model and head on the last): all of it is counted on one end, an
    # upper bound for either.
    stage_blocks = model.stage_blocks // layout.pipeline
    return stage_blocks * per_block // layout.tensor + replicated


def state_bytes(params: int, precision: str, zero: int, replicas: int) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes of `params` parameters (see module docstring)."""
    r = max(1, replicas)
    bf16 = precision == "bf16"
    weights = params * (2 if bf16 else 4)
    if bf16:
        grads = params * (2 + 4) if zero == 0 else params * 2 + params * 4 // r
        if zero >= 2:
            grads = params * 6 // r
    else:
        grads = params * 4 // (r if zero >= 2 else 1)
    optimizer = params * 8 if zero == 0 and not bf16 else params * 12 // (1 if zero == 0 else r)
    if zero == 3:
        weights //= r
    return weights, grads, optimizer


def estimate_rank(
    model: ModelConfig,
    train: TrainConfig,
    layout: ParallelLayout,
    device: str,
    *,
    split_local: bool = True,
    peak_flops: float = 0.0,
    mfu: float | None = None,
) -> RankEstimate:
    """The per-rank estimate of this run (see module docstring)."""
    params = rank_params(model, layout)
    replicas = layout.world_size // max(1, layout.weight_shards)
    weights, grads, optim = state_bytes(params, train.precision, layout.zero_stage, replicas)
    dtype_bytes = 2 if train.precision == "bf16" else 4
    kw = dict(
        tensor=layout.tensor,
        context=layout.context,
        ring=layout.context_ring,
        split_local=split_local,
    )
    act = activation_memory(model, train.micro_batch_size, dtype_bytes, **kw)
    other = activation_memory(
        model,
        train.micro_batch_size,
        dtype_bytes,
        checkpointing=not model.activation_checkpointing,
        **kw,
    )
    mfu = DEFAULT_MFU.get(device, 0.4) if mfu is None else mfu
    step_flops = (
        flops_per_byte(model, training=True) * train.global_batch(layout.data) * model.seq_len
    )
    seconds = step_flops / (layout.world_size * peak_flops * mfu) if peak_flops else float("nan")
    return RankEstimate(
        params=params,
        weights=weights,
        gradients=grads,
        optimizer=optim,
        activations=act,
        activations_other=other,
        framework=FRAMEWORK_BYTES.get(device, FRAMEWORK_BYTES["cuda"]),
        kept_heap=int(KEPT_HEAP_FRACTION * act.total)
        if device == "cpu" and train.keep_host_memory
        else 0,
        step_seconds=seconds,
        mfu=mfu,
        peak_flops=peak_flops,
    )


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def format_estimate(est: RankEstimate, device_memory: int | None, ckpt: bool) -> str:
    """The dry-run's lines (each starts with '# ')."""
    a, o = est.activations, est.activations_other
    lines = [
        f"parameters per rank: {est.params:,}",
        f"  weights {_gib(est.weights)}, gradients {_gib(est.gradients)}, "
        f"optimizer {_gib(est.optimizer)}",
        f"activations per micro-batch ({'with' if ckpt else 'without'} activation "
        f"checkpointing): {_gib(a.total)} (global blocks {_gib(a.global_blocks)}, local "
        f"blocks {_gib(a.local_blocks)}, around {_gib(a.around)}, transient {_gib(a.transient)})",
        *(
            [f"  ring attention buffers (in the activations): {_gib(a.ring_buffers)}"]
            if a.ring_buffers
            else []
        ),
        f"  {'without' if ckpt else 'with'} activation checkpointing: {_gib(o.total)}",
        f"framework (CUDA/NCCL or interpreter): {_gib(est.framework)}",
        *(
            [f"freed memory kept by the process (train.keep_host_memory): {_gib(est.kept_heap)}"]
            if est.kept_heap
            else []
        ),
        f"total per rank: {_gib(est.total)}",
    ]
    if device_memory:
        verdict = "fits" if est.total <= device_memory else "does NOT fit"
        lines.append(
            f"  {verdict} in {_gib(device_memory)} of device memory "
            f"({100 * est.total / device_memory:.0f}%)"
        )
        if (
            est.total > device_memory
            and not ckpt
            and est.states
            + o.total
            + est.framework
            + (est.kept_heap and int(KEPT_HEAP_FRACTION * o.total))
            <= device_memory
        ):
            lines.append("  (it would fit with model.activation_checkpointing=true)")
    if est.peak_flops:
        lines.append(
            f"step time: {est.step_seconds:,.2f} s at MFU {est.mfu:.2f} of "
            f"{est.peak_flops / 1e12:,.1f} TFLOP/s per device"
        )
    return "\n".join(f"# {line}" for line in lines)
