"""Context parallelism: each rank of a context group holds a share of every sequence.

`parallel.context = C = U x R`: U ranks exchange heads by DeepSpeed-Ulysses' all-to-all, R ranks
pass keys and values around a ring (`ring.py`). A sequence of K global positions (patches;
bytes for the baseline) is shared out as follows:

* Ulysses only (R = 1): C contiguous spans of K/C positions; context rank c holds
  [c K/C, (c+1) K/C).
* With a ring (R > 1): 2R chunks of K/2R positions; ring rank r holds chunks r and 2R-1-r
  (zigzag: every rank gets an early and a late chunk, so causal attention costs every rank
  the same), and each chunk is split again into U pieces, one per Ulysses rank: context rank
  c = r U + u holds piece u of both of ring rank r's chunks.

MegaByte needs little communication for it:

1. Every rank of a context group receives the same batch (all T bytes: the loader's
   data-parallel rank is shared along the context axis) and computes only its positions.
2. Global input: position k is the embedding of patch k-1. The first position of each range
   needs the patch before it: it is embedded here from the bytes, which every rank has, so the
   one-patch shift costs no message (position 0 takes the learned pad patch). Learned
   positions take the range's global offset.
3. The global blocks run on the rank's positions. Each attention's core (positions + SDPA) is
   wrapped: Ulysses' all-to-all turns (B, L, H, hd) into (B, U L, H/U, hd), all positions of
   the ring rank's share with H/U heads; the ring core (R > 1) attends them to the whole
   sequence, chunk pair by chunk pair, with their true positions (RoPE) and documents; without
   a ring the plain core attends over the whole sequence. An all-to-all turns it back. With
   tensor parallelism the heads are first split over the tensor group: H/TP must divide by U.
4. The local model runs on the rank's patches only: patches never look at each other.
5. Loss: the ranges' summed NLL divided by the whole sequence's byte count (every rank has the
   mask), so the context ranks' partial losses add up to the C=1 loss. The returned value is
   that sum (one scalar all-reduce), carried on the partial's gradient (all-reduce forward,
   identity backward): logging and evaluation see the C=1 value, and the gradients, summed over
   the context axis by DeepSpeed (its sequence-data-parallel group, data x context, averaged
   over the data axis only), are the C=1 gradients.

Dropout: every rank draws its own masks (`rng.rank_stream`, one default-stream draw shared
by the context group, forked by context rank); with one seed everywhere, position i and
position i + K/C of every sequence would be dropped together. (Attention dropout across ring
blocks is refused by the layout checks.)

ZeRO-3: DeepSpeed partitions parameters over the mpu's data group only, so a context rank's
parameters were reduced with nobody (each rank trained its own copy). `partition_zero3`
partitions them over data x context, the ranks that hold the same weights. ZeRO-3's
reduce-scatter then *averages* over that whole group, where the context partials must be
*summed* (ZeRO 0-2 divide by the data size only); the loss's backward multiplies by C to make
up for it (`grad_scale`).

Decoding (KV caches) and any call without the span context run the plain core on one rank.
A pipeline with context parallelism is refused at config time (DeepSpeed's pipeline engine
passes one tensor between stages and has no sequence-parallel support).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mbtrain.model.layers import AttentionContext, apply_rope, rope_cos_sin
from mbtrain.parallel.ring import RingAttention, RingPlan
from mbtrain.parallel.rng import CONTEXT_SALT, rank_stream
from mbtrain.parallel.tensor import _ReduceFromRegion


@dataclass(frozen=True)
class ContextShare:
    """Which global positions a context rank holds, for a sequence of K positions."""

    ulysses: int
    ulysses_rank: int
    ring: int
    ring_rank: int

    def ranges(self, k: int) -> list[tuple[int, int]]:
        """[start, stop) ranges of global positions, in this rank's local order."""
        if self.ring == 1:
            per = k // self.ulysses
            return [(self.ulysses_rank * per, (self.ulysses_rank + 1) * per)]
        chunk = k // (2 * self.ring)
        piece = chunk // self.ulysses
        u = self.ulysses_rank
        return [
            (c * chunk + u * piece, c * chunk + (u + 1) * piece)
            for c in (self.ring_rank, 2 * self.ring - 1 - self.ring_rank)
        ]


class UlyssesCore(nn.Module):
    """An attention core that, on a share, attends over all of its Ulysses group's positions
    through all-to-alls (and over the whole sequence, when the core below is not a ring)."""

    def __init__(self, core: nn.Module, group: Any) -> None:
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        self.core = core
        # (B, L, H, hd): scatter the heads (dim 2), gather the sequence (dim 1).
        self.exchange = DistributedAttention(core, group, scatter_idx=2, gather_idx=1)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: Any = None,
        ctx: AttentionContext | None = None,
    ) -> Tensor:
        if cache is not None or ctx is None or not ctx.sequence_shard:
            return self.core(q, k, v, cache, ctx)
        return self.exchange(q, k, v, 0, None, cache=None, ctx=ctx)


class RingCore(nn.Module):
    """An attention core that attends a ring rank's two chunks to the whole sequence, passing
    keys and values around the ring (`ring.RingAttention`). Its input is what the Ulysses
    all-to-all gathered: U pieces of each chunk, interleaved ([A0, B0, A1, B1, ...]); they are
    put in chunk order ([A0..A(U-1), B0..B(U-1)]) for the ring and back for the all-to-all."""

    def __init__(self, core: nn.Module, group: Any, ranks: list[int], ring_rank: int, ulysses: int):
        super().__init__()
        self.core, self.group, self.ranks = core, group, tuple(ranks)
        self.ring_rank, self.ulysses = ring_rank, ulysses

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: Any = None,
        ctx: AttentionContext | None = None,
    ) -> Tensor:
        if cache is not None or ctx is None or not ctx.sequence_shard:
            return self.core(q, k, v, cache, ctx)
        length, hd = q.shape[1], q.shape[3]
        order = _chunk_order(length, self.ulysses, q.device)
        q, k, v = (t.index_select(1, order).transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        ring = len(self.ranks)
        chunk = length // 2
        starts = (self.ring_rank * chunk, (2 * ring - 1 - self.ring_rank) * chunk)
        if self.core.use_rope:
            positions = torch.cat([torch.arange(s, s + chunk, device=q.device) for s in starts])
            cos, sin = rope_cos_sin(positions, hd, self.core.rope_theta, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        plan = RingPlan(self.group, self.ranks, self.ring_rank, ctx.segments)
        out = RingAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), plan)
        return out.transpose(1, 2).index_select(1, torch.argsort(order))  # (B, L, H, hd)


def _chunk_order(length: int, ulysses: int, device: torch.device) -> Tensor:
    """Index putting [A0, B0, A1, B1, ...] (U pieces of two chunks) in chunk order."""
    piece = length // (2 * ulysses)
    idx = torch.arange(length, device=device).view(ulysses, 2, piece)  # (U, chunk, piece)
    return idx.transpose(0, 1).reshape(-1)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


class ContextParallelLoss(nn.Module):
    """The loss module under context parallelism (parameter names as LossModule's: `model.*`).

    `grad_scale`: what the partial loss's gradient is multiplied by (C under ZeRO-3, whose
    reduction averages over the context axis too; 1 otherwise)."""

    def __init__(
        self,
        model: nn.Module,
        group: Any,
        rank: int,
        share: ContextShare,
        grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.group, self.rank, self.share = group, rank, share
        self.grad_scale = grad_scale

    def forward(
        self, x: Tensor, mask: Tensor | None = None, segments: Tensor | None = None
    ) -> Tensor:
        if self.training and self.model.cfg.dropout > 0:
            with rank_stream(self.rank, CONTEXT_SALT):
                partial = self._partial(x, mask, segments)
        else:
            partial = self._partial(x, mask, segments)
        if self.grad_scale != 1.0:
            partial = _ScaleGrad.apply(partial, self.grad_scale)
        return _ReduceFromRegion.apply(partial, self.group)

    def _partial(self, x: Tensor, mask: Tensor | None, segments: Tensor | None) -> Tensor:
        """This rank's share of the sequence's loss (its NLL over the whole byte count)."""
        model, stride = self.model, self.model.global_stride
        ranges = self.share.ranges(x.shape[1] // stride)
        h = torch.cat([model.embed_global_span(x, a, b, segments) for a, b in ranges], dim=1)
        # Document masking: the cores attend over the whole sequence, so they get the whole
        # sequence's segments (every rank has them).
        ctx = model.attention_context(segments) or AttentionContext()
        ctx.sequence_shard = True
        h = model.run_blocks(h, ctx)  # (B, positions held, W)
        nll, offset = 0.0, 0
        for a, b in ranges:
            lo, hi = a * stride, b * stride
            nll = nll + model.local_nll_sum(
                h[:, offset : offset + b - a],
                x[:, lo:hi],
                None if mask is None else mask[:, lo:hi],
                None if segments is None else segments[:, lo:hi],
                # The bytes before the range (the local model's cross-patch context).
                x[:, :lo] if lo else None,
                segments[:, lo - 1] if lo and segments is not None else None,
            )
            offset += b - a
        count = mask.sum() if mask is not None else torch.tensor(x.numel(), device=x.device)
        return nll / count.clamp(min=1).to(nll.dtype)


def apply_context_parallel(module: nn.Module, groups: Any, zero_stage: int = 0) -> nn.Module:
    """Wrap the global attention cores (a ring inside Ulysses, as the layout says) and replace
    the loss module (returns the new module). `module` is the LossModule around the (possibly
    tensor-sharded) model; `groups` the run's ProcessGroups."""
    model = module.model
    context, ulysses = groups.group("context"), groups.group("ulysses")
    ring = groups.group("ring") if groups.layout.ring_enabled else None
    for block in model.global_model.blocks:
        core = block.attn.core
        if ring is not None:
            core = RingCore(core, ring.group, ring.ranks, ring.rank, ulysses.size)
        if ulysses.size > 1:
            core = UlyssesCore(core, ulysses.group)
        block.attn.core = core
    share = ContextShare(
        ulysses=ulysses.size,
        ulysses_rank=ulysses.rank,
        ring=ring.size if ring is not None else 1,
        ring_rank=ring.rank if ring is not None else 0,
    )
    grad_scale = context.size if zero_stage == 3 else 1.0
    return ContextParallelLoss(model, context.group, context.rank, share, grad_scale)


def partition_zero3(module: nn.Module, groups: Any, ds_config: dict) -> None:
    """Partition `module`'s parameters for ZeRO-3 over `replica_group` (data x context) before
    `deepspeed.initialize`, which would otherwise partition them over the data group only and
    never reduce their gradients over the context axis. The engine then finds them already
    partitioned and keeps that group (its optimizer reduces over each parameter's own group)."""
    import deepspeed

    if ds_config.get("bf16", {}).get("enabled"):
        # The engine casts a module to bf16 only when it partitions it itself.
        module.bfloat16()
    deepspeed.zero.Init(
        module=module,
        data_parallel_group=groups.replica_group,
        config_dict_or_path=ds_config,
        mpu=groups.deepspeed_mpu(),  # batch arithmetic over the data axis, as the engine's
    )
