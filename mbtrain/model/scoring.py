"""Scoring a byte string under a model: total nats and count, three ways (paper, Table 11).

* basic: non-overlapping windows of `context` bytes; a byte near a window's start sees
  little context.
* sliding: windows advanced by `stride`; each window scores only the bytes not scored
  before (its last `stride` bytes, all of the first window), so every byte after the first
  window is predicted with at least `context - stride` bytes of context.
* strided (MegaByte's strided inference): within a patch, later bytes lean more on the
  weaker local model, so the paper runs the model twice on inputs offset by P/2 and takes
  each byte's prediction from the pass where it falls in the first half of its patch.
  Here each window [b, e) (as in `sliding`, with `stride`; stride = context gives the basic
  windows) is run as is (pass A) and shifted back by P/2, [b - P/2, e - P/2) (pass B), which
  moves the patch grid by P/2 and gives every byte P/2 more context. A byte in the second
  half of its pass-A patch takes its prediction from pass B, where it sits in the first half
  of a patch; the last P/2 bytes of a window, which pass B does not reach, keep pass A.
  The first window of the data has nothing before it, so its pass B is shifted forward,
  [b + P/2, e), and used only for bytes that keep at least P bytes of context in it.
  For the baseline (no patches) strided equals sliding.

Windows of equal length run together in batches of `batch_size`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mbtrain.model.megabyte import MegaByte


class ScoreResult(NamedTuple):
    """Total negative log-likelihood (nats) and number of bytes scored."""

    nats: float
    count: int

    @property
    def bpb(self) -> float:
        """Bits per byte."""
        return self.nats / max(self.count, 1) / math.log(2)


def _windows(n: int, context: int, mode: str, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, score_from) of each window; bytes score_from..end-1 are scored in it."""
    if mode == "basic":
        return [(b, min(b + context, n), b) for b in range(0, n, context)]
    out, begin, prev_end = [], 0, 0
    while prev_end < n:
        end = min(begin + context, n)
        out.append((begin, end, prev_end))
        prev_end = end
        begin += stride
    return out


@torch.no_grad()
def _span_nll(
    model: nn.Module, data: Tensor, spans: list[tuple[int, int]], batch_size: int
) -> dict[tuple[int, int], Tensor]:
    """NLL (nats) of every byte of each span data[b:e], each span run as its own sequence."""
    by_len: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for span in dict.fromkeys(spans):
        by_len[span[1] - span[0]].append(span)
    out: dict[tuple[int, int], Tensor] = {}
    for group in by_len.values():
        for i in range(0, len(group), batch_size):
            batch = group[i : i + batch_size]
            x = torch.stack([data[b:e] for b, e in batch])  # (n, L)
            nll = model.nll(x)  # (n, L), chunked: no (n, L, 256) logits at long contexts
            out.update(zip(batch, nll.cpu()))
    return out


def score_bytes(
    model: nn.Module,
    data: bytes | Tensor,
    context: int,
    mode: str = "basic",
    stride: int | None = None,
    batch_size: int = 1,
) -> ScoreResult:
    """Total nats and count of `data` under `model` with windows of `context` bytes.

    `stride` (sliding, strided) defaults to context // 2 for sliding and context for strided.
    """
    if mode not in ("basic", "sliding", "strided"):
        raise ValueError(f"mode must be basic, sliding or strided, got {mode!r}")
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise ValueError(f"context must be an integer >= 1, got {context!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if stride is None:  # at least 1: a context of 1 byte slides by 1
        stride = max(context // 2, 1) if mode == "sliding" else context
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in [1, context ({context})], got {stride}")
    device = next(model.parameters()).device
    if isinstance(data, Tensor):
        seq = data.reshape(-1).to(device=device, dtype=torch.long)
    else:
        seq = torch.tensor(list(data), dtype=torch.long, device=device)
    n = seq.numel()
    if n == 0:
        return ScoreResult(0.0, 0)
    windows = _windows(n, context, mode, stride)
    p = model.patch_size if mode == "strided" and isinstance(model, MegaByte) else 1
    half = p // 2
    passes = []  # (window, shifted window or None)
    for b, e, start in windows:
        shifted = None
        if half:
            shifted = (b - half, e - half) if b >= half else (b + half, e)
            if shifted[1] <= shifted[0]:
                shifted = None
        passes.append(((b, e, start), shifted))
    spans = [(b, e) for (b, e, _), _ in passes] + [s for _, s in passes if s is not None]

    was_training = model.training
    model.eval()
    try:
        nll = _span_nll(model, seq, spans, batch_size)
    finally:
        model.train(was_training)

    total = 0.0
    for (b, e, start), shifted in passes:
        chosen = nll[(b, e)][start - b :]  # pass A, bytes start..e-1
        if shifted is not None:
            bb, be = shifted
            i = torch.arange(start, e)
            apos, bpos = i - b, i - bb
            use_b = (apos % p >= half) & (i < be) & (bpos >= torch.clamp(apos, max=p))
            chosen = torch.where(use_b, nll[shifted][bpos.clamp(0, be - bb - 1)], chosen)
        total += float(chosen.double().sum())
    return ScoreResult(total, n)
