"""Memory-light next-byte cross-entropy.

At T = 1M bytes a full [B, T, 256] float32 logit tensor is 1 GiB per sequence, and autograd
would keep it (or the log-softmax of it) alive until backward. So the head and the
cross-entropy run over chunks of positions, each under activation checkpointing: only the
chunk's hidden states (B*chunk, D) are saved and its logits are recomputed in backward, so at
most one chunk of logits exists at any time.

Masked positions (mask False, e.g. padding of a document tail) get target -100 and count
neither in the sum nor in the denominator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _chunk_nll(hidden: Tensor, targets: Tensor, norm: nn.Module, head: nn.Module) -> Tensor:
    logits = head(norm(hidden)).float()  # (N, 256), float32 for a stable log-softmax
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")


def masked_targets(x: Tensor, mask: Tensor | None) -> Tensor:
    """The byte values of x, with -100 where mask is False."""
    if mask is None:
        return x
    if mask.shape != x.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(x.shape)}")
    return x.masked_fill(~mask, IGNORE)


def chunked_nll_sum(
    hidden: Tensor, targets: Tensor, norm: nn.Module, head: nn.Module, chunk: int
) -> Tensor:
    """Sum of next-byte NLL (nats) of hidden (B, T, D) against targets (B, T), chunked over T."""
    total = hidden.new_zeros((), dtype=torch.float32)
    t = hidden.shape[1]
    for start in range(0, t, chunk):
        h = hidden[:, start : start + chunk].reshape(-1, hidden.shape[-1])  # (B*c, D)
        y = targets[:, start : start + chunk].reshape(-1)  # (B*c,)
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_chunk_nll, h, y, norm, head, use_reentrant=False)
        else:
            total = total + _chunk_nll(h, y, norm, head)
    return total


def chunked_nll(hidden: Tensor, x: Tensor, norm: nn.Module, head: nn.Module, chunk: int) -> Tensor:
    """Per-position NLL (B, T) in nats of x under hidden (B, T, D), without autograd."""
    out = []
    with torch.no_grad():
        for start in range(0, hidden.shape[1], chunk):
            logits = head(norm(hidden[:, start : start + chunk])).float()  # (B, c, 256)
            y = x[:, start : start + chunk]
            out.append(F.cross_entropy(logits.transpose(1, 2), y, reduction="none"))
    return torch.cat(out, dim=1)
