"""Bits per byte of a model on held-out bytes, beside gzip, bzip2 and xz on the same bytes.

Inputs are MDS splits (documents reconstructed exactly from their windows) or raw files and
directories (any bytes). Each document is scored on its own, so no window mixes two
documents (their windows still share batches: `mbtrain.model.scoring`); the modes are the
paper's Table 11 (basic, sliding window, strided). Sliding windows are the default: every byte
after the first window keeps at least half a window of context, the figure the paper reports.
The other modes are asked for by name (each one is a full pass over the data).

While it scores, eval shows the bytes scored, their rate and the time left on stderr: a tqdm
bar on a terminal; anywhere else (a Slurm log, a pipe) a plain line every `interval` seconds,
since a bar's carriage returns turn a log file into noise.

On CPU, unless told a thread count, eval runs each batch with the faster of torch's thread
count and one thread as measured on the batches so far (`ThreadChooser`): on cores that other
jobs keep busy, every operation split over threads waits for the thread whose core is taken
(measured 2-8x slower than one thread on a shared 2-core machine), while on idle cores the
threads share the work.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch

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


MODES = ("basic", "sliding", "strided")
DEFAULT_MODES = ("sliding",)
"""Basic windows would score the bytes after the first window with half a window of context
on average; strided costs two passes. Both are there to compare against, by name."""


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class EvalProgress:
    """Bytes scored so far, their rate and the time left, on `stream` (stderr): tqdm on a
    terminal, else a plain line (no escape codes) every `interval` seconds and at the end."""

    def __init__(
        self, total: int, enabled: bool = True, stream: TextIO | None = None, interval: float = 10.0
    ) -> None:
        self.total, self.done, self.interval = total, 0, interval
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = time.monotonic()
        self.bar = None
        self.plain = enabled and not _is_terminal(self.stream)
        if enabled and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="eval", file=self.stream)

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.plain and time.monotonic() - self.last >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last = now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate else float("inf")
        share = 100 * self.done / max(self.total, 1)
        left = _duration(eta) if math.isfinite(eta) else "?"
        print(
            f"eval: {_human(self.done)} of {_human(self.total)} ({share:.0f}%), "
            f"{_human(rate)}/s, ETA {left}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.plain and self.done:
            self._line()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


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


class ThreadChooser:
    """Torch's CPU thread count, chosen batch by batch between one per core and 1 from the
    rate (bytes run per second) each reached on its latest batches: each count is tried
    once, then the faster one runs and the other is tried again now and then (the load of a
    shared machine changes), rarely enough to cost about 1/EXPLORE of the time."""

    EXPLORE = 16

    def __init__(self) -> None:
        self.counts = tuple(dict.fromkeys((torch.get_num_threads(), 1)))
        self.rate: dict[int, float] = {}
        self.previous: int | None = None  # the thread count of the batch before
        self.since_explored = 0
        self.last = time.perf_counter()

    def after_batch(self, computed: int) -> None:
        """A batch of `computed` bytes ended: set the thread count of the next one."""
        now, current = time.perf_counter(), torch.get_num_threads()
        rate = computed / max(now - self.last, 1e-9)
        old = self.rate.get(current)
        # A moving average over a run of batches; the first batch after a switch starts anew.
        self.rate[current] = rate if old is None or self.previous != current else (
            0.7 * old + 0.3 * rate
        )  # fmt: skip
        self.previous = current
        self.since_explored += 1
        choice = self._next(current)
        if choice != current:
            torch.set_num_threads(choice)
        self.last = time.perf_counter()

    def _next(self, current: int) -> int:
        untried = [c for c in self.counts if c not in self.rate]
        if untried:
            return untried[0]
        best = max(self.rate, key=self.rate.__getitem__)
        if best != current or len(self.counts) == 1:
            return best
        other = next(c for c in self.counts if c != best)
        # A count R times slower is tried again after R x EXPLORE batches: ~1/EXPLORE of the time.
        if self.since_explored >= self.EXPLORE * self.rate[best] / max(self.rate[other], 1e-9):
            self.since_explored = 0
            return other
        return best


def evaluate_model(
    model,
    paths: list[str],
    modes: tuple[str, ...] | None = None,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_bytes: int | None = None,
    progress: bool = True,
    progress_interval: float = 10.0,
    threads: int | None = None,
) -> dict:
    """{modes: {mode: bpb} (the first is the headline), compressors: {name: bpb} on all the
    documents as one stream, compressors_per_document: each document compressed alone (as the
    model scores it), bytes, documents, context, bytes_per_s (scoring only), threads}. `modes`
    None: sliding windows only (`DEFAULT_MODES`). `batch_size`: full windows' worth of bytes
    per batch. `progress`: the display of `EvalProgress` on stderr. `threads`: torch's CPU
    threads while scoring; None: `ThreadChooser` decides batch by batch (`threads` in the
    result: the count most batches ran with). Torch's thread count is restored at the end.
    Arguments out of range: ValueError (`check_eval_args`)."""
    from mbtrain.model.scoring import score_documents

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
    modes = modes or DEFAULT_MODES
    results = {}
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    chooser = None
    if threads is None and next(model.parameters()).device.type == "cpu":
        chooser = ThreadChooser()
    used: dict[int, int] = {}  # threads -> batches run with them

    def on_batch(scored: int, computed: int) -> None:
        n = torch.get_num_threads()
        used[n] = used.get(n, 0) + 1
        bar.advance(scored)
        if chooser is not None:
            chooser.after_batch(computed)

    bar = EvalProgress(total * len(modes), progress, interval=progress_interval)
    started = time.perf_counter()
    try:
        for mode in modes:
            scores = score_documents(
                model, [d for _, d in docs], context, mode, stride, batch_size, on_batch
            )
            nats, count = sum(r.nats for r in scores), sum(r.count for r in scores)
            results[mode] = nats / count / math.log(2)
    finally:
        bar.close()
        torch.set_num_threads(before)
    seconds = time.perf_counter() - started
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
        "bytes_per_s": total * len(modes) / max(seconds, 1e-9),
        "threads": max(used, key=used.__getitem__) if used else torch.get_num_threads(),
    }


def format_eval(result: dict) -> str:
    lines = [
        f"{result['bytes']:,} bytes in {result['documents']} document(s), context {result['context']}"
        + (f", scored at {_human(result['bytes_per_s'])}/s" if "bytes_per_s" in result else "")
        + (f" on {result['threads']} thread(s)" if "threads" in result else "")
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
