"""One part of one split, written as an MDS directory (local dir or object store).

Atomicity: a local part is written into a hidden `.<part>.tmp` directory and renamed into
place when finished, so a crashed worker never leaves a part that looks whole. A remote part
is uploaded by streaming as it goes (objects cannot be renamed); there the part's completion
marker, uploaded after `index.json`, is what says it is finished (see `preparation.py`).

Two writers of the same bytes:
* `FastMDSWriter` (fast_writer.py; local outputs with zstd or no compression, the usual case):
  rows encoded straight from `(data, pieces)` (mds.py), and no import of `streaming`, whose
  package import alone takes seconds per process.
* streaming's `MDSWriter` for remote outputs (it uploads shards as it goes) and for
  compressions/hashes the fast writer does not implement.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mbtrain.data import storage
from mbtrain.data.fast_writer import FastMDSWriter, fast_supported
from mbtrain.data.mds import COLUMNS, RowEncoder


def uses_fast_writer(cfg) -> bool:
    """Whether `cfg`'s parts are written by `FastMDSWriter` (else streaming's `MDSWriter`)."""
    return not storage.is_remote(cfg.out) and fast_supported(cfg.compression, cfg.hashes)


def preload(cfg) -> None:
    """Import what writing `cfg`'s parts needs, once, before forking workers (streaming's
    import takes seconds; every forked worker would pay it again)."""
    if not uses_fast_writer(cfg):
        import streaming  # noqa: F401


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: what Slurm's cgroup or taskset allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        self.encoder = RowEncoder()
        if uses_fast_writer(cfg):
            # A compression thread pays only where a core is free for it; with a worker per
            # core, two threads per worker slow each other down (benchmarks/NOTES.md "## data").
            threaded = cfg.workers < usable_cpus()
            self.fast = FastMDSWriter(
                target, cfg.compression, cfg.hashes, cfg.size_limit, threaded=threaded
            )
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

    def write(self, chunks: list, pieces: list[tuple[str, int, int, int]]) -> None:
        """One window (its chunks, see windows.py) and its pieces `(doc_id, offset, length,
        doc_size)`."""
        if self.fast is not None:
            self.fast.write(self.encoder.encode(chunks, pieces))
        else:
            from mbtrain.data.windows import make_sample

            try:
                self.writer.write(make_sample(b"".join(chunks), pieces))
            except OSError as e:
                raise storage.with_file_name(e, self.tmp or self.final) from None

    def finish(self) -> None:
        try:
            (self.fast or self.writer).finish()
        except OSError as e:  # streaming's MDSWriter names no file: the part does
            raise storage.with_file_name(e, self.tmp or self.final) from None
        if self.tmp is not None:
            os.replace(self.tmp, self.final)
            self.tmp = None

    def close(self) -> None:
        """Release the writer's thread without publishing (after an error elsewhere); the
        unpublished local part is removed, so no half-written `.tmp` part stays behind."""
        if self.fast is not None:
            self.fast.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
