"""`prepare`: raw corpora -> MDS dataset of byte windows, in parts that merge into one.

Layout of an output (local directory or object-store prefix):

    out/layout.json                     number of parts and the config fingerprint
    out/train/part-00000-of-00004/      one MDS directory per part and split
    out/val/part-00000-of-00004/
    out/parts/part-00000-of-00004.json  completion marker + stats of a part (written last)
    out/train/index.json, val/index.json   merged index (as streaming's merge_index writes it)
    out/stats.json                      totals, per-source counts, skipped inputs
    out/train/mbtrain.json, val/...     seq_len etc. with complete=true: written very last

Why parts: the unit of parallelism and of resumption is a part = a fixed, deterministic subset
of the input files (balanced by size). `workers` local processes x `worker_count` jobs (a Slurm
array) give `worker_count * workers` parts; every job computes the same assignment from the same
inputs, writes only its own parts, and skips parts whose marker exists. The merge joins the
per-part indexes without touching shards, so N jobs + merge hold exactly the documents of
one job. A dataset is usable only once `mbtrain.json` says `complete`; a re-run first marks it
incomplete, so an interrupted re-run is never mistaken for a finished dataset.

An output is *published* once a merge has written its `mbtrain.json` (complete or, after an
interrupted re-run, not). A published dataset of another config is refused; the leftovers of an
unpublished one (a run that failed, say with a wrong `--text-field`) are replaced, so that
the corrected command just works.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mbtrain.data import storage
from mbtrain.data.config import PrepareConfig
from mbtrain.data.sources import (
    EMPTY,
    SourceFile,
    compression_of,
    expand_inputs,
    make_utf8,
    read_documents,
)
from mbtrain.data.split import RULE_VERSION, Splitter
from mbtrain.data.windows import Windower
from mbtrain.data.writer import PartWriter
from mbtrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
EXIT_OK, EXIT_SKIPPED = 0, 3


@dataclass
class PrepareResult:
    """What `prepare`/`merge` did: stats (as in stats.json) and the process exit code."""

    out: str
    stats: dict = field(default_factory=dict)
    merged: bool = False
    read_bytes: int = 0
    """Input bytes (file sizes) this job read; 0 for a merge alone."""
    elapsed: float | None = None
    """Seconds this job took, from the listing of the inputs to the end of the merge."""

    @property
    def exit_code(self) -> int:
        """0 if every input was used, 3 if anything was skipped."""
        return EXIT_SKIPPED if self.stats.get("skipped") else EXIT_OK

    def summary(self) -> str:
        """A few human lines for the end of a run."""
        s = self.stats
        lines = [
            f"{'dataset' if self.merged else 'parts'} at {self.out}: "
            + ", ".join(
                f"{sp} {s['documents'][sp]} docs / {s['bytes'][sp]} bytes / {s['samples'][sp]} samples"
                for sp in SPLITS
            )
        ]
        if s.get("split_note"):
            lines.append(f"split: {s['split_note']}")
        if s.get("excluded"):
            lines.append(f"not read (listed in stats.json as excluded): {len(s['excluded'])}")
            lines += [f"  {x['where']}: {x['reason']}" for x in s["excluded"][:5]]
        if s.get("decompressed"):
            lines.append(f"{s['decompressed']} compressed files (.gz/.zst/.xz/.bz2) decompressed")
        if s.get("empty"):
            lines.append(f"{len(s['empty'])} empty files/records ignored (listed in stats.json)")
        if s.get("utf8_replaced"):
            lines.append(f"{s['utf8_replaced']} records had invalid UTF-8 replaced by U+FFFD")
        sk = s.get("skipped", [])
        if sk:
            lines.append(f"skipped {len(sk)} inputs (see stats.json):")
            lines += [f"  {x['where']}: {x['reason']}" for x in sk[:20]]
            if len(sk) > 20:
                lines.append(f"  ... and {len(sk) - 20} more")
        if self.elapsed is not None:
            lines.append(f"read {_rate(self.read_bytes, self.elapsed)}")
        if not self.merged:
            lines.append("run merge once all jobs finished")
        return "\n".join(lines)


def _rate(done: int, seconds: float) -> str:
    """`12.3 MB in 4.56 s (2.7 MB/s)`: what a log reader compares between runs."""
    size = f"{done / 1e6:.1f} MB" if done >= 100_000 else f"{done / 1e3:.1f} kB"
    took = f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{size} in {took} ({done / 1e6 / max(seconds, 1e-3):.1f} MB/s)"


def part_name(k: int, total: int) -> str:
    return f"part-{k:05d}-of-{total:05d}"


def fingerprint(cfg: PrepareConfig, total_parts: int) -> dict:
    """Everything that changes which bytes land in which part; parts of another config are
    refused rather than silently mixed into this output."""
    return {
        "inputs": list(cfg.inputs),
        "exclude": list(cfg.exclude),
        "seq_len": cfg.seq_len,
        "pack": cfg.pack,
        "text_field": cfg.text_field,
        "format": cfg.format,
        "utf8_errors": cfg.utf8_errors,
        "val_fraction": cfg.val_fraction,
        "val_docs": hashlib.sha1("\n".join(sorted(cfg.val_docs)).encode()).hexdigest(),
        "seed": cfg.seed,
        "compression": cfg.compression,
        "decompress": cfg.decompress,
        "split_rule": RULE_VERSION,
        "total_parts": total_parts,
    }


def assign_parts(sources: list[SourceFile], total: int) -> list[list[SourceFile]]:
    """Deterministic size-balanced assignment (largest first onto the lightest part)."""
    parts: list[list[SourceFile]] = [[] for _ in range(total)]
    load = [0] * total
    for s in sorted(sources, key=lambda s: (-s.size, s.file_id)):
        k = min(range(total), key=lambda i: (load[i], i))
        parts[k].append(s)
        load[k] += s.size
    for p in parts:
        p.sort(key=lambda s: s.file_id)
    return parts


def empty_stats() -> dict:
    return {
        "documents": dict.fromkeys(SPLITS, 0),
        "bytes": dict.fromkeys(SPLITS, 0),
        "samples": dict.fromkeys(SPLITS, 0),
        "sources": {},
        "skipped": [],
        "excluded": [],
        "empty": [],
        "utf8_replaced": 0,
        "decompressed": 0,
    }


def add_stats(total: dict, part: dict) -> None:
    for key in ("documents", "bytes", "samples"):
        for sp in SPLITS:
            total[key][sp] += part[key][sp]
    for spec, c in part["sources"].items():
        t = total["sources"].setdefault(spec, {"files": 0, "documents": 0, "bytes": 0})
        for k in t:
            t[k] += c[k]
    total["skipped"] += part["skipped"]
    total["excluded"] += part.get("excluded", [])
    total["empty"] += part.get("empty", [])
    total["utf8_replaced"] += part["utf8_replaced"]
    total["decompressed"] += part.get("decompressed", 0)
    if part.get("split_note"):
        total["split_note"] = part["split_note"]


def run_part(
    cfg: PrepareConfig,
    k: int,
    total: int,
    sources: list[SourceFile],
    pre_skipped: list[dict],
    splitter: Splitter | None = None,
    pre_excluded: list[dict] = (),
    advance: Callable[[int], None] | None = None,
) -> dict:
    """Write part `k`: read its sources, split, window, write both splits, then its marker.
    `advance(n)` is told of the input bytes read, for the progress display."""
    name = part_name(k, total)
    marker = storage.join(cfg.out, "parts", name + ".json")
    done = storage.read_json(marker)
    if done is not None and done.get("fingerprint") == fingerprint(cfg, total):
        log.info("%s already finished, skipping", name)
        return done  # not counted as read: the summary's MB/s is of bytes read by this run
    # A marker of another fingerprint under this config's layout (which prepare() checked) is
    # a leftover of an unpublished earlier config whose layout was replaced: rewrite the part.
    stats = empty_stats()
    stats["skipped"] = list(pre_skipped)
    stats["excluded"] = list(pre_excluded)

    def report(where: str, reason: str) -> None:
        if reason == EMPTY:  # nothing is lost: listed, but does not make the exit code 3
            stats["empty"].append(where)
        else:
            stats["skipped"].append({"where": where, "reason": reason})

    utf8 = make_utf8(cfg.utf8_errors, report)
    splitter = splitter or Splitter(cfg.val_fraction, cfg.val_docs, cfg.seed, sources)
    if k == 0 and splitter.note:
        stats["split_note"] = splitter.note
    stage = cfg.local_dir or None
    meter = ReadMeter(advance)
    writers: dict[str, PartWriter] = {}
    try:
        for sp in SPLITS:  # one by one: a failing second writer must not leak the first's thread
            writers[sp] = PartWriter(cfg.out, sp, name, cfg, stage)
        windowers = {sp: Windower(cfg.seq_len, cfg.pack, writers[sp].write) for sp in SPLITS}
        for src in sources:
            c = stats["sources"].setdefault(src.spec, {"files": 0, "documents": 0, "bytes": 0})
            c["files"] += 1
            unpacked = cfg.decompress and src.format == "raw" and compression_of(src.path)
            for doc_id, data in read_documents(src, cfg.text_field, utf8, report, cfg.decompress):
                stats["decompressed"] += 1 if unpacked else 0
                sp = splitter.split_of(doc_id, src.file_id)
                windowers[sp].add(doc_id, data)
                stats["documents"][sp] += 1
                stats["bytes"][sp] += len(data)
                c["documents"] += 1
                c["bytes"] += len(data)
                meter.document(len(data), src.size)
            meter.file_done(src.size)
        for sp in SPLITS:
            windowers[sp].flush()
            stats["samples"][sp] = windowers[sp].samples
            writers[sp].finish()
    finally:
        for w in writers.values():
            w.close()  # no-op after finish; after an error, stops the shard threads
    stats["utf8_replaced"] = utf8.replaced
    stats["part"] = name
    stats["fingerprint"] = fingerprint(cfg, total)
    storage.write_json(marker, stats)  # last: the part exists only from here on
    return stats


class ReadMeter:
    """Counts a part's input bytes for the progress display: by document within a file
    (capped at the file's size: a compressed file gives more bytes than it holds), topped up
    to the file's size at its end. Reported in steps of 4 MiB, since each report may cross
    processes (a shared counter under a lock)."""

    STEP = 1 << 22

    def __init__(self, advance: Callable[[int], None] | None):
        self.advance = advance
        self.in_file = 0  # bytes of the current file counted so far
        self.pending = 0

    def document(self, n: int, file_size: int) -> None:
        if self.advance is None or self.in_file >= file_size:
            return
        n = min(n, file_size - self.in_file)
        self.in_file += n
        self.pending += n
        if self.pending >= self.STEP:
            self.advance(self.pending)
            self.pending = 0

    def file_done(self, file_size: int) -> None:
        if self.advance is None:
            return
        self.advance(self.pending + file_size - self.in_file)
        self.in_file = self.pending = 0


class Progress:
    """Input bytes read by this job, on stderr: a tqdm bar on a terminal; anywhere else (a
    Slurm log, a pipe, a CI console) a plain line every `interval` seconds, since a bar's
    carriage returns and cursor moves (`[A`) turn a log file into noise."""

    def __init__(self, total: int, enabled: bool, stream=None, interval: float = 10.0):
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.start = self.last = time.monotonic()
        self.bar = None
        self.plain = enabled and not _is_terminal(self.stream)
        if enabled and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="prepare",
                file=self.stream,
                leave=False,
                mininterval=1.0,
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def advance(self, n: int) -> None:
        self.update_to(self.done + n)

    def update_to(self, done: int) -> None:
        """Set the bytes read so far (from a counter shared with worker processes)."""
        if done == self.done:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self.plain and now - self.last >= self.interval:
            self.last = now
            share = f" of {self.total / 1e6:.1f} MB ({100 * done / max(self.total, 1):.0f}%)"
            print(f"prepare: read {_rate(done, now - self.start)}{share}", file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


_worker_counter = None  # a worker process's share of the job's bytes-read counter


def _init_worker(counter) -> None:
    global _worker_counter
    _worker_counter = counter


def _count_in_worker(n: int) -> None:
    with _worker_counter.get_lock():
        _worker_counter.value += n


def _run_part_in_worker(args):
    return run_part(*args, advance=_count_in_worker if _worker_counter is not None else None)


def mark_incomplete(out: str) -> None:
    """Flip `complete` off in an existing dataset before its parts are rewritten."""
    for sp in SPLITS:
        path = storage.join(out, sp, "mbtrain.json")
        meta = storage.read_json(path)
        if meta is not None and meta.get("complete"):
            meta["complete"] = False
            storage.write_json(path, meta)


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Prepare this job's parts of `cfg.out`; with a single job, merge them too.

    Returns the stats (exit code 0, or 3 if any input was skipped). Raises DataError on fatal
    problems (no inputs, UTF-8 errors under the `fail` policy, a conflicting published output,
    a full disk) and ConfigError on an invalid config.
    """
    errs = cfg.validate()
    if errs:
        raise ConfigError("; ".join(errs))
    check_output_path(cfg.out)
    try:
        return _prepare(cfg)
    except OSError as e:
        error = output_error(e, cfg.out)
        if error is None:
            raise
        raise error from None


def _prepare(cfg: PrepareConfig) -> PrepareResult:
    start = time.monotonic()
    total = cfg.worker_count * cfg.workers
    mine = list(range(cfg.worker_index * cfg.workers, (cfg.worker_index + 1) * cfg.workers))
    created = make_out_dir(cfg.out)
    expansion_skips: list[dict] = []
    excluded: list[dict] = []
    sources = expand_inputs(
        cfg.inputs,
        cfg.format,
        lambda w, r: expansion_skips.append({"where": w, "reason": r}),
        cfg.exclude,
        excluded=lambda w, r: excluded.append({"where": w, "reason": r}),
        skip_dirs=[] if storage.is_remote(cfg.out) else [cfg.out],
    )
    if not sources:
        for d in created:  # leave no empty --out behind a command that did nothing
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise DataError(f"no input files found in {cfg.inputs}")
    splitter = Splitter(cfg.val_fraction, cfg.val_docs, cfg.seed, sources)

    layout_path = storage.join(cfg.out, "layout.json")
    fp = fingerprint(cfg, total)
    layout = storage.read_json(layout_path)
    if layout is not None and layout.get("fingerprint") != fp:
        diff = _diff(layout.get("fingerprint", {}), fp)
        if published(cfg.out):
            raise DataError(
                f"{layout_path}: {cfg.out} holds a dataset prepared with another config "
                f"({diff}); use a new --out or delete it"
            )
        discard_unpublished(cfg.out, int(layout.get("total_parts", 0)), total)
        log.warning(
            "%s: replacing the unpublished output of an earlier prepare with another config (%s)",
            cfg.out,
            diff,
        )
        layout = None
    if layout is None:
        storage.write_json(layout_path, {"total_parts": total, "fingerprint": fp})
    mark_incomplete(cfg.out)

    assignment = assign_parts(sources, total)
    jobs = [
        (
            cfg,
            k,
            total,
            assignment[k],
            expansion_skips if k == 0 else [],
            splitter,
            excluded if k == 0 else [],
        )
        for k in mine
    ]
    progress = Progress(sum(s.size for k in mine for s in assignment[k]), cfg.progress)
    try:
        if cfg.workers == 1:
            results = [run_part(*jobs[0], advance=progress.advance)]
        else:
            results = _run_pool(cfg, jobs, progress)
    finally:
        progress.close()
    if cfg.worker_count == 1:
        from mbtrain.data.merging import merge

        result = merge(cfg.out)
    else:
        stats = empty_stats()
        for r in results:
            add_stats(stats, r)
        result = PrepareResult(cfg.out, stats, merged=False)
    result.read_bytes, result.elapsed = progress.done, time.monotonic() - start
    return result


def _run_pool(cfg: PrepareConfig, jobs: list[tuple], progress: Progress) -> list[dict]:
    """Run the parts in `cfg.workers` processes; the parent alone draws the progress, from a
    counter the workers add to (bars drawn by several processes overwrite each other)."""
    import multiprocessing as mp  # here: 6 ms of import on small one-worker runs

    from mbtrain.data.writer import preload

    preload(cfg)  # once in the parent: forked workers then share the imported modules
    ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
    counter = ctx.Value("q", 0)
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(counter,)) as pool:
        pending = pool.map_async(_run_part_in_worker, jobs, chunksize=1)
        while not pending.ready():
            pending.wait(1.0)
            progress.update_to(counter.value)
        results = pending.get()
    progress.update_to(counter.value)
    return results


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def output_error(e: OSError, out: str) -> DataError | None:
    """The one-line error for a file that could not be written (a full disk or quota, a
    read-only or forbidden directory); None for other OSErrors, which stay bugs."""
    if e.errno not in _WRITE_ERRORS:
        return None
    return DataError(
        f"{e.filename or out}: {e.strerror}; {out} is not published (finished parts are "
        "kept: fix this and re-run the same command)"
    )


def make_out_dir(out: str) -> list[str]:
    """Create a local `out` before the inputs are listed, so that an `--out` inside an input
    directory is met by the walk and listed in stats.json as excluded (a directory that does
    not exist yet is never met). Returns the directories created here, deepest first."""
    if storage.is_remote(out):
        return []
    created = []
    path = os.path.abspath(out)
    while not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(out, exist_ok=True)
    return created


def published(out: str) -> bool:
    """Whether a merge ever published a dataset in `out`: its `mbtrain.json` exists, complete
    or marked incomplete by a re-run (someone may train on it: never replaced silently)."""
    return any(storage.read_json(storage.join(out, sp, "mbtrain.json")) for sp in SPLITS)


_PART_DIR = re.compile(r"^(\.?)part-\d{5}-of-(\d{5})(\.tmp)?$")


def discard_unpublished(out: str, old_total: int, new_total: int) -> None:
    """Remove what an unpublished prepare of another config left in a local `out`: its layout,
    markers, parts and merged indexes; nothing else.

    A `.part-*.tmp` of the new layout's names is left alone: it may be a part being written
    by another job of the new config, started at the same time (each writer clears its own).
    Remote outputs keep their objects (streaming's clients cannot delete them); they do no
    harm: merge reads only the parts named by the new layout and ignores markers of another
    fingerprint, and run_part rewrites such parts."""
    if storage.is_remote(out):
        return
    for name in ("layout.json", "stats.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "parts"), ignore_errors=True)
    for sp in SPLITS:
        split_dir = os.path.join(out, sp)
        if not os.path.isdir(split_dir):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(split_dir, "index.json"))
        for name in os.listdir(split_dir):
            m = _PART_DIR.match(name)
            if m and int(m.group(2)) == old_total and not (m.group(1) and old_total == new_total):
                shutil.rmtree(os.path.join(split_dir, name), ignore_errors=True)


def check_output_path(out: str) -> None:
    """ConfigError if a local `out` is, or lies under, something that is not a directory."""
    if storage.is_remote(out):
        return
    path = os.path.abspath(out)
    while True:
        if os.path.lexists(path):
            if not os.path.isdir(path):
                what = (
                    "is a file" if path == os.path.abspath(out) else f"lies under the file {path}"
                )
                raise ConfigError(f"--out {out}: {what}; give a directory (new or earlier output)")
            return
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys) or "unknown difference"


def config_dict(cfg: PrepareConfig) -> dict:
    return asdict(cfg)
