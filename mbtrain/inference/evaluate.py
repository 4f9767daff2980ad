"""Bits per byte of a model on held-out bytes, beside gzip, bzip2 and xz on the same bytes.

Inputs are MDS splits (documents reconstructed exactly from their windows) or raw files and
directories (any bytes). Each document is scored on its own, so no window mixes two
documents; the modes are the paper's Table 11 (basic, sliding window, strided).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from mbtrain.errors import DataError
from mbtrain.inference.compressors import compressor_bpb


def _is_mds_split(path: Path) -> bool:
    return (path / "index.json").is_file()


def iter_eval_documents(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every document under the given splits, files and directories."""
    from mbtrain.data import iter_documents

    for raw in paths:
        path = Path(raw)
        if raw.startswith("s3://") or _is_mds_split(path):
            yield from iter_documents(raw)
        elif path.is_dir() and _is_mds_split(path / "val"):
            yield from iter_documents(str(path / "val"))
        elif path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise DataError(f"{path}: directory holds no files to evaluate on")
            for f in files:
                yield str(f), f.read_bytes()
        elif path.is_file():
            yield str(path), path.read_bytes()
        else:
            raise DataError(f"{path}: no such file, directory or dataset split")


LONG_MODES = ("sliding", "strided", "basic")
SHORT_MODES = ("basic", "sliding", "strided")


def default_modes(lengths: list[int], context: int) -> tuple[str, ...]:
    """Sliding windows first when a document is longer than the context: basic windows would
    score the bytes after the first window with half a window of context on average."""
    return LONG_MODES if any(n > context for n in lengths) else SHORT_MODES


MODES = ("basic", "sliding", "strided")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_eval_args(
    model,
    modes: tuple[str, ...] | None = None,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_bytes: int | None = None,
) -> None:
    """ValueError naming the first argument of `evaluate_model` out of its range.

    Checked before any document is read or scored, so a bad value costs nothing; `context`
    is bounded by model.seq_len only where the model has learned positions (rope has none)."""
    if modes is not None:
        if not modes:
            raise ValueError(f"modes: give at least one of {', '.join(MODES)} (or None)")
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"modes: each must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = model.cfg
    limit = cfg.seq_len if cfg.pos == "learned" else None
    if context is not None and (
        not _is_int(context) or context < 1 or (limit is not None and context > limit)
    ):
        valid = f"in [1, model.seq_len ({limit})]" if limit is not None else ">= 1"
        raise ValueError(f"context: must be an integer {valid}, got {context!r}")
    window = context if context is not None else cfg.seq_len
    if stride is not None and (not _is_int(stride) or not 1 <= stride <= window):
        raise ValueError(f"stride: must be an integer in [1, context ({window})], got {stride!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    if max_bytes is not None and (not _is_int(max_bytes) or max_bytes < 1):
        raise ValueError(f"max_bytes: must be an integer >= 1 (or None: all), got {max_bytes!r}")


def evaluate_model(
    model,
    paths: list[str],
    modes: tuple[str, ...] | None = None,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_bytes: int | None = None,
    progress: bool = True,
) -> dict:
    """{modes: {mode: bpb} (the first is the headline), compressors: {name: bpb} on all the
    documents as one stream, compressors_per_document: each document compressed alone (as the
    model scores it), bytes, documents}. `modes` None: `default_modes`. Arguments out of
    range: ValueError (`check_eval_args`)."""
    from mbtrain.model import score_bytes

    check_eval_args(model, modes, context, stride, batch_size, max_bytes)
    docs, total = [], 0
    for name, data in iter_eval_documents(paths):
        if max_bytes is not None and total + len(data) > max_bytes:
            data = data[: max_bytes - total]
        if data:
            docs.append((name, data))
            total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    if not total:
        raise DataError(f"{', '.join(paths)}: no bytes to evaluate on (empty files or split)")
    context = model.cfg.seq_len if context is None else context
    modes = modes or default_modes([len(d) for _, d in docs], context)
    results = {}
    bar = tqdm(
        total=total * len(modes), unit="B", unit_scale=True, disable=not progress, desc="eval"
    )
    for mode in modes:
        nats = count = 0.0
        for _, data in docs:
            r = score_bytes(
                model, data, context=context, mode=mode, stride=stride, batch_size=batch_size
            )
            nats += r.nats
            count += r.count
            bar.update(len(data))
        results[mode] = nats / count / math.log(2)
    bar.close()
    joined = b"".join(d for _, d in docs)
    per_doc: dict[str, float] = {}
    for _, d in docs:
        for name, bpb in compressor_bpb(d).items():
            per_doc[name] = per_doc.get(name, 0.0) + bpb * len(d) / total
    return {
        "modes": results,
        "compressors": compressor_bpb(joined),
        "compressors_per_document": per_doc,
        "bytes": total,
        "documents": len(docs),
        "context": context,
    }


def format_eval(result: dict) -> str:
    lines = [
        f"{result['bytes']:,} bytes in {result['documents']} document(s), context {result['context']}"
    ]
    lines.append(f"{'':18s} bits/byte")
    for i, (mode, bpb) in enumerate(result["modes"].items()):
        note = "   <- headline" if i == 0 and len(result["modes"]) > 1 else ""
        lines.append(f"  model ({mode}){'':{max(0, 9 - len(mode))}s} {bpb:8.4f}{note}")
    per_doc = result.get("compressors_per_document", {})
    lines.append(f"{'':18s} one stream   each document alone")
    for name, bpb in result["compressors"].items():
        alone = f"   {per_doc[name]:8.4f}" if name in per_doc else ""
        lines.append(f"  {name:16s} {bpb:8.4f}{alone}")
    return os.linesep.join(lines)
