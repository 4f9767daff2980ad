"""Reading a prepared split back as documents, in stored order (eval, baselines, tests)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

from mbtrain.data.shm import streaming_world
from mbtrain.data.splits import check_split
from mbtrain.errors import DataError


def iter_documents(path: str, cache: str | None = None) -> Iterator[tuple[str, bytes]]:
    """Reconstruct the documents of a split, in stored order: `(doc_id, original bytes)`.

    Pieces of a document are consecutive in storage (one writer wrote them in order), so this
    streams with one document in memory. Raises DataError if pieces do not line up.
    """
    from streaming import StreamingDataset

    if not check_split(path, None, need_samples=False).get("samples"):
        return
    tmp = tempfile.mkdtemp(prefix="mbtrain-read-", dir=cache)
    try:
        with streaming_world(0, 1):
            ds = StreamingDataset(remote=path, local=tmp, shuffle=False, batch_size=1)
        cur_id, cur, size = None, bytearray(), 0
        for i in range(ds.num_samples):
            s = ds.get_item(i)
            data, pos = s["data"], 0
            for doc_id, off, ln, dsz in zip(
                s["doc_ids"], s["offsets"], s["lengths"], s["doc_sizes"]
            ):
                if doc_id != cur_id:
                    if cur_id is not None:
                        raise DataError(
                            f"{path}: document {cur_id} ends at {len(cur)} of {size} bytes"
                        )
                    cur_id, cur, size = doc_id, bytearray(), int(dsz)
                if off != len(cur):
                    raise DataError(
                        f"{path}: document {doc_id} piece at {off}, expected {len(cur)}"
                    )
                cur += data[pos : pos + ln]
                pos += int(ln)
                if len(cur) == size:
                    yield cur_id, bytes(cur)
                    cur_id = None
        if cur_id is not None:
            raise DataError(f"{path}: document {cur_id} is truncated")
        del ds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def iter_val_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """The raw bytes of a split's documents, concatenated in stored order (e.g. for gzip)."""
    out = bytearray()
    for _, data in iter_documents(path):
        out += data
        if max_bytes is not None and len(out) >= max_bytes:
            return bytes(out[:max_bytes])
    return bytes(out)
