"""Checks of prepared splits before anything reads them, and their identity.

`check_split` reads a split's `mbtrain.json`: it must exist, be complete and have been prepared
at the model's seq_len or longer. `check_data` runs it on every split a run config names (train
or each stream of a mix, and val) before any process group or engine exists, so a missing or
unfit dataset is a one-line error in seconds (`train --dry-run` included), not after DeepSpeed
started. `data_identity` fingerprints what a run reads (the shards' content hashes from
`index.json`, the mix proportions), so a resume can tell that the data behind a saved loader
position changed.
"""

from __future__ import annotations

import hashlib
import json

from mbtrain.data import storage
from mbtrain.data.config import DataConfig
from mbtrain.errors import DataError


def check_split(path: str, seq_len: int | None, need_samples: bool = True) -> dict:
    """Read and check `mbtrain.json` of a split directory; DataError with a clear line if unusable."""
    meta = storage.read_json(storage.join(path, "mbtrain.json"))
    if meta is None:
        if storage.read_json(storage.join(path, "index.json")) is not None:
            raise DataError(
                f"{path}: dataset is incomplete (no mbtrain.json; prepare was interrupted or is "
                "still running); re-run prepare (finished parts are skipped) and merge"
            )
        raise DataError(f"{path}: no prepared dataset here; run `mbtrain prepare` first")
    if not meta.get("complete"):
        raise DataError(
            f"{path}: dataset is incomplete (being re-prepared or interrupted); re-run prepare and merge"
        )
    prepared = meta.get("seq_len")
    if seq_len is not None and (not isinstance(prepared, int) or prepared < seq_len):
        raise DataError(
            f"{path}: prepared with seq_len {prepared}, shorter than the model's seq_len "
            f"{seq_len}; re-run prepare with --seq-len {seq_len} or longer (the loader cuts "
            "the model's windows from longer samples)"
        )
    if need_samples and not meta.get("samples"):
        raise DataError(f"{path}: the split has no samples")
    return meta


def train_specs(cfg: DataConfig) -> list[dict]:
    """The streams of the training split: each mix entry, or `data.train` alone."""
    return list(cfg.mix) if cfg.mix else [{"path": cfg.train}]


def check_data(cfg: DataConfig, seq_len: int) -> dict:
    """Check every split `cfg` names against the model's seq_len; return the run's data
    identity (`data_identity`). DataError names the first unusable split."""
    prepared = set()
    for spec in train_specs(cfg):
        prepared.add(check_split(spec["path"], seq_len)["seq_len"])
    if len(prepared) > 1:
        raise DataError(
            f"data.mix: its datasets were prepared with different seq_len "
            f"({', '.join(map(str, sorted(prepared)))}); prepare them with one --seq-len"
        )
    if cfg.val:
        check_split(cfg.val, seq_len)
    return data_identity(cfg)


def split_fingerprint(path: str) -> str:
    """A content fingerprint of one split: its shards' names, sizes, sample counts and hashes
    (a dataset prepared again from the same inputs and config keeps it; moving it too)."""
    index = storage.read_json(storage.join(path, "index.json"))
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise DataError(f"{path}: index.json is missing or not a streaming index")
    rows = [
        [
            (shard.get("raw_data") or {}).get("basename"),
            (shard.get("raw_data") or {}).get("bytes"),
            (shard.get("raw_data") or {}).get("hashes"),
            shard.get("samples"),
        ]
        for shard in index["shards"]
    ]
    return hashlib.sha1(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def data_identity(cfg: DataConfig) -> dict:
    """What a saved training-loader position depends on: the training streams' content and
    their mix settings (not their paths: a dataset copied to scratch is the same data)."""
    streams = []
    for spec in train_specs(cfg):
        entry = {"fingerprint": split_fingerprint(spec["path"])}
        entry.update({k: spec[k] for k in ("proportion", "repeat", "choose") if spec.get(k)})
        streams.append(entry)
    return {"train": streams}


def describe_identity_change(saved: dict, now: dict) -> str | None:
    """None when `now` reads the data `saved` did; else what changed, in a few words."""
    a, b = saved.get("train", []), now.get("train", [])
    if a == b:
        return None
    if len(a) != len(b):
        return f"{len(a)} training stream(s) then, {len(b)} now"
    for i, (x, y) in enumerate(zip(a, b)):
        if x.get("fingerprint") != y.get("fingerprint"):
            return f"training stream {i} holds other data (fingerprint {x.get('fingerprint')} then, {y.get('fingerprint')} now)"
        if x != y:
            return f"training stream {i}'s mix settings changed ({x} then, {y} now)"
    return "the training data changed"
