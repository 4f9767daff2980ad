"""Per-rank random streams for regions whose ranks must draw different masks.

Dropout inside a region split across ranks (a tensor rank's heads, a context rank's span of
the sequence) must not repeat the same masks on every rank, while everything outside it must
stay identical on every rank (replicated weights, and the streams a checkpoint saves). So
each call draws one seed from the default generator (the same draw on every rank: the default
streams stay in step), then runs on a generator forked from that seed and the rank. Activation
checkpointing saves and restores the generator around a recomputed block, and a recomputed
call runs inside the same fork, so it draws the same masks again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Distinct salts keep the tensor and context streams apart when both axes are in use.
TENSOR_SALT = 7919
CONTEXT_SALT = 104729


@contextlib.contextmanager
def rank_stream(rank: int, salt: int) -> Iterator[None]:
    """Run the body on a generator forked from one default-stream draw and `rank`."""
    seed = int(torch.randint(0, 2**62, (1,)).item())  # same draw on every rank
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + salt * (rank + 1))
        yield
