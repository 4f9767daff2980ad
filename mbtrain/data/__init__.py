"""Corpus preparation into MDS datasets of byte windows, and the streaming training loader.

Public API: `prepare`, `merge`, `build_loader`, `iter_documents`, `iter_val_bytes`,
`PrepareConfig`, `DataConfig`, `PrepareResult`. Heavy imports (streaming, pyarrow, torch)
happen on first call, inside these wrappers, so that `import mbtrain.data` stays cheap for
the CLI and config validation; the types they return are imported for type checkers only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from mbtrain.data.config import DataConfig, PrepareConfig

if TYPE_CHECKING:
    from mbtrain.data.loader import ByteLoader
    from mbtrain.data.parts import PrepareResult


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Prepare this job's parts of `cfg.out` into an MDS dataset (`train/`, `val/`,
    `stats.json`); with a single job (`worker_count` 1), merge them too.

    Returns what was done (`result.stats`, `result.exit_code`: 0, or 3 if any input was
    skipped). Raises ConfigError on an invalid config, DataError on fatal input or output
    problems (no inputs, invalid UTF-8 under `utf8_errors: fail`, a full disk).

    Example:
        >>> from mbtrain.data import PrepareConfig, prepare
        >>> result = prepare(PrepareConfig(inputs=["notes/**/*.txt"], out="data/notes", seq_len=1024))
        >>> print(result.summary())
    """
    from mbtrain.data.preparation import prepare as _prepare

    return _prepare(cfg)


def merge(out: str) -> PrepareResult:
    """Merge the finished parts of `out` (local or `s3://`) written by `worker_count`
    independent `prepare` jobs into one dataset; DataError if a part is unfinished.

    Example:
        >>> from mbtrain.data import merge
        >>> merge("data/notes").exit_code
        0
    """
    from mbtrain.data.merging import merge as _merge

    return _merge(out)


def build_loader(
    cfg: DataConfig,
    split: str,
    seq_len: int,
    micro_batch_size: int,
    dp_rank: int,
    dp_size: int,
    seed: int,
    drop_last: bool = True,
    align: int = 1,
) -> ByteLoader:
    """The streaming loader of `split` ("train" or "val") for data-parallel rank `dp_rank` of
    `dp_size`: batches {"x": LongTensor [micro_batch_size, seq_len], "mask", ...}, shuffled
    from `seed` (train only), resumable through `state_dict()`. `align` > 1 lays documents
    out on multiples of it (MegaByte's patch size). DataError if the split is missing or was
    prepared with a `seq_len` that `seq_len` does not divide.

    Example:
        >>> from mbtrain.data import DataConfig, build_loader
        >>> loader = build_loader(DataConfig(train="data/notes/train"), "train", 1024, 8, 0, 1, 0)
        >>> batch = next(iter(loader))   # batch["x"].shape == (8, 1024)
    """
    from mbtrain.data.loader import build_loader as _build

    return _build(cfg, split, seq_len, micro_batch_size, dp_rank, dp_size, seed, drop_last, align)


def iter_documents(path: str, cache: str | None = None) -> Iterator[tuple[str, bytes]]:
    """The documents of a prepared split (`out/val`, local or `s3://`), reconstructed exactly
    from their windows, in stored order: `(doc_id, original bytes)`, one document in memory
    at a time. `cache`: where downloaded shards go (a temporary directory, removed after).

    Example:
        >>> from mbtrain.data import iter_documents
        >>> for doc_id, data in iter_documents("data/notes/val"):
        ...     print(doc_id, len(data))
    """
    from mbtrain.data.documents import iter_documents as _it

    return _it(path, cache)


def iter_val_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a split's documents, concatenated in stored order, at most `max_bytes`
    (e.g. to compress with gzip beside a model's score).

    Example:
        >>> from mbtrain.data import iter_val_bytes
        >>> len(iter_val_bytes("data/notes/val", max_bytes=10_000))
        10000
    """
    from mbtrain.data.documents import iter_val_bytes as _it

    return _it(path, max_bytes)


def __getattr__(name: str) -> object:
    if name == "PrepareResult":  # a dataclass of parts.py, cheap, but not needed to import us
        from mbtrain.data.parts import PrepareResult

        return PrepareResult
    raise AttributeError(f"module 'mbtrain.data' has no attribute {name!r}")


__all__ = [
    "DataConfig",
    "PrepareConfig",
    "PrepareResult",
    "build_loader",
    "iter_documents",
    "iter_val_bytes",
    "merge",
    "prepare",
]
