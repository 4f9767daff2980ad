"""Train/validation assignment by document.

A document's split depends only on its stable id (and the seed), never on which worker read
it or in which order: N workers + merge, one worker, or a re-run all agree, and no document
straddles the splits because the decision is taken once per document before windowing.
"""

from __future__ import annotations

import hashlib


class Splitter:
    """Decides `train` or `val` per document id."""

    def __init__(self, val_fraction: float, val_docs: list[str], seed: int = 0):
        self.val_fraction = val_fraction
        self.val_docs = set(val_docs)
        self.seed = seed

    def split_of(self, doc_id: str, file_id: str) -> str:
        """`val` if listed explicitly (by doc or file id), else by a uniform hash of the id."""
        if self.val_docs:
            return "val" if doc_id in self.val_docs or file_id in self.val_docs else "train"
        if self.val_fraction <= 0:
            return "train"
        h = hashlib.blake2b(f"{self.seed}\0{doc_id}".encode(), digest_size=8).digest()
        return "val" if int.from_bytes(h, "big") / 2**64 < self.val_fraction else "train"
