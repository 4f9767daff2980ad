"""MEGABYTE (Yu et al., 2023): a global transformer over patches and a local one within them.

Shapes: B sequences of T bytes, patch size P, K = ceil(T / P) patches, global width P*D_G,
local width D_L.

1. Each byte gets a global embedding (D_G) plus, for `pos: learned`, a per-byte position
   embedding; the P embeddings of a patch are concatenated into one vector (P*D_G).
2. A learned pad patch is prepended and the last patch dropped, so global output k depends
   only on bytes of patches < k.
3. The global model is a causal transformer over the K patch positions.
4. Global output k is split into P slices of D_G, each projected to D_L by one shared linear
   map (`global_to_local`).
5. Local input = that projection + the local embedding of the previous byte in the patch
   (a learned local pad at position 0 of every patch).
6. The local model is a small causal transformer over the P positions of each patch; the
   K patches run as one batch of B*K sequences.
7. A linear head over 256 byte values.

Positions: with `pos: learned` (paper) only the global byte embedding gets a position term;
the local model has none of its own, as in the paper, because the projected global slice
it receives is already specific to the byte's position in the patch. With `pos: rope` there
are no position parameters at all: rotary angles come from the patch index in the global
model and from the byte-in-patch index in the local model, so any T works.

Lengths that are not a multiple of P (prompts, document tails) are padded internally with
zero vectors *after* embedding, never with a byte value: all 256 values are data. Padded
positions sit after every real byte, so causality keeps them from touching real outputs,
and they are cut off before the head.

For pipeline parallelism the forward pass decomposes into `embed_global(x)`, the blocks of
`global_model.blocks` called as `block(h)`, and `local_head(h, x, mask)` (loss) or
`local_logits(h, x)`; `ByteTransformer` has the same methods.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mbtrain.model.config import ModelConfig
from mbtrain.model.documents import patch_segments, run_positions, run_starts
from mbtrain.model.layers import (
    AttentionContext,
    KVCache,
    TransformerStack,
    ceil_div,
    init_weights,
    shift_right,
    trunc_normal_,
)
from mbtrain.model.loss import chunked_nll, chunked_nll_sum, masked_targets
from mbtrain.model.staged import StagedModel

N_BYTES = 256


@contextlib.contextmanager
def _blocks_without_checkpoint(stack: nn.Module):
    flags = [block.checkpoint for block in stack.blocks]
    for block in stack.blocks:
        block.checkpoint = False
    try:
        yield
    finally:
        for block, flag in zip(stack.blocks, flags):
            block.checkpoint = flag


class MegaByte(StagedModel):
    """MEGABYTE byte-level language model; `forward(x)` returns next-byte logits (B, T, 256)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, d_g, d_l = cfg.patch_size, cfg.global_dim, cfg.local_dim
        self.patch_size = self.global_stride = p
        self.global_embed = nn.Embedding(N_BYTES, d_g)
        self.global_pos = nn.Embedding(cfg.seq_len, d_g) if cfg.pos == "learned" else None
        self.global_pad = nn.Parameter(torch.empty(p * d_g))
        self.global_model = TransformerStack(cfg, p * d_g, cfg.global_layers, cfg.global_heads)
        self.global_to_local = nn.Linear(d_g, d_l, bias=False)
        self.local_embed = nn.Embedding(N_BYTES, d_l)
        self.local_pad = nn.Parameter(torch.empty(d_l))
        self.local_model = TransformerStack(cfg, d_l, cfg.local_layers, cfg.local_heads)
        self.head = nn.Linear(d_l, N_BYTES, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        init_weights(self, cfg.init_std)
        trunc_normal_(self.global_pad, cfg.init_std)
        trunc_normal_(self.local_pad, cfg.init_std)
        if cfg.tie_local_embedding:
            self.head.weight = self.local_embed.weight

    # -- global side -------------------------------------------------------------------------

    def _check(self, x: Tensor, offset: int = 0) -> None:
        if x.dim() != 2:
            raise ValueError(f"expected byte ids of shape [B, T], got {tuple(x.shape)}")
        if self.global_pos is not None and offset + x.shape[1] > self.cfg.seq_len:
            raise ValueError(
                f"sequence of {offset + x.shape[1]} bytes is longer than model.seq_len "
                f"({self.cfg.seq_len}) of learned positions"
            )

    def embed_patches(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """Patch embeddings (B, ceil(T/P), P*D_G) of bytes x (B, T) starting at byte `offset`
        (learned positions: `positions` (B, T) instead of offset.., when given)."""
        b, t = x.shape
        e = self.global_embed(x)  # (B, T, D_G)
        if self.global_pos is not None:
            if positions is None:
                positions = torch.arange(offset, offset + t, device=x.device)
            e = e + self.global_pos(positions)
        k = ceil_div(t, self.patch_size)
        e = F.pad(e, (0, 0, 0, k * self.patch_size - t))  # zero vectors, not a byte value
        return e.reshape(b, k, self.patch_size * e.shape[-1])  # (B, K, P*D_G)

    def embed_global_span(
        self, x: Tensor, start: int, stop: int, segments: Tensor | None = None
    ) -> Tensor:
        """Global model input (B, stop-start, P*D_G) for patch positions [start, stop): the
        embeddings of patches start-1 .. stop-2 of x (the learned pad patch for position 0).
        The whole sequence is the span [0, K): pad patch, then patches 0..K-2.

        With `segments` (B, T) (document masking, see documents.py) the first patch of every
        document gets the pad patch too, and positions count from each document's start."""
        self._check(x)
        p = self.patch_size
        lo, hi = max(start - 1, 0) * p, min((stop - 1) * p, x.shape[1])
        positions = None
        if segments is not None and self.global_pos is not None:
            positions = run_positions(segments)[:, lo:hi]
        e = self.embed_patches(x[:, lo:hi], offset=lo, positions=positions)  # (B, n, P*D_G)
        pad = self.global_pad.expand(x.shape[0], 1, -1)
        if start == 0:
            e = torch.cat([pad, e], dim=1)
        else:
            # The pad patch takes part (with a zero gradient) in every span: data-parallel
            # reducers that bucket gradients (ZeRO-2) need the same parameters on every rank.
            e = e + 0.0 * self.global_pad[:1]
        if segments is not None:
            starts = run_starts(patch_segments(segments, p))[:, start:stop, None]  # (B, n, 1)
            e = torch.where(starts, pad, e)
        return self.dropout(e)

    def attention_context(self, segments: Tensor | None) -> AttentionContext | None:
        """What the global attention needs for document masking: the patches' segments."""
        if segments is None:
            return None
        return AttentionContext(segments=patch_segments(segments, self.patch_size))

    # -- local side --------------------------------------------------------------------------

    def global_to_local_slices(self, h_global: Tensor) -> Tensor:
        """Final global norm, split into P slices of D_G, shared projection: (B, K, P, D_L)."""
        b, k, _ = h_global.shape
        h = self.global_model.norm(h_global).reshape(b, k, self.patch_size, -1)  # (B, K, P, D_G)
        return self.global_to_local(h)

    def local_context(
        self,
        e: Tensor,
        segments: Tensor | None,
        before: Tensor | None,
        before_segment: Tensor | None,
    ) -> Tensor:
        """The r = `model.local_context` bytes before each patch, embedded: (B, K, r, D_L).

        Paper section 2.3.2 (cross-patch attention): the local model also sees the last bytes
        of the previous patch. They are read from the bytes themselves, so patches stay
        independent (no state flows between them). The first patch of the sequence takes
        `before` (the embedded bytes before x (B, r, D_L), e.g. the previous context rank's)
        or the local pad; with `segments`, a patch that starts a document takes the pad too."""
        b, _, p, d = e.shape
        r = self.cfg.local_context
        pad = self.local_pad.expand(b, 1, r, d)
        first = pad if before is None else before[:, None]
        ctx = torch.cat([first, e[:, :-1, p - r :]], dim=1)  # (B, K, r, D_L)
        if segments is not None:
            seg = patch_segments(segments, p)  # (B, K)
            prev = torch.cat(
                [seg[:, :1] if before_segment is None else before_segment[:, None], seg[:, :-1]], 1
            )
            starts = seg != prev
            if before is None:
                starts[:, 0] = True
            ctx = torch.where(starts[:, :, None, None], pad, ctx)
        return ctx

    def local_inputs(
        self,
        h_global: Tensor,
        x: Tensor,
        segments: Tensor | None = None,
        before: Tensor | None = None,
        before_segment: Tensor | None = None,
    ) -> Tensor:
        """Local model input (B*K, r+P, D_L): the r context bytes before the patch (if
        `model.local_context`), then per byte the projected global slice + the previous byte's
        embedding (the local pad at the patch's first byte)."""
        b, t = x.shape
        p, r = self.patch_size, self.cfg.local_context
        g = self.global_to_local_slices(h_global)  # (B, K, P, D_L)
        k = g.shape[1]
        if r and before is not None:
            # The bytes before x go through the same embedding call as x: one call per
            # forward on every context rank (ZeRO-3 gathers a module's weights per call, and
            # the ranks' gathers must match).
            both = self.local_embed(torch.cat([before[:, -r:], x], dim=1))  # (B, r+T, D_L)
            before_e, x_e = both[:, :r], both[:, r:]
        else:
            before_e, x_e = None, self.local_embed(x)
        e = F.pad(x_e, (0, 0, 0, k * p - t)).reshape(b, k, p, -1)  # (B, K, P, D_L)
        inputs = g + shift_right(e, self.local_pad)  # (B, K, P, D_L)
        if r:
            ctx = self.local_context(e, segments, before_e, before_segment)
            inputs = torch.cat([ctx, inputs], dim=2)  # (B, K, r+P, D_L)
        return self.dropout(inputs).reshape(b * k, inputs.shape[2], -1)

    def local_hidden(
        self,
        h_global: Tensor,
        x: Tensor,
        segments: Tensor | None = None,
        before: Tensor | None = None,
        before_segment: Tensor | None = None,
    ) -> Tensor:
        """Local model output before its final norm, (B, T, D_L).

        The B*K patch sequences are independent, so with `model.local_chunk` they run in
        chunks of that many patches: at 1M bytes one batch would be 65,536+ sequences, past
        the batch limits of several fused attention kernels. Under activation checkpointing
        a chunk is recomputed as a whole in backward, so only one chunk's activations exist
        at a time (the chunks' inputs are kept instead of every block's)."""
        b, t = x.shape
        inputs = self.local_inputs(h_global, x, segments, before, before_segment)
        chunk = self.cfg.local_chunk
        if not chunk or chunk >= inputs.shape[0]:
            h = self.local_model(inputs)
        else:
            recompute = self.cfg.activation_checkpointing and torch.is_grad_enabled()
            parts = []
            for piece in inputs.split(chunk):
                if recompute:
                    parts.append(checkpoint(self._local_chunk, piece, use_reentrant=False))
                else:
                    parts.append(self.local_model(piece))
            h = torch.cat(parts)  # (B*K, r+P, D_L)
        h = h[:, self.cfg.local_context :]  # the context positions predict nothing
        return h.reshape(b, -1, h.shape[-1])[:, :t]

    def _local_chunk(self, piece: Tensor) -> Tensor:
        # Blocks inside a recomputed chunk need no checkpoint of their own.
        with _blocks_without_checkpoint(self.local_model):
            return self.local_model(piece)

    def local_logits(self, h_global: Tensor, x: Tensor, segments: Tensor | None = None) -> Tensor:
        """Next-byte logits (B, T, 256) from the global blocks' output."""
        return self.head(self.local_model.norm(self.local_hidden(h_global, x, segments)))

    def local_nll_sum(
        self,
        h_global: Tensor,
        x: Tensor,
        mask: Tensor | None = None,
        segments: Tensor | None = None,
        before: Tensor | None = None,
        before_segment: Tensor | None = None,
    ) -> Tensor:
        """Summed NLL (nats) of x's bytes from the global output of their patches (any span:
        patches are independent given the bytes before them); chunked over positions."""
        hidden = self.local_hidden(h_global, x, segments, before, before_segment)
        return chunked_nll_sum(
            hidden,
            masked_targets(x, mask),
            self.local_model.norm,
            self.head,
            self.cfg.loss_chunk_size,
        )

    # -- whole model -------------------------------------------------------------------------

    @torch.no_grad()
    def nll(self, x: Tensor) -> Tensor:
        """Per-byte NLL (B, T) in nats, chunked like `loss`, without autograd (for scoring)."""
        return chunked_nll(
            self.local_hidden(self.run_global(x), x),
            x,
            self.local_model.norm,
            self.head,
            self.cfg.loss_chunk_size,
        )

    # -- incremental decoding (used by mbtrain.model.decode) --------------------------------

    def new_global_caches(self) -> list[KVCache]:
        return self.global_model.new_caches()

    def new_local_caches(self) -> list[KVCache]:
        return self.local_model.new_caches()
