"""Train/validation assignment by document.

A document's split depends only on the list of input files, its stable id and the seed,
never on which worker read it or in which order: N workers + merge, one worker, or a re-run
all agree, and no document straddles the splits because the decision is taken once per
document before windowing.

Rules (`--val-docs` overrides them all):
* Files read as raw bytes are one document each, so their number is known before anything is
  read: they are ranked by a hash of (seed, file id) and the first `round(val_fraction * n)`
  go to val. With a fraction > 0 and at least two documents, at least one goes to val and at
  least one stays in train. Corpora of a few million-byte documents (where a per-document
  coin flip often draws no validation document at all) get an exact, non-empty split.
* Documents inside JSON Lines, Parquet and Arrow files (usually thousands per file) go to val
  when the hash of (seed, document id) falls below the fraction. If no raw file went to val,
  the first document read from the structured file with the lowest hash goes to val too, so a
  small structured corpus is never left without validation data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

RULE_VERSION = 2
"""Part of the prepare fingerprint: outputs split by an earlier rule are not mixed in."""


def _unit(seed: int, key: str) -> float:
    data = f"{seed}\0{key}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2**64


class Splitter:
    """Decides `train` or `val` per document (see the module docstring)."""

    def __init__(
        self,
        val_fraction: float,
        val_docs: list[str],
        seed: int = 0,
        sources: Sequence[Any] = (),
    ):
        self.val_fraction = val_fraction
        self.val_docs = set(val_docs)
        self.seed = seed
        raw = [s.file_id for s in sources if s.format == "raw"]
        structured = [s.file_id for s in sources if s.format != "raw"]
        self.raw_val: set[str] = set()
        self.forced: str | None = None  # structured file whose first document goes to val
        self._forced_done = False
        self.note = ""
        if self.val_docs or val_fraction <= 0:
            return
        n = len(raw)
        k = round(val_fraction * n)
        if k == 0 and (n >= 2 or (n == 1 and structured)):
            k = 1
            self.note = f"val_fraction {val_fraction} of {n} raw files rounds to 0: 1 goes to val"
        if k >= n and not structured and n >= 2:
            k = n - 1
            self.note = (
                f"val_fraction {val_fraction} of {n} raw files: {k} to val, 1 kept for train"
            )
        if n == 1 and not structured:
            self.note = "a single document cannot be split: it goes to train, val stays empty"
        ranked = sorted(raw, key=lambda fid: (_unit(seed, fid), fid))
        self.raw_val = set(ranked[:k])
        if not self.raw_val and structured:
            self.forced = min(structured, key=lambda fid: (_unit(seed, fid), fid))

    def split_of(self, doc_id: str, file_id: str) -> str:
        """`val` or `train` for one document (call in the order documents are read)."""
        if self.val_docs:
            return "val" if doc_id in self.val_docs or file_id in self.val_docs else "train"
        if self.val_fraction <= 0:
            return "train"
        if doc_id == file_id:  # a raw file: one document
            return "val" if file_id in self.raw_val else "train"
        if file_id == self.forced and not self._forced_done:
            self._forced_done = True
            return "val"
        return "val" if _unit(self.seed, doc_id) < self.val_fraction else "train"
