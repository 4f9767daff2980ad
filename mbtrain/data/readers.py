"""Reading one input file: every `SourceFile` becomes a stream of `(doc_id, bytes)` documents.

Why it looks like this:
* Bad input never stops good input. Each reader reports a problem through `report(where,
  reason)` (`where` names the file and line/row) and goes on with the next record or file; the
  caller counts those as skipped. Only the `utf8_errors="fail"` policy raises.
* Readers stream: JSON Lines line by line through gzip/zstd decompressors, Parquet by batch of
  rows within row groups, Arrow IPC batch by batch. Raw files are read whole (a document is one
  file and must fit in memory anyway), and decompressed whole by suffix (.gz/.zst/.xz/.bz2).
* Binary content is never decoded: raw files and binary columns are taken verbatim; only text
  fields of JSON/Parquet/Arrow are encoded to UTF-8.
* Document ids are the file's id (see `inputs.py`), plus `:<line>` (JSON Lines, 1-based) or
  `:<row>` (Parquet/Arrow, 0-based).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator

from mbtrain.data.inputs import Report, SourceFile, os_reason
from mbtrain.errors import DataError

EMPTY = "empty document"
"""Reason of empty files/records: listed in stats["empty"], not counted as skipped data."""


# ---------------------------------------------------------------------------------------------
# Text handling shared by the structured readers.


class _Utf8:
    """Applies the configured UTF-8 policy; counts replacements."""

    def __init__(self, policy: str, report: Report):
        self.policy, self.report, self.replaced = policy, report, 0

    def encode(self, s: str, where: str) -> bytes | None:
        try:
            return s.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates from "\ud800" escapes
            return self._bad(where, e, lambda: s.encode("utf-8", errors="replace"))

    def decode(self, b: bytes, where: str) -> str | None:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError as e:
            return self._bad(where, e, lambda: b.decode("utf-8", errors="replace"))

    def _bad(self, where, e, replace):
        msg = f"invalid UTF-8 at byte {e.start} ({e.reason})"
        if self.policy == "fail":
            raise DataError(f"{where}: {msg}; set utf8_errors to skip or replace to continue")
        if self.policy == "skip":
            self.report(where, msg)
            return None
        self.replaced += 1
        return replace()


def _text_value(v, field: str, where: str, utf8: _Utf8, report: Report) -> bytes | None:
    if v is None:
        report(where, f"field {field!r} is null")
        return None
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return utf8.encode(v, where)
    report(where, f"field {field!r} is {type(v).__name__}, expected a string")
    return None


# ---------------------------------------------------------------------------------------------
# Readers.


def _zstd_chunks(f, path: str) -> Iterator[bytes]:
    """Decompress concatenated zstd frames; raise EOFError if the last frame is cut short.

    zstandard's stream_reader returns a short read without error on a truncated frame, which
    would silently drop data; a frame-by-frame decompressobj lets us check `eof`.
    """
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    fed = False
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        while chunk:
            out = d.decompress(chunk)
            fed = True
            if out:
                yield out
            if d.eof:
                chunk = d.unused_data
                d = dctx.decompressobj()
                fed = False
            else:
                chunk = b""
    if fed and not d.eof:
        raise EOFError("zstd stream ended before the end of its last frame")


def _lines_of(path: str) -> Iterator[bytes]:
    low = path.lower()
    if low.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            yield from f
    elif low.endswith(".zst"):
        with open(path, "rb") as f:
            rest = b""
            for chunk in _zstd_chunks(f, path):
                buf = rest + chunk
                lines = buf.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    yield line + b"\n"
            if rest:
                yield rest
    else:
        with open(path, "rb") as f:
            yield from f


def read_jsonl(
    src: SourceFile, field: str, utf8: _Utf8, report: Report
) -> Iterator[tuple[str, bytes]]:
    lineno = 0
    try:
        for line in _lines_of(src.path):
            lineno += 1
            where = f"{src.path}:{lineno}"
            if not line.strip():
                continue
            text = utf8.decode(line, where)
            if text is None:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                report(where, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                report(where, f"JSON value is {type(obj).__name__}, expected an object")
                continue
            if field not in obj:
                report(where, f"missing field {field!r} (keys: {sorted(obj)[:8]})")
                continue
            data = _text_value(obj[field], field, where, utf8, report)
            if data is None:
                continue
            if not data:
                report(where, EMPTY)
                continue
            yield f"{src.file_id}:{lineno}", data
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        report(f"{src.path}:{lineno + 1}", f"truncated or corrupt compressed stream ({e})")
    except Exception as e:
        if type(e).__module__.startswith("zstd"):
            report(f"{src.path}:{lineno + 1}", f"corrupt zstd stream ({e})")
        else:
            raise


def _column_batches(src: SourceFile, field: str, report: Report):
    """Yield arrow arrays of `field`, batch by batch, from Parquet or Arrow IPC."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if src.format == "parquet":
        pf = pq.ParquetFile(src.path)
        schema = pf.schema_arrow

        def batches():
            # Small batches: a row group of multi-megabyte documents must not be read at once.
            for b in pf.iter_batches(batch_size=64, columns=[field]):
                yield b.column(0)

    else:
        try:
            reader = pa.ipc.open_file(pa.memory_map(src.path))
            schema = reader.schema

            def batches():
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i).column(field)

        except pa.ArrowInvalid:
            reader = pa.ipc.open_stream(pa.memory_map(src.path))
            schema = reader.schema

            def batches():
                for b in reader:
                    yield b.column(field)

    if field not in schema.names:
        report(src.path, f"column {field!r} not found (columns: {schema.names[:8]})")
        return None, None
    t = schema.field(field).type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        kind = "text"
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        kind = "binary"
    else:
        report(src.path, f"column {field!r} has type {t}, expected string or binary")
        return None, None
    return kind, batches()


def read_table(
    src: SourceFile, field: str, utf8: _Utf8, report: Report
) -> Iterator[tuple[str, bytes]]:
    import pyarrow as pa

    row = 0
    try:
        kind, batches = _column_batches(src, field, report)
        if batches is None:
            return
        for col in batches:
            if kind == "text":
                # Arrow strings are UTF-8 already: a zero-copy cast hands us the encoded bytes.
                col = col.cast(
                    pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()
                )
            for v in col.to_pylist():
                where = f"{src.path}:row {row}"
                if v is None:
                    report(where, f"field {field!r} is null")
                elif not v:
                    report(where, EMPTY)
                else:
                    yield f"{src.file_id}:{row}", v
                row += 1
    except (pa.ArrowException, OSError) as e:
        report(f"{src.path}:row {row}", f"unreadable {src.format} ({str(e).splitlines()[0]})")


def _read_file(path: str, size_hint: int = 0) -> bytes | OSError:
    """The whole file, or the error. Unbuffered reads sized from the walk's stat: a third
    faster than `open().read()` on many small files (no buffer object, no extra fstat)."""
    if size_hint >= 1 << 30:
        # One read returns at most ~2 GiB on Linux: joining chunks would double the peak
        # memory of a huge file; Python's readall grows one buffer instead.
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            return e
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            chunks = []
            while True:  # until EOF: the file may have changed since the walk
                b = os.read(fd, max(size_hint + 1, 1 << 16) if not chunks else 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
    except OSError as e:
        return e
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".xz": "xz", ".bz2": "bzip2"}


def compression_of(path: str) -> str | None:
    """The compression a raw file's suffix names (`gzip`, `zstd`, `xz`, `bzip2`), or None."""
    return _COMPRESSED.get(os.path.splitext(path)[1].lower())


def _decompress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "xz":
        import lzma

        return lzma.decompress(data)
    if kind == "bzip2":
        import bz2

        return bz2.decompress(data)
    import io

    import zstandard  # frames without a content size (streamed) need the streaming reader

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as r:
        out = r.read()
    return out


def read_raw(
    src: SourceFile, report: Report, decompress: bool = True
) -> Iterator[tuple[str, bytes]]:
    data = _read_file(src.path, src.size)
    if isinstance(data, OSError):
        report(src.path, os_reason(data))
        return
    kind = compression_of(src.path) if decompress else None
    if kind and data:
        try:
            data = _decompress(data, kind)
        except Exception as e:  # each library raises its own error types
            report(
                src.path,
                f"corrupt {kind} data ({str(e).splitlines()[0] if str(e) else type(e).__name__}); not stored",
            )
            return
    if not data:
        report(src.path, EMPTY)
    else:
        yield src.file_id, data


def read_documents(
    src: SourceFile, field: str, utf8: _Utf8, report: Report, decompress: bool = True
) -> Iterator[tuple[str, bytes]]:
    """All documents of one source file, in file order (raw files decompressed by suffix)."""
    if src.format != "raw":
        try:
            with open(src.path, "rb") as f:
                if not f.read(1):
                    report(src.path, EMPTY)
                    return
        except OSError as e:
            report(src.path, os_reason(e))
            return
    if src.format == "jsonl":
        yield from read_jsonl(src, field, utf8, report)
    elif src.format in ("parquet", "arrow"):
        yield from read_table(src, field, utf8, report)
    else:
        yield from read_raw(src, report, decompress)


def make_utf8(policy: str, report: Report) -> _Utf8:
    """The UTF-8 policy object readers share (exposed for counting replacements)."""
    return _Utf8(policy, report)
