"""One part of one split, written as an MDS directory (local dir or object store).

Atomicity: a local part is written into a hidden `.<part>.tmp` directory and renamed into
place when finished, so a crashed worker never leaves a part that looks whole. A remote part
is uploaded by streaming as it goes (objects cannot be renamed); there the part's completion
marker, uploaded after `index.json`, is what says it is finished (see `prepare.py`).

Two writers of the same bytes:
* `FastMDSWriter` (local outputs with zstd or no compression, the usual case): encodes each
  window straight from `(data, pieces)` into an MDS row, with no per-sample dict or numpy
  arrays, and without importing `streaming` at all (its package import pulls in torch and
  transformers: seconds per process, more than preparing a 30 MB corpus takes). Its shards
  and `index.json` are byte-identical to `MDSWriter`'s (tests/data/test_writer.py).
* streaming's `MDSWriter` for remote outputs (it uploads shards as it goes) and for
  compressions/hashes the fast writer does not implement.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from array import array

from mbtrain.data import storage

COLUMNS = {
    "data": "bytes",  # the window, unpadded (<= seq_len bytes)
    "doc_ids": "json",  # id of the document of each piece, in window order
    "offsets": "ndarray:int64",  # offset of each piece within its document
    "lengths": "ndarray:int64",  # length of each piece (sum == len(data))
    "doc_sizes": "ndarray:int64",  # full size of each piece's document
}
"""MDS columns of every mbtrain byte dataset."""

_NAMES = sorted(COLUMNS)  # MDS stores columns in sorted order
assert _NAMES == ["data", "doc_ids", "doc_sizes", "lengths", "offsets"]
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


def encode_window(data: bytes, pieces: list[tuple[str, int, int, int]]) -> bytes:
    """One MDS row (the encoding `MDSWriter.encode_sample` gives `make_sample(data, pieces)`)."""
    shape = _shape1(len(pieces))
    ids = json.dumps([p[0] for p in pieces]).encode()
    sizes = shape + _i64([p[3] for p in pieces])
    lengths = shape + _i64([p[2] for p in pieces])
    offsets = shape + _i64([p[1] for p in pieces])
    head = _HEAD.pack(len(data), len(ids), len(sizes), len(lengths), len(offsets))
    return b"".join((head, data, ids, sizes, lengths, offsets))


def _hasher(algo: str):
    """The function streaming's `get_hash(algo, ...)` uses, or None if not known here."""
    if algo.startswith("xxh"):
        try:
            import xxhash
        except ImportError:
            return None
        return getattr(xxhash, algo, None)
    if algo in hashlib.algorithms_available and not algo.startswith("shake_"):
        return getattr(hashlib, algo, None)
    return None


def _zstd_level(compression: str | None) -> int | None:
    """3 for `zstd` (streaming's default level), N for `zstd:N`; None if not zstd."""
    if not compression:
        return None
    name, _, level = compression.partition(":")
    if name != "zstd":
        return None
    return int(level) if level else 3


def fast_supported(compression: str | None, hashes) -> bool:
    """Whether `FastMDSWriter` can write this config (else `MDSWriter` does)."""
    if compression and _zstd_level(compression) is None:
        return False
    if compression:
        try:
            import zstd  # noqa: F401  (the binding streaming's `zstd` compression uses)
        except ImportError:
            return False
    return all(_hasher(h) is not None for h in hashes)


class FastMDSWriter:
    """Local MDS writer of pre-encoded rows; same shards, same index as `MDSWriter`.

    Same shard cut as `MDSWriter`: a shard is flushed before a row that would take it past
    `size_limit` (counting the shard header and 4 bytes of offset per row).
    """

    def __init__(self, out: str, compression: str | None, hashes, size_limit: int):
        self.out, self.compression = out, compression or None
        self.level = _zstd_level(self.compression)
        self.hashes = list(hashes)
        self.hash_fns = [(h, _hasher(h)) for h in self.hashes]
        self.size_limit = size_limit
        self.base = {
            "version": 2,
            "format": "mds",
            "compression": self.compression,
            "hashes": self.hashes,
            "size_limit": size_limit,
        }
        config = dict(
            self.base,
            column_names=_NAMES,
            column_encodings=[COLUMNS[n] for n in _NAMES],
            column_sizes=[None] * len(_NAMES),
        )
        self.config = config
        self.config_data = json.dumps(config, sort_keys=True).encode()
        self.shards: list[dict] = []
        self.rows: list[bytes] = []
        self.shard_size = 8 + len(self.config_data)
        os.makedirs(out, exist_ok=True)

    def write(self, row: bytes) -> None:
        size = len(row) + 4
        if self.size_limit and self.size_limit < self.shard_size + size:
            self._flush()
        self.rows.append(row)
        self.shard_size += size

    def _info(self, data: bytes, basename: str) -> dict:
        return {
            "basename": basename,
            "bytes": len(data),
            "hashes": {h: fn(data).hexdigest() for h, fn in self.hash_fns},
        }

    def _flush(self) -> None:
        rows, n = self.rows, len(self.rows)
        start = 4 + 4 * (n + 1) + len(self.config_data)
        offsets = array("I", [start])
        for r in rows:
            start += len(r)
            offsets.append(start)
        raw = b"".join((struct.pack("=I", n), offsets.tobytes(), self.config_data, *rows))
        raw_name = f"shard.{len(self.shards):05}.mds"
        raw_info = self._info(raw, raw_name)
        zip_info = None
        data, name = raw, raw_name
        if self.level is not None:
            import zstd

            data, name = zstd.compress(raw, self.level), raw_name + ".zstd"
            zip_info = self._info(data, name)
        with open(os.path.join(self.out, name), "wb") as f:
            f.write(data)
        self.shards.append(
            {"samples": n, "raw_data": raw_info, "zip_data": zip_info, **self.config}
        )
        self.rows, self.shard_size = [], 8 + len(self.config_data)

    def finish(self) -> None:
        if self.rows:
            self._flush()
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump({"version": 2, "shards": self.shards}, f, sort_keys=True)


class PartWriter:
    """Writes the windows of one (split, part) and publishes them on `finish()`."""

    def __init__(self, out: str, split: str, part: str, cfg, stage_root: str | None):
        self.final = storage.join(out, split, part)
        remote = storage.is_remote(out)
        if remote:
            self.tmp = None
            local = os.path.join(
                stage_root or tempfile.mkdtemp(prefix="mbtrain-stage-"), split, part
            )
            target = (local, self.final)
        else:
            self.tmp = os.path.join(out, split, f".{part}.tmp")
            shutil.rmtree(self.tmp, ignore_errors=True)
            shutil.rmtree(self.final, ignore_errors=True)  # an unfinished earlier attempt
            target = self.tmp
        self.fast = None
        self.writer = None
        if not remote and fast_supported(cfg.compression, cfg.hashes):
            self.fast = FastMDSWriter(target, cfg.compression, cfg.hashes, cfg.size_limit)
            return
        from streaming import MDSWriter

        self.writer = MDSWriter(
            out=target,
            columns=COLUMNS,
            compression=cfg.compression or None,
            hashes=list(cfg.hashes),
            size_limit=cfg.size_limit,
            keep_local=False,
            exist_ok=True,
        )

    def write(self, data: bytes, pieces: list[tuple[str, int, int, int]]) -> None:
        """One window and its pieces `(doc_id, offset, length, doc_size)`."""
        if self.fast is not None:
            self.fast.write(encode_window(data, pieces))
        else:
            from mbtrain.data.windows import make_sample

            self.writer.write(make_sample(data, pieces))

    def finish(self) -> None:
        (self.fast or self.writer).finish()
        if self.tmp is not None:
            os.replace(self.tmp, self.final)
