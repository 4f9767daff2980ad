"""Micro-batches fetched in step with every rank.

A loader that fails on one rank (a dataset deleted or unreadable mid-run) must stop every
rank at the same point: a rank that raised alone would leave the others waiting in the next
collective until the watchdog fires. So each fetch is followed by one small all-reduce of
"got one / epoch over / failed", and a failure anywhere raises DataError on every rank
before any of them computes with the batch; the loop then saves a checkpoint at the last
completed step and stops, naming the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from mbtrain.errors import DataError
from mbtrain.train.engine import TrainEngine

_OK, _DONE, _FAILED = 0.0, 1.0, 2.0


class Inputs(NamedTuple):
    """One micro-batch on the device: bytes, loss mask, document ids (document masking)."""

    x: torch.Tensor
    mask: torch.Tensor
    segments: torch.Tensor | None


def to_inputs(batch: dict, device: torch.device, doc_mask: bool) -> Inputs:
    x = batch["x"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    segments = batch.get("segment_ids") if doc_mask else None
    if segments is not None:
        segments = segments.to(device, non_blocking=True)
    return Inputs(x, mask, segments)


def next_agreed(it: Iterator[dict], te: TrainEngine) -> dict | None:
    """The next batch of `it` on every rank, None on every rank once any rank's is exhausted;
    DataError on every rank if any rank failed to read."""
    batch, error = None, None
    try:
        batch = next(it)
        status = _OK
    except StopIteration:
        status = _DONE
    except DataError as e:
        status, error = _FAILED, e
    worst = max(te.all_reduce_max([status]))
    if worst == _FAILED:
        if error is not None:
            raise error
        raise DataError("another rank could not read its data (its log names the path)")
    return batch if worst == _OK else None
