"""One part of one split, written with streaming's `MDSWriter` (local dir or object store).

Atomicity: a local part is written into a hidden `.<part>.tmp` directory and renamed into
place when finished, so a crashed worker never leaves a part that looks whole. A remote part
is uploaded by streaming as it goes (objects cannot be renamed); there the part's completion
marker, uploaded after `index.json`, is what says it is finished (see `prepare.py`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mbtrain.data import storage

COLUMNS = {
    "data": "bytes",  # the window, unpadded (<= seq_len bytes)
    "doc_ids": "json",  # id of the document of each piece, in window order
    "offsets": "ndarray:int64",  # offset of each piece within its document
    "lengths": "ndarray:int64",  # length of each piece (sum == len(data))
    "doc_sizes": "ndarray:int64",  # full size of each piece's document
}
"""MDS columns of every mbtrain byte dataset."""


class PartWriter:
    """Writes the samples of one (split, part) and publishes them on `finish()`."""

    def __init__(self, out: str, split: str, part: str, cfg, stage_root: str | None):
        from streaming import MDSWriter

        self.final = storage.join(out, split, part)
        if storage.is_remote(out):
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
        self.writer = MDSWriter(
            out=target,
            columns=COLUMNS,
            compression=cfg.compression or None,
            hashes=list(cfg.hashes),
            size_limit=cfg.size_limit,
            keep_local=False,
            exist_ok=True,
        )

    def write(self, sample: dict) -> None:
        self.writer.write(sample)

    def finish(self) -> None:
        self.writer.finish()
        if self.tmp is not None:
            os.replace(self.tmp, self.final)
