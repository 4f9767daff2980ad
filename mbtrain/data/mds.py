"""The rows of an mbtrain byte dataset in MDS form: its columns, and the encoding of a window
into one MDS row, byte for byte what streaming's `MDSWriter.encode_sample` gives
`make_sample(b"".join(chunks), pieces)` (windows.py), without a per-sample dict or numpy arrays.
"""

from __future__ import annotations

import json
import struct
from array import array

COLUMNS = {
    "data": "bytes",  # the window, unpadded (<= seq_len bytes)
    "doc_ids": "json",  # id of the document of each piece, in window order
    "offsets": "ndarray:int64",  # offset of each piece within its document
    "lengths": "ndarray:int64",  # length of each piece (sum == len(data))
    "doc_sizes": "ndarray:int64",  # full size of each piece's document
}
"""MDS columns of every mbtrain byte dataset."""

COLUMN_NAMES = sorted(COLUMNS)
"""The column order of every row and index: MDS stores columns sorted by name."""
assert COLUMN_NAMES == ["data", "doc_ids", "doc_sizes", "lengths", "offsets"]
_HEAD = struct.Struct("=5I")  # sizes of the 5 variable-size columns
assert array("I").itemsize == 4 and array("q").itemsize == 8


def _shape1(n: int) -> bytes:
    """MDS `ndarray:<dtype>` header of a 1-D array of n items: (ndim << 2 | shape dtype), shape."""
    if n < 1 << 8:
        return bytes((4, n))
    if n < 1 << 16:
        return b"\x05" + struct.pack("=H", n)
    if n < 1 << 32:
        return b"\x06" + struct.pack("=I", n)
    return b"\x07" + struct.pack("=Q", n)


def _i64(values) -> bytes:
    return array("q", values).tobytes()  # native order, as numpy's tobytes in MDSWriter


_ONE = struct.Struct("=2Bq2Bq2Bq")  # doc_sizes, lengths, offsets of a 1-piece window


class RowEncoder:
    """Encodes windows into MDS rows (the encoding `MDSWriter.encode_sample` gives
    `make_sample(b"".join(chunks), pieces)`), passing the window's chunks through uncopied.

    Per-window Python work is most of `prepare` on small files, hence the shortcuts: a
    document's JSON-quoted id is cached (a long document spans many windows), and a window of
    one piece (most windows of long documents) is packed with a single struct call.
    """

    def __init__(self):
        self.quoted: dict[str, bytes] = {}

    def _quote(self, doc_id: str) -> bytes:
        q = self.quoted.get(doc_id)
        if q is None:
            if len(self.quoted) > 4096:  # documents come in order: old ids are not needed
                self.quoted.clear()
            q = self.quoted[doc_id] = json.dumps(doc_id).encode()
        return q

    def encode(self, chunks, pieces: list[tuple[str, int, int, int]]) -> tuple[list, int]:
        """One row as `(parts, size)`: buffers whose concatenation is the row."""
        if len(pieces) == 1:
            doc_id, offset, n, doc_size = pieces[0]
            ids = b"[" + self._quote(doc_id) + b"]"
            tail = ids + _ONE.pack(4, 1, doc_size, 4, 1, n, 4, 1, offset)
            head = _HEAD.pack(n, len(ids), 10, 10, 10)
        else:
            shape = _shape1(len(pieces))
            ids = b"[" + b", ".join([self._quote(p[0]) for p in pieces]) + b"]"
            sizes = shape + _i64([p[3] for p in pieces])
            lengths = shape + _i64([p[2] for p in pieces])
            offsets = shape + _i64([p[1] for p in pieces])
            n = sum(p[2] for p in pieces)
            head = _HEAD.pack(n, len(ids), len(sizes), len(lengths), len(offsets))
            tail = b"".join((ids, sizes, lengths, offsets))
        return [head, *chunks, tail], len(head) + n + len(tail)
