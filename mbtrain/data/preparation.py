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
"""

from __future__ import annotations

import hashlib
import logging
import os
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
        if not self.merged:
            lines.append("run merge once all jobs finished")
        return "\n".join(lines)


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
    position: int = 0,
    splitter: Splitter | None = None,
    pre_excluded: list[dict] = (),
) -> dict:
    """Write part `k`: read its sources, split, window, write both splits, then its marker."""
    name = part_name(k, total)
    marker = storage.join(cfg.out, "parts", name + ".json")
    done = storage.read_json(marker)
    if done is not None:
        if done.get("fingerprint") != fingerprint(cfg, total):
            raise DataError(f"{marker}: written by a different prepare config; use a new --out")
        log.info("%s already finished, skipping", name)
        return done
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
    writers: dict[str, PartWriter] = {}
    try:
        for sp in SPLITS:  # one by one: a failing second writer must not leak the first's thread
            writers[sp] = PartWriter(cfg.out, sp, name, cfg, stage)
        windowers = {sp: Windower(cfg.seq_len, cfg.pack, writers[sp].write) for sp in SPLITS}
        bar = _progress(cfg, sum(s.size for s in sources), name, position)
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
            if bar is not None:
                bar.update(src.size)
        if bar is not None:
            bar.close()
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


def _progress(cfg: PrepareConfig, total_bytes: int, name: str, position: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        desc=name,
        position=position,
        leave=False,
        mininterval=1.0,
    )


def _run_part_star(args):
    return run_part(*args)


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
    problems (no inputs, UTF-8 errors under the `fail` policy, a conflicting earlier output)
    and ConfigError on an invalid config.
    """
    errs = cfg.validate()
    if errs:
        raise ConfigError("; ".join(errs))
    check_output_path(cfg.out)
    total = cfg.worker_count * cfg.workers
    mine = list(range(cfg.worker_index * cfg.workers, (cfg.worker_index + 1) * cfg.workers))
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
        raise DataError(f"no input files found in {cfg.inputs}")
    splitter = Splitter(cfg.val_fraction, cfg.val_docs, cfg.seed, sources)

    layout_path = storage.join(cfg.out, "layout.json")
    fp = fingerprint(cfg, total)
    layout = storage.read_json(layout_path)
    if layout is not None and layout.get("fingerprint") != fp:
        raise DataError(
            f"{layout_path}: {cfg.out} holds a dataset prepared with another config "
            f"({_diff(layout.get('fingerprint', {}), fp)}); use a new --out or delete it"
        )
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
            i,
            splitter,
            excluded if k == 0 else [],
        )
        for i, k in enumerate(mine)
    ]
    if cfg.workers == 1:
        results = [_run_part_star(jobs[0])]
    else:
        import multiprocessing as mp  # here: 6 ms of import on small one-worker runs

        from mbtrain.data.writer import preload

        preload(cfg)  # once in the parent: forked workers then share the imported modules
        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(cfg.workers) as pool:
            results = pool.map(_run_part_star, jobs, chunksize=1)
    if cfg.worker_count == 1:
        from mbtrain.data.merging import merge

        return merge(cfg.out)
    stats = empty_stats()
    for r in results:
        add_stats(stats, r)
    return PrepareResult(cfg.out, stats, merged=False)


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
