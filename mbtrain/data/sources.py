"""Input discovery and readers: every input becomes a stream of `(doc_id, bytes)` documents.

Why it looks like this:
* Bad input never stops good input. Each reader reports a problem through `report(where,
  reason)` (`where` names the file and line/row) and goes on with the next record or file; the
  caller counts those as skipped. Only the `utf8_errors="fail"` policy raises.
* Readers stream: JSON Lines line by line through gzip/zstd decompressors, Parquet by batch of
  rows within row groups, Arrow IPC batch by batch. Raw files are read whole (a document is one
  file and must fit in memory anyway).
* Binary content is never decoded: raw files and binary columns are taken verbatim; only text
  fields of JSON/Parquet/Arrow are encoded to UTF-8.
* Document ids are stable across machines and runs: the file's path relative to the common root
  of all inputs, plus `:<line>` (JSON Lines, 1-based) or `:<row>` (Parquet/Arrow, 0-based).
  The validation split is drawn from these ids.
"""

from __future__ import annotations

import errno
import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mbtrain.errors import DataError

Report = Callable[[str, str], None]
EMPTY = "empty document"
"""Reason of empty files/records: listed in stats["empty"], not counted as skipped data."""

_JSONL = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst", ".json.gz")
_PARQUET = (".parquet", ".pq")
_ARROW = (".arrow", ".arrows", ".feather", ".ipc")


@dataclass(frozen=True)
class SourceFile:
    """One input file: where it is, which input spec found it, its stable id and format."""

    path: str
    spec: str
    file_id: str
    format: str
    size: int


def detect_format(path: str, forced: str = "auto") -> str:
    """Format by suffix (`jsonl`, `parquet`, `arrow`), `raw` for anything else."""
    if forced != "auto":
        return forced
    low = path.lower()
    if low.endswith(_JSONL):
        return "jsonl"
    if low.endswith(_PARQUET):
        return "parquet"
    if low.endswith(_ARROW):
        return "arrow"
    return "raw"


def _glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob relative to its root (`*`, `?`, `[..]`, `**/`) into a regex."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


_MDS_SHARD = re.compile(r"^shard\.\d+\.mds(\.\w+)?$")


def is_dataset_dir(names: set[str]) -> bool:
    """A directory listing that belongs to a prepared dataset: an mbtrain output root
    (layout.json beside parts/), an mbtrain split (mbtrain.json beside index.json), or any
    MDS directory (index.json beside shard.NNNNN.mds files)."""
    if "layout.json" in names and "parts" in names:
        return True
    if "index.json" not in names:
        return False
    return "mbtrain.json" in names or any(_MDS_SHARD.match(n) for n in names)


def _walk(
    root: str,
    report: Report,
    prune: Callable[[str], bool] | None = None,
    name_ok: Callable[[str], object] | None = None,
    excluded: Report | None = None,
    skip_real: frozenset[str] = frozenset(),
) -> Iterator[tuple[str, str, str]]:
    """Yield `(path, rel, real)` of the regular files under `root`, recursively, following
    symlinks.

    `rel` is the path relative to `root` with `/` separators, `real` the resolved path. Loops
    are reported once each. Directories for which `prune(rel)` is true are not entered (an
    `exclude` such as `site-packages/**` then costs nothing, however big the tree below), and
    files whose name fails `name_ok` are passed over at once (`**/*.py` skips `*.pyc` before
    any path is built for them).

    Own walker instead of os.walk/glob: those either ignore symlinked directories or recurse
    through a symlink loop until the path is too long; here the chain of real paths of the
    ancestors detects a loop at its first repetition. Paths are built as we go: no
    relpath/realpath per file (they dominated the walk of a large tree).

    Never entered, and listed through `excluded` (not counted as skipped input): directories
    whose real path is in `skip_real` (the output being written) and prepared datasets
    (`is_dataset_dir`), whose shards must not come back as documents. Special files (FIFOs,
    sockets, devices) are reported and passed over: reading a FIFO blocks forever.
    """

    def listing(d: str) -> list | None:
        try:
            with os.scandir(d) as it:
                entries = [(e.name, e) for e in it]
        except OSError as e:
            report(d, f"unreadable directory ({e.strerror or e})")
            return None
        if is_dataset_dir({n for n, _ in entries}):
            if excluded is not None:
                excluded(d, "a prepared dataset (MDS shards), not documents")
            return []
        return sorted((n, e) for n, e in entries if not n.startswith("."))

    # Depth first, entries by name, with an explicit stack: nested generators cost a frame
    # switch per file and level. Paths are joined by hand (os.path.join per file shows).
    sep = os.sep
    real_root = os.path.realpath(root)
    top = listing(root)
    if top is None:
        return
    stack = [
        (
            iter(top),
            root if root.endswith(sep) else root + sep,
            "",
            real_root if real_root.endswith(sep) else real_root + sep,
            frozenset({real_root}),
        )
    ]
    while stack:
        entries, d_, rel, real_, ancestors = stack[-1]
        for name, e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
                if not is_dir and name_ok is not None and not name_ok(name):
                    continue
                link = e.is_symlink()
            except OSError as err:
                report(d_ + name, _os_reason(err))
                continue
            p = d_ + name
            real = os.path.realpath(p) if link else real_ + name
            if not is_dir:
                if not e.is_file(follow_symlinks=True):  # d_type: no extra syscall
                    report(p, _special_reason(p))
                    continue
                yield p, rel + name, real
                continue
            if real in ancestors:
                report(p, f"symlink loop (points back to {real})")
                continue
            if real in skip_real:
                if excluded is not None:
                    excluded(p, "the output directory of this prepare")
                continue
            r = rel + name
            if prune is not None and prune(r):
                continue
            sub = listing(p)
            if sub is not None:
                stack.append((iter(sub), p + sep, r + "/", real + sep, ancestors | {real}))
                break  # descend now; this directory's iterator resumes afterwards
        else:
            stack.pop()


def _special_reason(path: str) -> str:
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return _os_reason(e)
    kind = (
        "a FIFO" if stat.S_ISFIFO(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )  # fmt: skip
    return f"{kind}, not a regular file: passed over"


def safe_id(text: str) -> str:
    """`text` as valid Unicode: bytes of a file name that are not UTF-8 (which Python carries
    as surrogate escapes) become `\\xNN`, so ids can be hashed, stored in shards and JSON."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _pruner(exclude: list[str]) -> Callable[[str], bool] | None:
    """Directories (relative paths) whose whole content an exclude glob `X/**` (or `**`) drops."""
    rxs = [_glob_regex(x[:-3]) for x in exclude if x.endswith("/**") and len(x) > 3]
    if "**" in exclude:
        return lambda rel: True
    if not rxs:
        return None
    return lambda rel: any(r.match(rel) for r in rxs)


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "broken symlink or vanished file"
    if e.errno == errno.EACCES:
        return "permission denied"
    return f"unreadable ({e.strerror or e})"


def _glob_root(spec: str) -> str:
    """The longest leading directory of a glob without magic characters."""
    parts = spec.split(os.sep)
    root = []
    for p in parts:
        if glob.has_magic(p):
            break
        root.append(p)
    return os.sep.join(root) or "."


def expand_inputs(
    specs: list[str],
    forced_format: str,
    report: Report,
    exclude: list[str] = (),
    excluded: Report | None = None,
    skip_dirs: list[str] = (),
) -> list[SourceFile]:
    """Resolve files, directories and globs into a sorted, de-duplicated list of sources.

    Raises DataError for a spec that names nothing at all (a typo should fail fast).
    `skip_dirs` (e.g. the output directory) and prepared datasets are never walked into; they
    go to `excluded`, not `report`.
    """
    skip_real = frozenset(os.path.realpath(d) for d in skip_dirs)
    # (path, spec, root, rel to root or None for a file named directly, real path or None)
    found: list[tuple[str, str, str, str | None, str | None]] = []
    rxs = [_glob_regex(x) for x in exclude]
    prune = _pruner(list(exclude))
    for spec in specs:
        spec_x = os.path.expanduser(spec)
        if glob.has_magic(spec_x):
            root = _glob_root(spec_x)
            pattern = os.path.relpath(spec_x, root).replace(os.sep, "/")
            rx = _glob_regex(pattern)
            last = pattern.rsplit("/", 1)[-1]  # a file's name must match it (unless `**`)
            name_ok = None if "**" in last else _glob_regex(last).match
            hits = [
                (p, spec, root, r, real)
                for p, r, real in _walk(root, report, prune, name_ok, excluded, skip_real)
                if rx.match(r)
            ]
            if not hits:
                raise DataError(f"input {spec!r}: the glob matches no file")
            found += hits
        elif os.path.isdir(spec_x):
            found += [
                (p, spec, spec_x, r, real)
                for p, r, real in _walk(spec_x, report, prune, None, excluded, skip_real)
            ]
        elif os.path.lexists(spec_x):
            if not os.path.isfile(spec_x):
                report(spec_x, _special_reason(spec_x))
                continue
            root = os.path.dirname(spec_x) or "."
            found.append((spec_x, spec, root, None, None))
        else:
            raise DataError(f"input {spec!r}: no such file or directory")

    def rel_of(f) -> str:
        return f[3] if f[3] is not None else os.path.relpath(f[0], f[2]).replace(os.sep, "/")

    if rxs:
        found = [f for f in found if not any(r.match(rel_of(f)) for r in rxs)]
    if not found:
        return []
    common = os.path.commonpath(sorted({os.path.abspath(f[2]) for f in found}))  # roots
    prefix: dict[str, str] = {}  # root -> its path relative to `common`, "" or ending in "/"
    out, seen = [], set()
    for path, spec, root, rel, real in found:
        real = real or os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            size = os.stat(path).st_size
        except OSError as e:
            report(path, _os_reason(e))
            continue
        if rel is None:
            fid = os.path.relpath(os.path.abspath(path), common).replace(os.sep, "/")
        else:
            if root not in prefix:
                pr = os.path.relpath(os.path.abspath(root), common).replace(os.sep, "/")
                prefix[root] = "" if pr == "." else pr + "/"
            fid = prefix[root] + rel
        out.append(SourceFile(path, spec, safe_id(fid), detect_format(path, forced_format), size))
    out.sort(key=lambda s: s.file_id)
    return out


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
        report(src.path, _os_reason(data))
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
            report(src.path, _os_reason(e))
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
