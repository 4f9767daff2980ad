"""Finding the input files: files, directories and globs become a sorted list of `SourceFile`s.

Why it looks like this:
* Bad input never stops good input: an unreadable directory, a broken symlink, a symlink loop
  or a special file (FIFO, socket, device) is reported through `report(where, reason)` and
  passed over; the caller counts it as skipped. Only an input spec that names nothing at all
  raises (a typo should fail fast).
* Never read as documents, and listed through `excluded` instead: the output directory being
  written, prepared datasets (their shards would come back as documents), and what the
  `exclude` globs name.
* File ids are stable across machines and runs: the file's path relative to the common root of
  all inputs. Readers add `:<line>` or `:<row>` for documents within a file; the validation
  split is drawn from these ids.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mbtrain.errors import DataError

Report = Callable[[str, str], None]
"""`report(where, reason)`: a file, line or row passed over, and why."""

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
                report(d_ + name, os_reason(err))
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
        return os_reason(e)
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


def os_reason(e: OSError) -> str:
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
            report(path, os_reason(e))
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
