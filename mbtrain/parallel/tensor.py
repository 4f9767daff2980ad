"""Megatron-style tensor parallelism of the global model, applied from outside the model.

Every global block becomes: attention q/k/v column-parallel (each rank holds
global_heads / tp whole heads; `Attention` derives its head count from
`q_proj.out_features`), out_proj row-parallel followed by one all-reduce; MLP up (and gate)
column-parallel, down row-parallel followed by one all-reduce. The block input is copied
into the sharded region once per sub-block (identity forward, all-reduce backward), so a
block costs two all-reduces forward and two backward, as in Megatron.

Sharded linears take their slice of the *full* weights of the model built from the seed,
so a TP run starts from exactly the TP=1 model. Their parameters carry
`tensor_model_parallel = True`, `partition_dim`, `partition_stride` (Megatron's attributes,
which DeepSpeed reads for gradient norms); everything else is replicated and stays
identical across the tensor group because every rank computes the same replicated values.

RNG: attention-probability dropout runs inside the sharded region and must differ per TP
rank (each rank drops different heads' weights); everything else must be identical. Each
sharded attention call draws one seed from the default generator (same draw on every rank,
so the default stream stays in step), then runs with a generator forked from
seed + rank. Activation checkpointing restores the default generator before recomputing,
so the recomputed call draws the same seed and the same masks.

The local model (`parallel.split_local`): its B*K patch sequences are independent, so with
split_local the tensor ranks each run 1/tp of them and all-gather the outputs (the head and
the loss then run replicated); the local blocks' gradients, each from 1/tp of the patches,
are summed over the tensor group by a gradient hook. Without it the local model runs
replicated on every tensor rank. Split is the default: on the CPU benchmark
(benchmarks/results_parallel.md) it was as fast or faster in every paired run and uses less
memory per rank, and its saving grows with the local model's share of the FLOPs.
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mbtrain.parallel.rng import TENSOR_SALT, rank_stream

# The plan: the linears of a global block that are sharded, and along which dimension.
# Column-parallel linears split their output features (dim 0), row-parallel their inputs
# (dim 1). This one table shards a live block (`_shard_block`) and names the sharded
# parameters of checkpoints (`partition_dim_of`: merging, resharding, export).
PLAN = {
    "attn.q_proj": 0,
    "attn.k_proj": 0,
    "attn.v_proj": 0,
    "attn.out_proj": 1,
    "mlp.up_proj": 0,
    "mlp.gate_proj": 0,
    "mlp.down_proj": 1,
}
_BLOCK_LINEAR = re.compile(r"(^|\.)global_model\.blocks\.\d+\.(?P<linear>\w+\.\w+)\.weight$")


def partition_dim_of(name: str) -> int | None:
    """Dimension along which the plain-model parameter `name` is split, or None if replicated."""
    m = _BLOCK_LINEAR.search(name)
    return PLAN.get(m.group("linear")) if m else None


# -- autograd collectives -----------------------------------------------------------------------


class _CopyToRegion(torch.autograd.Function):
    """Identity forward; all-reduce of the gradient backward (entering a sharded region)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromRegion(torch.autograd.Function):
    """All-reduce forward; identity backward (leaving a row-parallel linear)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class _SplitRows(torch.autograd.Function):
    """Keep this rank's rows (dim 0) forward; all-gather the gradient rows backward."""

    @staticmethod
    def forward(ctx, x: Tensor, group, rank: int, size: int) -> Tensor:
        ctx.group, ctx.size = group, size
        return x.chunk(size, dim=0)[rank].contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _all_gather_rows(grad, ctx.group, ctx.size), None, None, None


class _GatherRows(torch.autograd.Function):
    """All-gather rows forward; keep this rank's rows of the (replicated) gradient backward."""

    @staticmethod
    def forward(ctx, x: Tensor, group, rank: int, size: int) -> Tensor:
        ctx.rank, ctx.size = rank, size
        return _all_gather_rows(x, group, size)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.chunk(ctx.size, dim=0)[ctx.rank].contiguous(), None, None, None


def _all_gather_rows(x: Tensor, group, size: int) -> Tensor:
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=0)


# -- sharded linears ------------------------------------------------------------------------------


class _ShardedLinear(nn.Module):
    """A bias-free linear holding one slice of a full weight (the model uses bias=False)."""

    def __init__(self, full: nn.Linear, dim: int, rank: int, size: int) -> None:
        super().__init__()
        if full.bias is not None:
            raise NotImplementedError("tensor parallelism of linears with a bias")
        weight = full.weight.detach().chunk(size, dim=dim)[rank].clone()
        self.weight = nn.Parameter(weight, requires_grad=full.weight.requires_grad)
        self.weight.tensor_model_parallel = True
        self.weight.partition_dim = dim
        self.weight.partition_stride = 1
        self.out_features, self.in_features = weight.shape

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} (shard)"


class ColumnParallelLinear(_ShardedLinear):
    """y_r = x W_r^T: this rank's output features; the input is already in the region."""

    def __init__(self, full: nn.Linear, rank: int, size: int) -> None:
        super().__init__(full, 0, rank, size)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class RowParallelLinear(_ShardedLinear):
    """y = sum_r x_r W_r^T: partial products all-reduced over the tensor group."""

    def __init__(self, full: nn.Linear, rank: int, size: int, group) -> None:
        super().__init__(full, 1, rank, size)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        return _ReduceFromRegion.apply(F.linear(x, self.weight), self.group)


# -- applying it --------------------------------------------------------------------------------


def _enter_region(group):
    def hook(module: nn.Module, args: tuple):
        return (_CopyToRegion.apply(args[0], group), *args[1:])

    return hook


def _fork_rng_per_rank(attn: nn.Module, rank: int) -> None:
    """Attention dropout inside the sharded region: a per-rank stream (see module docstring)."""
    inner = attn.forward

    def forward(*args, **kwargs):
        if not (attn.training and attn.dropout > 0):
            return inner(*args, **kwargs)
        with rank_stream(rank, TENSOR_SALT):
            return inner(*args, **kwargs)

    attn.forward = forward


def _shard_block(block: nn.Module, group, rank: int, size: int) -> None:
    for path, dim in PLAN.items():
        owner, name = path.split(".")
        sub = getattr(block, owner)
        full = getattr(sub, name, None)
        if full is None:  # e.g. gate_proj without swiglu
            continue
        shard = (
            ColumnParallelLinear(full, rank, size)
            if dim == 0
            else RowParallelLinear(full, rank, size, group)
        )
        setattr(sub, name, shard)
    # Each sub-block is entered once (identity forward, all-reduce backward) and left through
    # its row-parallel linear (all-reduce forward).
    block.attn.register_forward_pre_hook(_enter_region(group))
    block.mlp.register_forward_pre_hook(_enter_region(group))
    _fork_rng_per_rank(block.attn, rank)


def _split_local_model(stack: nn.Module, group, rank: int, size: int) -> None:
    """Run 1/size of the local model's independent patch sequences on each tensor rank."""

    def pre(module: nn.Module, args: tuple, kwargs: dict):
        h = args[0]
        caches = args[1] if len(args) > 1 else kwargs.get("caches")
        if caches is not None or h.shape[0] % size:
            return None  # decoding, or rows that do not split evenly: run replicated
        module._tp_split = True
        return (_SplitRows.apply(h, group, rank, size), *args[1:]), kwargs

    def post(module: nn.Module, args: tuple, kwargs: dict, out: Tensor):
        if not getattr(module, "_tp_split", False):
            return None
        module._tp_split = False
        return _GatherRows.apply(out, group, rank, size)

    stack.register_forward_pre_hook(pre, with_kwargs=True)
    stack.register_forward_hook(post, with_kwargs=True)

    # Each rank's local-block gradients come from its own rows only: sum them over the group.
    # (The stack's final norm is applied by the caller, outside the split, on all rows.)
    def sum_grad(grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, group=group)
        return grad

    for p in stack.blocks.parameters():
        if p.requires_grad:
            p.register_hook(sum_grad)


def apply_tensor_parallel(
    model: nn.Module, tp_group, tp_rank: int, tp_size: int, split_local: bool = True
) -> nn.Module:
    """Shard the global model's blocks over the tensor group (in place; returns the model).

    `model` is a MegaByte or ByteTransformer built from the run's seed, identical on every
    rank; each rank keeps its slice of the full weights.
    """
    if tp_size == 1:
        return model
    for block in model.global_model.blocks:
        _shard_block(block, tp_group, tp_rank, tp_size)
    local = getattr(model, "local_model", None)
    if split_local and local is not None:
        _split_local_model(local, tp_group, tp_rank, tp_size)
    return model


def shard_of(name: str, full: Tensor, rank: int, size: int) -> Tensor:
    """This rank's slice of the full plain-model tensor `name` (the tensor itself if replicated)."""
    dim = partition_dim_of(name)
    if dim is None or size == 1:
        return full
    return full.chunk(size, dim=dim)[rank]


def merge_shards(name: str, shards: list[Tensor]) -> Tensor:
    """Full tensor from the per-tensor-rank tensors of plain-model parameter `name`."""
    dim = partition_dim_of(name)
    if dim is None or len(shards) == 1:
        return shards[0]
    return torch.cat(shards, dim=dim)
