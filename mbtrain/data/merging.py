"""Join finished parts into one dataset: merged `index.json` per split, stats, completion.

The merge never moves shards: it rewrites each part's shard names as `part-.../shard...` in one
index at the split root (what streaming's `merge_index` does; done here for local outputs, so
that a local prepare never imports streaming, whose import alone takes seconds). It refuses to run until every part of the
layout has its completion marker, and it writes `mbtrain.json` (with `complete: true`) as the
very last file, so a dataset is either complete or visibly not.
"""

from __future__ import annotations

import json
import logging
import os
import uuid

from mbtrain.data import storage
from mbtrain.data.output import output_error
from mbtrain.data.parts import SPLITS, PrepareResult, add_stats, empty_stats, part_name
from mbtrain.errors import DataError

FORMAT = "mbtrain.bytes/1"


def merge(out: str) -> PrepareResult:
    """Merge all parts of `out` (local or remote); DataError if any part is unfinished, or if
    a file cannot be written (the dataset is then not published)."""
    try:
        return _merge(out)
    except OSError as e:
        error = output_error(e, out)
        if error is None:
            raise
        raise error from None


def _merge(out: str) -> PrepareResult:
    layout = storage.read_json(storage.join(out, "layout.json"))
    if layout is None:
        raise DataError(f"{out}: no layout.json; this is not the output of `mbtrain prepare`")
    total = int(layout["total_parts"])
    names = [part_name(k, total) for k in range(total)]
    stats = empty_stats()
    missing = []
    for k, name in enumerate(names):
        part = storage.read_json(storage.join(out, "parts", name + ".json"))
        # A marker of another fingerprint is a leftover of an unpublished earlier config whose
        # layout was replaced (remote outputs keep such objects until the part is rewritten).
        if part is None or part.get("fingerprint") != layout["fingerprint"]:
            missing.append(k)
            continue
        add_stats(stats, part)
    if missing:
        raise DataError(
            f"{out}: parts {missing} of {total} are not finished; re-run prepare for them "
            "(finished parts are skipped), then merge"
        )
    refuse_empty(out, stats)
    if storage.is_remote(out):
        _merge_remote(out, names)
    else:
        for sp in SPLITS:
            _merge_local(os.path.join(out, sp), names)
    fp = layout["fingerprint"]
    stats.update(
        {
            "format": FORMAT,
            "seq_len": fp["seq_len"],
            "pack": fp["pack"],
            "total_parts": total,
            "inputs": fp["inputs"],
        }
    )
    storage.write_json(storage.join(out, "stats.json"), stats)
    dataset_id = uuid.uuid4().hex
    for sp in SPLITS:
        meta = {
            "format": FORMAT,
            "complete": True,
            "split": sp,
            "seq_len": fp["seq_len"],
            "pack": fp["pack"],
            "documents": stats["documents"][sp],
            "bytes": stats["bytes"][sp],
            "samples": stats["samples"][sp],
            "dataset_id": dataset_id,
        }
        storage.write_json(storage.join(out, sp, "mbtrain.json"), meta)
    return PrepareResult(out, stats, merged=True)


def refuse_empty(out: str, stats: dict) -> None:
    """A dataset without training documents is never published (no mbtrain.json is written,
    so nothing can train on it by mistake); the error says what happened to the inputs."""
    docs = stats["documents"]
    if docs["train"]:
        return
    skipped = stats.get("skipped", [])
    why = ""
    if skipped:
        reasons: dict[str, int] = {}
        for x in skipped:
            reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        why = "; skipped: " + ", ".join(f"{n} x {r}" for r, n in top)
        first = skipped[0]["where"]
        why += f" (first: {first}; all in {storage.join(out, 'parts')})"
    what = (
        f"all {docs['val']} document(s) went to val (lower --val-fraction or add documents)"
        if docs["val"]
        else "no document was read from the inputs (check --format / --text-field)"
    )
    raise DataError(f"{out}: not published: {what}{why}")


def _merge_local(split_dir: str, names: list[str]) -> None:
    """streaming's `merge_index` for a local split: same merged `index.json`, written atomically."""
    shards = []
    for name in names:
        with open(os.path.join(split_dir, name, "index.json")) as f:
            index = json.load(f)
        for shard in index["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = f"{name}/{shard[key]['basename']}"
            shards.append(shard)
    merged = json.dumps({"version": 2, "shards": shards}).encode()
    storage.write_local_atomic(os.path.join(split_dir, "index.json"), merged)


def _merge_remote(out: str, names: list[str]) -> None:
    from streaming.base.util import merge_index

    # merge_index warns about its temp folder and existing dirs on every call: noise to users.
    quiet = [logging.getLogger(), logging.getLogger("streaming.base.storage.upload")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        for sp in SPLITS:
            merge_index(
                [storage.join(out, sp, n, "index.json") for n in names], storage.join(out, sp)
            )
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
