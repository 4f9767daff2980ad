"""Corpus preparation into MDS datasets of byte windows, and the streaming training loader.

Public API: `prepare`, `merge`, `build_loader`, `iter_documents`, `iter_val_bytes`,
`PrepareConfig`, `DataConfig`, `PrepareResult`. Heavy imports (streaming, pyarrow) happen on
first use so that `import mbtrain.data` stays cheap for the CLI and config validation.
"""

from __future__ import annotations

from mbtrain.data.config import DataConfig, PrepareConfig


def prepare(cfg):
    """See `mbtrain.data.preparation.prepare`."""
    from mbtrain.data.preparation import prepare as _prepare

    return _prepare(cfg)


def merge(out: str):
    """See `mbtrain.data.merging.merge`."""
    from mbtrain.data.merging import merge as _merge

    return _merge(out)


def build_loader(
    cfg, split, seq_len, micro_batch_size, dp_rank, dp_size, seed, drop_last=True, align=1
):
    """See `mbtrain.data.loader.build_loader`."""
    from mbtrain.data.loader import build_loader as _build

    return _build(cfg, split, seq_len, micro_batch_size, dp_rank, dp_size, seed, drop_last, align)


def iter_documents(path: str):
    """See `mbtrain.data.loader.iter_documents`."""
    from mbtrain.data.documents import iter_documents as _it

    return _it(path)


def iter_val_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """See `mbtrain.data.loader.iter_val_bytes`."""
    from mbtrain.data.documents import iter_val_bytes as _it

    return _it(path, max_bytes)


__all__ = [
    "DataConfig",
    "PrepareConfig",
    "build_loader",
    "iter_documents",
    "iter_val_bytes",
    "merge",
    "prepare",
]
