"""Document boundaries inside a packed window: what the model derives from segment ids.

A training window may hold the end of one document and the start of the next. `segments`
(B, T) gives each byte the index of its document piece in the window (-1 at padding). With
document masking (`model.doc_mask`) the model makes every document see only itself:

* the loader lays documents out on patch boundaries (at most P-1 bytes of padding after
  each, masked out of the loss), so every patch belongs to one document and the patch-level
  segment ids are those of each patch's first byte;
* the global input of the first patch of a document is the learned pad patch (as at the
  start of a sequence), not the embedding of the previous document's last patch;
* positions count from the start of each document's run in the window;
* global attention is restricted to the same document (and causal); the local model never
  crosses a patch, hence never a document (its previous-patch context, if any, is replaced
  by the pad embedding across a boundary).

So a document's logits do not depend on the other documents of its window, and equal those
of the document alone (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor


def run_starts(segments: Tensor) -> Tensor:
    """(B, L) bool: True where a run of equal ids begins (position 0 included)."""
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return starts


def run_positions(segments: Tensor) -> Tensor:
    """(B, L) long: each position's index within its run of equal ids."""
    b, length = segments.shape
    idx = torch.arange(length, device=segments.device).expand(b, length)
    start_idx = torch.where(run_starts(segments), idx, torch.zeros_like(idx))
    return idx - torch.cummax(start_idx, dim=1).values


def patch_segments(segments: Tensor, patch_size: int) -> Tensor:
    """(B, K) segment id of each patch: that of its first byte (patches are aligned to
    documents by the loader, so this is the whole patch's)."""
    return segments[:, ::patch_size]


def document_mask(segments: Tensor) -> Tensor:
    """(B, 1, L, L) bool attention mask: causal and within the same segment."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    return (same & causal)[:, None]
