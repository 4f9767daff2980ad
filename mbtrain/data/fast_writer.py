"""`FastMDSWriter`: a local MDS writer of encoded rows (mds.py), the same shards and index as
streaming's `MDSWriter`, without importing `streaming` at all (its package import pulls in torch
and transformers: seconds per process, more than preparing a 30 MB corpus takes).

It writes local outputs with zstd or no compression (the usual case). Its raw shards are
byte-identical to `MDSWriter`'s; compressed shards are single zstd frames that decode to them
(compressed as they fill, so not the bytes python-zstd would write) and the index says the same
but for the compressed files' sizes and hashes (tests/data/test_writer.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from array import array

from mbtrain.data import storage
from mbtrain.data.mds import COLUMN_NAMES, COLUMNS


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
            import zstandard  # noqa: F401
        except ImportError:
            return False
    return all(_hasher(h) is not None for h in hashes)


_IN_FLIGHT = 8  # batches of rows that may wait for the compression thread
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RAW_BLOCK = 1 << 17  # the largest block a zstd frame may hold (RFC 8878, Block_Maximum_Size)
_MIN_WINDOW = (17 - 10) << 3  # Window_Descriptor of 128 KiB: room for raw blocks of that size


def _zstd_frame_start(frame) -> tuple[int, int]:
    """`(header length, Window_Descriptor)` of a zstd frame without dictionary or checksum
    (RFC 8878, 3.1.1.1); the descriptor allows at least 128 KiB."""
    if bytes(frame[:4]) != _ZSTD_MAGIC:
        raise ValueError("not a zstd frame")
    fhd = frame[4]
    fcs_flag, single, checksum, dict_flag = fhd >> 6, fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3
    if checksum or dict_flag:
        raise ValueError("zstd frame with a checksum or a dictionary id")
    pos = 5 + (1 - single)
    fcs_len = (single, 2, 4, 8)[fcs_flag]
    if single:  # the window is the content size (zstd writes this for tiny contents)
        fcs = int.from_bytes(frame[pos : pos + fcs_len], "little") + (256 if fcs_len == 2 else 0)
        window = (max((max(fcs, 1) - 1).bit_length(), 10) - 10) << 3
    else:
        window = frame[5]
    return pos + fcs_len, max(window, _MIN_WINDOW)


def _frame_with_prefix(prefix: bytes, body_frame: bytes, body_size: int) -> list:
    """Buffers of ONE zstd frame that decodes to `prefix + body`, from `body_frame` (a frame
    of `body_size` bytes compressed without the prefix): a new frame header, the prefix as raw
    blocks, then the body's blocks unchanged.

    Valid because a zstd block refers back only by distance, and the body's blocks never
    reach before the body's start (the compressor saw nothing before it); raw blocks change
    neither the repeat offsets nor the entropy tables that later blocks may reuse; and the
    window is at least the body's. The content size in the header is the total, so decoders
    that size their output from it (python-zstd, which streaming reads with) get it right.
    """
    start, window = _zstd_frame_start(body_frame)
    total = len(prefix) + body_size
    wide = total >= 1 << 32
    out = [
        _ZSTD_MAGIC
        + bytes(((3 if wide else 2) << 6, window))
        + total.to_bytes(8 if wide else 4, "little")
    ]
    view = memoryview(prefix)
    for i in range(0, len(prefix), _RAW_BLOCK):
        chunk = view[i : i + _RAW_BLOCK]
        out += [(len(chunk) << 3).to_bytes(3, "little"), chunk]  # Raw_Block, not the last one
    out.append(memoryview(body_frame)[start:])
    return out


class FastMDSWriter:
    """Local MDS writer of encoded rows; the same shards and index as `MDSWriter`.

    Same shard cut as `MDSWriter`: a shard is flushed before a row that would take it past
    `size_limit` (counting the shard header and 4 bytes of offset per row), so the raw
    (uncompressed) shards are byte-identical to `MDSWriter`'s.

    Rows are compressed as they come, in batches of about `batch` bytes, by one background
    thread (zstd, xxhash and file writes release the GIL) while the caller windows the next
    ones, so a part's compression starts with its first MiB, not when its first shard is full;
    or, with `threaded=False` (no free core for a thread), by the caller itself.
    A compressed shard must be ONE zstd frame (streaming reads shards with python-zstd's
    `decompress`, which sizes its output from the first frame and fails on some sequences of
    several), and the shard's header (row count, offsets) comes first but is known only at its
    end. So the rows are compressed as one frame, and at the end of the shard the header is
    put in front as raw blocks of the same frame (`_frame_with_prefix`); the header is 4 bytes
    per row, a fraction of a percent of a shard.

    At most `_IN_FLIGHT` batches wait for the thread (memory stays bounded: the open shard's
    rows are held until its end in any case); shards are written and indexed in order. An error
    of the thread is raised by the next `write` or by `finish`, never lost; the part directory
    is then left unpublished.
    """

    def __init__(
        self,
        out: str,
        compression: str | None,
        hashes,
        size_limit: int,
        batch: int = 1 << 20,
        threaded: bool = True,
    ):
        self.out, self.compression = out, compression or None
        self.level = _zstd_level(self.compression)
        self.hashes = list(hashes)
        self.hash_fns = [(h, _hasher(h)) for h in self.hashes]
        self.size_limit, self.batch = size_limit, batch
        self.config = {
            "version": 2,
            "format": "mds",
            "compression": self.compression,
            "hashes": self.hashes,
            "size_limit": size_limit,
            "column_names": COLUMN_NAMES,
            "column_encodings": [COLUMNS[n] for n in COLUMN_NAMES],
            "column_sizes": [None] * len(COLUMN_NAMES),
        }
        self.config_data = json.dumps(self.config, sort_keys=True).encode()
        self.shards: list[dict] = []
        # Compressing as rows come (a thread) or each whole shard at its end (the caller).
        self.streaming = threaded and self.level is not None
        self.batched = 0  # rows of the open shard already handed to the thread
        self.batched_size = 0
        self._new_shard()
        os.makedirs(out, exist_ok=True)
        self._queue: queue.Queue = queue.Queue(maxsize=_IN_FLIGHT)
        self._error: BaseException | None = None
        # The thread's own state: the open frame and its output, the zstd context (not
        # thread-safe).
        self._packed: list[bytes] = []
        self._cctx = self._cobj = None
        self._thread = None
        self._closed = False
        if threaded:
            self._thread = threading.Thread(target=self._work, name="mds-shards", daemon=True)
            self._thread.start()

    def _new_shard(self) -> None:
        self.rows: list = []  # the open shard's row buffers, in order
        self.row_sizes: list[int] = []
        self.shard_size = 8 + len(self.config_data)
        self.batched = self.batched_size = 0

    def write(self, row: tuple[list, int]) -> None:
        """Append one row, as `RowEncoder.encode` returns it."""
        parts, size = row
        if self.size_limit and self.size_limit < self.shard_size + size + 4:
            self._flush()
        self.rows += parts
        self.row_sizes.append(size)
        self.shard_size += size + 4
        if self.streaming:
            self.batched_size += size
            if self.batched_size >= self.batch:
                self._send()

    def _send(self) -> None:
        """Hand the rows written since the last batch to the thread's compressor."""
        self._put(("rows", self.rows[self.batched :]))
        self.batched, self.batched_size = len(self.rows), 0

    def _put(self, item: tuple) -> None:
        self._raise()
        if self._closed:  # the thread is gone: the item would be lost, and the index short
            raise RuntimeError(f"{self.out}: writer already closed")
        if self._thread is None:
            self._do(item)  # no thread: the caller writes (errors raise right here)
        else:
            self._queue.put(item)

    def _flush(self) -> None:
        # Like MDSWriter, also when empty: a first row above the limit gives an empty shard.
        if self.streaming and self.batched < len(self.rows):
            self._send()
        n = len(self.row_sizes)
        first = start = 4 + 4 * (n + 1) + len(self.config_data)
        offsets = array("I", [start])
        for size in self.row_sizes:
            start += size
            offsets.append(start)
        header = b"".join((struct.pack("=I", n), offsets.tobytes(), self.config_data))
        self._put(("end", header, self.rows, n, start - first))
        self._new_shard()

    def _raise(self) -> None:
        if self._error is not None:
            self.close()
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain: the caller raises the first error
            try:
                self._do(item)
            except BaseException as e:  # surfaced on the caller's thread
                self._error = e

    def _do(self, item: tuple) -> None:
        if item[0] == "rows":
            self._compress(item[1])
        else:
            self.shards.append(self._write_shard(*item[1:]))

    def _context(self):
        if self._cctx is None:
            import zstandard

            # One context for every shard (a new one per shard costs ~15% on small ones).
            # No checksum (python-zstd writes none; `_frame_with_prefix` needs none).
            self._cctx = zstandard.ZstdCompressor(level=self.level, write_checksum=False)
        return self._cctx

    def _compress(self, parts: list) -> None:
        # One call per batch: each call gives the GIL back and must win it again from the
        # windowing thread (up to a switch interval, 5 ms); per row that halved the speed.
        if self._cobj is None:
            self._cobj = self._context().compressobj()
        out = self._cobj.compress(b"".join(parts))
        if out:
            self._packed.append(out)

    def _compressed_body(self, rows: list) -> bytes:
        """The shard's rows as one zstd frame (without the header)."""
        if not self.streaming:
            # Whole: zstd's one-shot call is ~10% faster than its streaming one (measured on
            # source code), which pays only where it overlaps the windowing.
            return self._context().compress(b"".join(rows))  # one item: no copy
        cobj = self._cobj or self._context().compressobj()
        self._cobj = None
        packed, self._packed = self._packed, []
        packed.append(cobj.flush())
        return b"".join(packed)

    def _write_shard(self, header: bytes, rows: list, n: int, body_size: int) -> dict:
        if not self.streaming and self.level is not None and len(rows) > 1:
            rows = [b"".join(rows)]  # once, for the hash and the compressor (few big updates)
        raw = [header, *rows]
        raw_name = f"shard.{len(self.shards):05}.mds"  # shards are written in order
        raw_info = self._info(raw, raw_name)
        if raw_info["bytes"] != len(header) + body_size:  # offsets would point elsewhere
            raise RuntimeError(
                f"{raw_name}: rows of {raw_info['bytes'] - len(header)} bytes, "
                f"the header says {body_size}"
            )
        zip_info = None
        data, name = raw, raw_name
        if self.level is not None:
            body = self._compressed_body(rows)
            data, name = _frame_with_prefix(header, body, body_size), raw_name + ".zstd"
            zip_info = self._info(data, name)
        path = os.path.join(self.out, name)
        try:
            with open(path, "wb") as f:
                f.writelines(data)
        except OSError as e:
            raise storage.with_file_name(e, path) from None
        return {"samples": n, "raw_data": raw_info, "zip_data": zip_info, **self.config}

    def _info(self, buffers: list, basename: str) -> dict:
        hashes = {}
        for h, fn in self.hash_fns:
            state = fn()
            for b in buffers:
                state.update(b)
            hashes[h] = state.hexdigest()
        return {"basename": basename, "bytes": sum(map(len, buffers)), "hashes": hashes}

    def close(self) -> None:
        """Stop the background thread (after the work already handed to it)."""
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> None:
        if self.row_sizes:
            self._flush()
        self.close()
        self._raise()
        path = os.path.join(self.out, "index.json")
        try:
            with open(path, "w") as f:
                json.dump({"version": 2, "shards": self.shards}, f, sort_keys=True)
        except OSError as e:
            raise storage.with_file_name(e, path) from None
