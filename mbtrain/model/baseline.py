"""The plain byte-level transformer baseline, built from the same blocks as MegaByte.

It exists to measure what the patching buys (the paper's comparisons), so it shares norms,
attention, MLP, positions and init with MegaByte. Position t's input is the embedding of
byte t-1; position 0 gets a learned start vector instead of a reserved byte value, so
`logits[:, t]` predicts `x[:, t]` exactly as MegaByte's do.

It offers the same decomposition as MegaByte (`embed_global`, `global_model.blocks`,
`local_head`, `local_logits`) so pipeline code treats both alike; here the "global" stack
is the whole transformer and the "local head" is the final norm plus the output head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mbtrain.model.config import ModelConfig
from mbtrain.model.documents import run_positions, run_starts
from mbtrain.model.layers import (
    AttentionContext,
    KVCache,
    TransformerStack,
    init_weights,
    trunc_normal_,
)
from mbtrain.model.loss import chunked_nll, chunked_nll_sum, masked_targets
from mbtrain.model.megabyte import N_BYTES
from mbtrain.model.staged import StagedModel


class ByteTransformer(StagedModel):
    """Decoder-only transformer over bytes; `forward(x)` returns next-byte logits (B, T, 256)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(N_BYTES, cfg.dim)
        self.pos = nn.Embedding(cfg.seq_len, cfg.dim) if cfg.pos == "learned" else None
        self.start = nn.Parameter(torch.empty(cfg.dim))
        self.global_model = TransformerStack(cfg, cfg.dim, cfg.layers, cfg.heads)
        self.head = nn.Linear(cfg.dim, N_BYTES, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        init_weights(self, cfg.init_std)
        trunc_normal_(self.start, cfg.init_std)
        if cfg.tie_local_embedding:
            self.head.weight = self.embed.weight

    def _check(self, x: Tensor, offset: int = 0) -> None:
        if x.dim() != 2:
            raise ValueError(f"expected byte ids of shape [B, T], got {tuple(x.shape)}")
        if self.pos is not None and offset + x.shape[1] > self.cfg.seq_len:
            raise ValueError(
                f"sequence of {offset + x.shape[1]} bytes is longer than model.seq_len "
                f"({self.cfg.seq_len}) of learned positions"
            )

    def embed_inputs(
        self,
        prev: Tensor | None,
        batch: int,
        offset: int,
        length: int,
        positions: Tensor | None = None,
        starts: Tensor | None = None,
    ) -> Tensor:
        """Inputs for positions offset..offset+length-1; `prev` holds the bytes before them.

        prev (B, length) are bytes offset-1..offset+length-2, or (B, length-1) when offset
        is 0 (position 0 takes the start vector).
        """
        parts = []
        if offset == 0:
            parts.append(self.start.expand(batch, 1, -1))
        if prev is not None and prev.shape[1] > 0:
            parts.append(self.embed(prev))
        h = torch.cat(parts, dim=1)  # (B, length, D)
        if starts is not None:  # documents' first bytes: the start vector (documents.py)
            h = torch.where(starts[..., None], self.start.expand_as(h), h)
        if self.pos is not None:
            if positions is None:
                positions = torch.arange(offset, offset + length, device=h.device)
            h = h + self.pos(positions)
        return h

    def embed_global_span(
        self, x: Tensor, start: int, stop: int, segments: Tensor | None = None
    ) -> Tensor:
        """Transformer input (B, stop-start, D) for positions [start, stop): the start vector
        at position 0 (and, with `segments`, at every document's first byte), else the
        previous byte; plus positions (from each document's start, with `segments`)."""
        self._check(x)
        prev = x[:, max(start - 1, 0) : stop - 1]
        positions = starts = None
        if segments is not None:
            starts = run_starts(segments)[:, start:stop]
            if self.pos is not None:
                positions = run_positions(segments)[:, start:stop]
        h = self.embed_inputs(prev, x.shape[0], start, stop - start, positions, starts)
        if start > 0:
            h = h + 0.0 * self.start[:1]  # every span uses every parameter (see MegaByte)
        return self.dropout(h)

    def attention_context(self, segments: Tensor | None) -> AttentionContext | None:
        return None if segments is None else AttentionContext(segments=segments)

    def local_logits(self, h_global: Tensor, x: Tensor, segments: Tensor | None = None) -> Tensor:
        """Next-byte logits (B, T, 256) from the blocks' output."""
        return self.head(self.global_model.norm(h_global))

    def local_nll_sum(
        self,
        h_global: Tensor,
        x: Tensor,
        mask: Tensor | None = None,
        segments: Tensor | None = None,
        before: Tensor | None = None,
        before_segment: Tensor | None = None,
    ) -> Tensor:
        """Summed NLL (nats) of x's bytes from the blocks' output, chunked over positions
        (the baseline needs nothing before the span: its blocks' output holds it all)."""
        return chunked_nll_sum(
            h_global,
            masked_targets(x, mask),
            self.global_model.norm,
            self.head,
            self.cfg.loss_chunk_size,
        )

    @torch.no_grad()
    def nll(self, x: Tensor) -> Tensor:
        """Per-byte NLL (B, T) in nats, chunked like `loss`, without autograd (for scoring)."""
        return chunked_nll(
            self.run_global(x), x, self.global_model.norm, self.head, self.cfg.loss_chunk_size
        )

    def new_global_caches(self) -> list[KVCache]:
        return self.global_model.new_caches()
