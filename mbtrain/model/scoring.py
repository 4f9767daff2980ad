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

Batches hold about `batch_size` full windows' worth of bytes: windows (of one document or of
many, `score_documents`) are sorted by length and packed, the shorter ones right-padded to the
longest of their batch. Padding after a window's end changes none of its bytes' predictions
(the model is causal: a byte sees only the bytes before it), and it lets the many short
windows of a split of short documents (each document's last window) run as a few large
batches instead of one small batch each: operations large enough to share among the cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mbtrain.model.megabyte import MegaByte

ROUND_BYTES = 1 << 22
"""Documents are scored in rounds of about this many bytes (at least one document): enough
windows to pack full batches from, while the per-byte losses held stay bounded."""


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


class _Pass(NamedTuple):
    """One window of one document: bytes start..end-1 are scored in it, from the window
    [begin, end) and, in strided mode, the shifted window (None where there is none)."""

    doc: int
    begin: int
    end: int
    start: int
    shifted: tuple[int, int] | None


def _passes(doc: int, n: int, context: int, mode: str, stride: int, half: int) -> list[_Pass]:
    out = []
    for b, e, start in _windows(n, context, mode, stride):
        shifted = None
        if half:
            shifted = (b - half, e - half) if b >= half else (b + half, e)
            if shifted[1] <= shifted[0]:
                shifted = None
        out.append(_Pass(doc, b, e, start, shifted))
    return out


Span = tuple[int, int, int]  # (document, begin, end): one sequence the model runs


def _batches(spans: Iterable[Span], budget: int) -> Iterator[list[Span]]:
    """The spans, longest first, in batches of at most `budget` bytes once padded."""
    batch: list[Span] = []
    for span in sorted(set(spans), key=lambda s: (s[1] - s[2], s)):  # longest first: -length
        longest = batch[0][2] - batch[0][1] if batch else span[2] - span[1]
        if batch and (len(batch) + 1) * longest > budget:
            yield batch
            batch = []
        batch.append(span)
    if batch:
        yield batch


@torch.no_grad()
def _span_nll(
    model: nn.Module,
    seqs: Sequence[Tensor],
    spans: Iterable[Span],
    budget: int,
    credit: dict[Span, int],
    on_batch: Callable[[int, int], None] | None,
) -> dict[Span, Tensor]:
    """NLL (nats) of every byte of each span seqs[d][b:e], each span run as its own sequence
    (right-padded to the longest of its batch; see the module docstring)."""
    out: dict[Span, Tensor] = {}
    for batch in _batches(spans, budget):
        longest = batch[0][2] - batch[0][1]
        device = seqs[batch[0][0]].device
        x = torch.zeros(len(batch), longest, dtype=torch.long, device=device)  # (n, L)
        for row, (d, b, e) in enumerate(batch):
            x[row, : e - b] = seqs[d][b:e]
        nll = model.nll(x).cpu()  # (n, L), chunked: no (n, L, 256) logits at long contexts
        for row, (d, b, e) in enumerate(batch):
            out[(d, b, e)] = nll[row, : e - b]
        if on_batch is not None:
            on_batch(sum(credit.get(span, 0) for span in batch), x.numel())
    return out


def _as_sequence(data: bytes | Tensor, device: torch.device) -> Tensor:
    if isinstance(data, Tensor):
        return data.reshape(-1).to(device=device, dtype=torch.long)
    # frombuffer: no Python int per byte (a list of 50 MB of ints takes seconds)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0)
    return raw.to(device=device, dtype=torch.long)


def _check(mode: str, context: int, stride: int | None, batch_size: int) -> int:
    """The stride to use, or ValueError naming the argument out of range."""
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
    return stride


def score_documents(
    model: nn.Module,
    docs: Sequence[bytes | Tensor],
    context: int,
    mode: str = "basic",
    stride: int | None = None,
    batch_size: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[ScoreResult]:
    """Nats and count of each document, scored on its own (no window spans two documents),
    the windows of many documents batched together. `on_batch(scored, computed)` after each
    batch: the bytes it finished scoring, and the bytes it ran (padding included).

    `stride` (sliding, strided) defaults to context // 2 for sliding and context for strided;
    a batch holds at most `batch_size` x `context` bytes, padding included."""
    stride = _check(mode, context, stride, batch_size)
    device = next(model.parameters()).device
    p = model.patch_size if mode == "strided" and isinstance(model, MegaByte) else 1
    results: list[ScoreResult] = []
    was_training = model.training
    model.eval()
    try:
        for first, last in _rounds([len(d) if isinstance(d, bytes) else d.numel() for d in docs]):
            seqs = [_as_sequence(docs[i], device) for i in range(first, last)]
            results.extend(
                _score_round(model, seqs, context, mode, stride, p, batch_size, on_batch)
            )
    finally:
        model.train(was_training)
    return results


def _rounds(lengths: list[int]) -> Iterator[tuple[int, int]]:
    """[first, last) document ranges of about ROUND_BYTES each (at least one document)."""
    first, size = 0, 0
    for i, n in enumerate(lengths):
        if size and size + n > ROUND_BYTES:
            yield first, i
            first, size = i, 0
        size += n
    if first < len(lengths):
        yield first, len(lengths)


def _score_round(
    model: nn.Module,
    seqs: list[Tensor],
    context: int,
    mode: str,
    stride: int,
    p: int,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None,
) -> list[ScoreResult]:
    """The documents of one round; `p` the patch size in strided mode, else 1."""
    half = p // 2
    passes = [
        w
        for d, seq in enumerate(seqs)
        for w in _passes(d, seq.numel(), context, mode, stride, half)
    ]
    credit: dict[Span, int] = {}  # bytes a span completes (a progress display counts them)
    spans: list[Span] = []
    for w in passes:
        key = (w.doc, w.begin, w.end)
        spans.append(key)
        credit[key] = credit.get(key, 0) + w.end - w.start
        if w.shifted is not None:
            spans.append((w.doc, *w.shifted))
    nll = _span_nll(model, seqs, spans, batch_size * context, credit, on_batch)

    totals = [0.0] * len(seqs)
    for w in passes:
        b, e, start = w.begin, w.end, w.start
        chosen = nll[(w.doc, b, e)][start - b :]  # pass A, bytes start..e-1
        if w.shifted is not None:
            bb, be = w.shifted
            i = torch.arange(start, e)
            apos, bpos = i - b, i - bb
            use_b = (apos % p >= half) & (i < be) & (bpos >= torch.clamp(apos, max=p))
            shifted = nll[(w.doc, bb, be)]
            chosen = torch.where(use_b, shifted[bpos.clamp(0, be - bb - 1)], chosen)
        totals[w.doc] += float(chosen.double().sum())
    return [ScoreResult(total, seq.numel()) for total, seq in zip(totals, seqs)]


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
    return score_documents(model, [data], context, mode, stride, batch_size)[0]
