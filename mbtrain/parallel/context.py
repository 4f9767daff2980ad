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

Decoding (KV caches) and any call without the span context run the plain core on one rank.
A pipeline with context parallelism is refused at config time (DeepSpeed's pipeline engine
passes one tensor between stages and has no sequence-parallel support).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mbtrain.model.layers import AttentionContext
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


class ContextParallelLoss(nn.Module):
    """The loss module under context parallelism (parameter names as LossModule's: `model.*`)."""

    def __init__(self, model: nn.Module, group: Any, rank: int, size: int) -> None:
        super().__init__()
        self.model = model
        self.group, self.rank, self.size = group, rank, size

    def span(self, t: int) -> tuple[int, int]:
        """[start, stop) of this rank's global positions in a sequence of t bytes."""
        positions = t // self.model.global_stride
        per = positions // self.size
        return self.rank * per, (self.rank + 1) * per

    def forward(
        self, x: Tensor, mask: Tensor | None = None, segments: Tensor | None = None
    ) -> Tensor:
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
        partial = nll / count.clamp(min=1).to(nll.dtype)
        return _ReduceFromRegion.apply(partial, self.group)


def apply_context_parallel(module: nn.Module, group: Any, rank: int, size: int) -> nn.Module:
    """Wrap the global attention cores and replace the loss module (returns the new module).

    `module` is the LossModule around the (possibly tensor-sharded) model."""
    model = module.model
    for block in model.global_model.blocks:
        block.attn.core = UlyssesCore(block.attn.core, group)
    return ContextParallelLoss(model, group, rank, size)
