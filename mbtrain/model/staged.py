"""What MegaByte and the baseline share: a model in three stages.

`embed_global` -> the global blocks -> `local_head` / `local_logits`. Pipeline parallelism
cuts the model along exactly these stages, so both architectures expose them, and the whole
model is only their composition.

The stages also work on a span of the global positions (`embed_global_span`,
`local_nll_sum`): context parallelism gives each rank a contiguous span of them. A global
position stands for `global_stride` bytes (the patch size; 1 for the baseline). The whole
model is the span [0, K), so both paths share every line of the math.
"""

from __future__ import annotations

from torch import Tensor, nn

from mbtrain.model.layers import AttentionContext
from mbtrain.model.loss import IGNORE, masked_targets


class StagedModel(nn.Module):
    """Composition of the stages; subclasses define them and `global_model.blocks`."""

    global_stride: int = 1
    """Bytes per global position (MegaByte: the patch size)."""

    def embed_global_span(
        self, x: Tensor, start: int, stop: int, segments: Tensor | None = None
    ) -> Tensor:
        """Global-model input for positions [start, stop) of the sequence x (B, T): position k
        sees only bytes of positions < k (the shift by one position); with `segments` (B, T),
        only bytes of its own document (documents.py)."""
        raise NotImplementedError

    def attention_context(self, segments: Tensor | None) -> AttentionContext | None:
        """The global attention's context for byte-level `segments` (None: no masking)."""
        raise NotImplementedError

    def local_nll_sum(
        self,
        h_global: Tensor,
        x: Tensor,
        mask: Tensor | None = None,
        segments: Tensor | None = None,
        before: Tensor | None = None,
        before_segment: Tensor | None = None,
    ) -> Tensor:
        """Summed next-byte NLL (nats) of the bytes x (B, n * global_stride) of a span of
        positions, from the global blocks' output for that span; masked bytes count 0.
        `segments` are x's document ids; `before` the bytes preceding x and `before_segment`
        the document id of the position before the span (a span after the first)."""
        raise NotImplementedError

    def embed_global(self, x: Tensor, segments: Tensor | None = None) -> Tensor:
        return self.embed_global_span(x, 0, -(-x.shape[1] // self.global_stride), segments)

    def local_logits(self, h_global: Tensor, x: Tensor, segments: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def local_head(
        self,
        h_global: Tensor,
        x: Tensor,
        mask: Tensor | None = None,
        segments: Tensor | None = None,
    ) -> Tensor:
        """Mean next-byte cross-entropy (nats) over the unmasked bytes."""
        count = (masked_targets(x, mask) != IGNORE).sum().clamp(min=1)
        return self.local_nll_sum(h_global, x, mask, segments) / count

    def run_blocks(self, h: Tensor, ctx: AttentionContext | None = None) -> Tensor:
        for block in self.global_model.blocks:
            h = block(h, None, ctx)
        return h

    def run_global(self, x: Tensor, segments: Tensor | None = None) -> Tensor:
        h = self.embed_global(x, segments)
        return self.run_blocks(h, self.attention_context(segments))

    def forward(self, x: Tensor, segments: Tensor | None = None) -> Tensor:
        """Next-byte logits (B, T, 256); logits[:, t] depends only on x[:, :t] (and with
        `segments`, only on the bytes of its own document)."""
        return self.local_logits(self.run_global(x, segments), x, segments)

    def loss(self, x: Tensor, mask: Tensor | None = None, segments: Tensor | None = None) -> Tensor:
        """Mean next-byte cross-entropy in nats over positions where mask (B, T) is True."""
        return self.local_head(self.run_global(x, segments), x, mask, segments)
