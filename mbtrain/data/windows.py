"""Cut documents into samples of at most `seq_len` bytes, recording every piece.

Each sample is a window of bytes plus, per document piece in it, `(doc_id, offset, length,
doc_size)`. That is enough to (a) build attention/loss masks at document boundaries and (b)
reconstruct every document exactly: concatenate its pieces in offset order.

Two modes:
* pack: the documents form one byte stream that is cut into full windows; a piece may end one
  window and continue in the next. No padding except at the very end of a part.
* pad: every document starts a new window; its last window is stored short and padded by the
  loader (mask False). Wasteful for short documents, but no window mixes documents.

Windows are stored unpadded (the loader pads), so pad mode costs no disk space.

A window reaches its sink as `chunks`: read-only views into the documents, in order, whose
concatenation is the window. Nothing is copied here; the shard writer copies each byte once,
when it assembles a shard (copies per window were a fifth of `prepare`'s time on small files).
The documents must therefore not be mutated after `add` (they are `bytes` everywhere).
"""

from __future__ import annotations

from collections.abc import Callable

Piece = tuple[str, int, int, int]
Sink = Callable[[list[memoryview], list[Piece]], None]
"""Receives each finished window: its chunks and its pieces `(doc_id, offset, length, doc_size)`
(one chunk per piece)."""


def make_sample(data: bytes, pieces: list[Piece]) -> dict:
    """The MDS row of one window as a dict (see `writer.COLUMNS`; for streaming's MDSWriter)."""
    import numpy as np

    return {
        "data": data,
        "doc_ids": [p[0] for p in pieces],
        "offsets": np.array([p[1] for p in pieces], dtype=np.int64),
        "lengths": np.array([p[2] for p in pieces], dtype=np.int64),
        "doc_sizes": np.array([p[3] for p in pieces], dtype=np.int64),
    }


class Windower:
    """Accumulates documents and emits finished windows to `sink`."""

    def __init__(self, seq_len: int, pack: bool, sink: Sink):
        self.seq_len, self.pack, self.sink = seq_len, pack, sink
        self.chunks: list[memoryview] = []
        self.pieces: list[Piece] = []
        self.fill = 0  # bytes in the open window
        self.samples = 0

    def add(self, doc_id: str, data: bytes) -> None:
        n, pos, view, seq_len = len(data), 0, memoryview(data), self.seq_len
        if not self.pack:
            while pos < n:
                take = min(seq_len, n - pos)
                self._emit([view[pos : pos + take]], [(doc_id, pos, take, n)])
                pos += take
            return
        while pos < n:
            take = min(seq_len - self.fill, n - pos)
            self.chunks.append(view[pos : pos + take])
            self.pieces.append((doc_id, pos, take, n))
            self.fill += take
            if self.fill == seq_len:
                self.flush()
            pos += take

    def flush(self) -> None:
        """Emit the partial window, if any (end of a part)."""
        if self.fill:
            self._emit(self.chunks, self.pieces)
            self.chunks, self.pieces, self.fill = [], [], 0

    def _emit(self, chunks: list[memoryview], pieces: list[Piece]) -> None:
        self.samples += 1
        self.sink(chunks, pieces)
