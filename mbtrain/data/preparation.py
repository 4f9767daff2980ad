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

The steps, module by module: `inputs` lists the files, `readers` turns each into documents,
`split` draws the validation documents, `windows` cuts windows, `writer` writes a part,
`merging` joins the parts; `output` keeps the output directory honest, `parts` holds what a
part and the merge share, `progress` what the console shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable

from mbtrain.data import storage
from mbtrain.data.config import PrepareConfig
from mbtrain.data.inputs import SourceFile, expand_inputs
from mbtrain.data.merging import merge
from mbtrain.data.output import (
    check_output_path,
    discard_unpublished,
    make_out_dir,
    mark_incomplete,
    output_error,
    published,
)
from mbtrain.data.parts import SPLITS, PrepareResult, add_stats, empty_stats, part_name
from mbtrain.data.progress import Progress, ReadMeter
from mbtrain.data.readers import EMPTY, compression_of, make_utf8, read_documents
from mbtrain.data.split import RULE_VERSION, Splitter
from mbtrain.data.windows import Windower
from mbtrain.data.writer import PartWriter, preload
from mbtrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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


_worker_counter = None  # a worker process's share of the job's bytes-read counter


def _init_worker(counter) -> None:
    global _worker_counter
    _worker_counter = counter


def _count_in_worker(n: int) -> None:
    with _worker_counter.get_lock():
        _worker_counter.value += n


def _run_part_in_worker(args):
    return run_part(*args, advance=_count_in_worker if _worker_counter is not None else None)


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


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys) or "unknown difference"
