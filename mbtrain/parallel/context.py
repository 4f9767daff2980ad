"""Context parallelism: each rank of a context group holds a contiguous share of every sequence.

With `parallel.context = C`, a sequence of K global positions (patches; bytes for the
baseline) is split into C contiguous spans of K/C positions; context rank r holds positions
[r*K/C, (r+1)*K/C). MegaByte needs little communication for it:

1. Every rank of a context group receives the same batch (all T bytes: the loader's
   data-parallel rank is shared along the context axis) and computes only its span.
2. Global input: position k is the embedding of patch k-1. The first position of rank r's
   span needs the last patch of rank r-1's span: it is embedded here from the bytes, which
   every rank has, so the one-patch shift costs no message (rank 0 uses the learned pad
   patch). Learned positions take the span's global offset.
3. The global blocks run on the span. Each attention's core (positions + SDPA) is wrapped by
   DeepSpeed-Ulysses (`deepspeed.sequence.layer.DistributedAttention`): an all-to-all turns
   (B, K/C, H, hd) into (B, K, H/C, hd), the core attends over the whole sequence (so RoPE
   sees the true positions 0..K-1), and an all-to-all turns it back. With tensor
   parallelism the heads are first split over the tensor group: H/TP must divide by C.
4. The local model runs on the span's patches only: patches never look at each other.
5. Loss: the span's summed NLL divided by the whole sequence's byte count (every rank has the
   mask), so the context ranks' partial losses add up to the C=1 loss. The returned value is
   that sum (one scalar all-reduce), carried on the partial's gradient (all-reduce forward,
   identity backward): logging and evaluation see the C=1 value, and the gradients, summed over
   the context axis by DeepSpeed (its sequence-data-parallel group, data x context, averaged
   over the data axis only), are the C=1 gradients.

Dropout: every span draws its own masks (`rng.rank_stream`, one default-stream draw shared
by the context group, forked by context rank); with one seed everywhere, position i and
position i + K/C of every sequence would be dropped together.

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

from typing import Any

import torch
from torch import Tensor, nn

from mbtrain.model.layers import AttentionContext
from mbtrain.parallel.rng import CONTEXT_SALT, rank_stream
from mbtrain.parallel.tensor import _ReduceFromRegion


class UlyssesCore(nn.Module):
    """An attention core that, on a span, attends over the whole sequence through all-to-alls."""

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
        self, model: nn.Module, group: Any, rank: int, size: int, grad_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.model = model
        self.group, self.rank, self.size = group, rank, size
        self.grad_scale = grad_scale

    def span(self, t: int) -> tuple[int, int]:
        """[start, stop) of this rank's global positions in a sequence of t bytes."""
        positions = t // self.model.global_stride
        per = positions // self.size
        return self.rank * per, (self.rank + 1) * per

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
        """This span's share of the sequence's loss (its NLL over the whole byte count)."""
        model, stride = self.model, self.model.global_stride
        start, stop = self.span(x.shape[1])
        h = model.embed_global_span(x, start, stop, segments)  # (B, K/C, W)
        # Document masking: the core attends over the whole sequence, so it gets the whole
        # sequence's segments (every rank has them).
        ctx = model.attention_context(segments) or AttentionContext()
        ctx.sequence_shard = True
        h = model.run_blocks(h, ctx)
        lo, hi = start * stride, stop * stride
        x_span = x[:, lo:hi]
        mask_span = None if mask is None else mask[:, lo:hi]
        seg_span = None if segments is None else segments[:, lo:hi]
        # The bytes before the span (the local model's cross-patch context), from x itself.
        before = x[:, :lo] if lo else None
        before_seg = segments[:, lo - 1] if lo and segments is not None else None
        nll = model.local_nll_sum(h, x_span, mask_span, seg_span, before, before_seg)
        count = mask.sum() if mask is not None else torch.tensor(x.numel(), device=x.device)
        return nll / count.clamp(min=1).to(nll.dtype)


def apply_context_parallel(
    module: nn.Module, group: Any, rank: int, size: int, zero_stage: int = 0
) -> nn.Module:
    """Wrap the global attention cores and replace the loss module (returns the new module).

    `module` is the LossModule around the (possibly tensor-sharded) model."""
    model = module.model
    for block in model.global_model.blocks:
        block.attn.core = UlyssesCore(block.attn.core, group)
    return ContextParallelLoss(
        model, group, rank, size, grad_scale=size if zero_stage == 3 else 1.0
    )


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
