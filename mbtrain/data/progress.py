"""What `prepare` shows while it reads: input bytes read, on stderr.

A part's reader counts bytes with a `ReadMeter`; the job's `Progress` draws them, a tqdm bar
on a terminal and plain lines anywhere else. With several worker processes only the parent
draws, from a counter the workers add to (bars drawn by several processes overwrite each other).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def rate(done: int, seconds: float) -> str:
    """`12.3 MB in 4.56 s (2.7 MB/s)`: what a log reader compares between runs."""
    size = f"{done / 1e6:.1f} MB" if done >= 100_000 else f"{done / 1e3:.1f} kB"
    took = f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{size} in {took} ({done / 1e6 / max(seconds, 1e-3):.1f} MB/s)"


class ReadMeter:
    """Counts a part's input bytes for the progress display: by document within a file
    (capped at the file's size: a compressed file gives more bytes than it holds), topped up
    to the file's size at its end. Reported in steps of 4 MiB, since each report may cross
    processes (a shared counter under a lock)."""

    STEP = 1 << 22

    def __init__(self, advance: Callable[[int], None] | None):
        self.advance = advance
        self.in_file = 0  # bytes of the current file counted so far
        self.pending = 0

    def document(self, n: int, file_size: int) -> None:
        if self.advance is None or self.in_file >= file_size:
            return
        n = min(n, file_size - self.in_file)
        self.in_file += n
        self.pending += n
        if self.pending >= self.STEP:
            self.advance(self.pending)
            self.pending = 0

    def file_done(self, file_size: int) -> None:
        if self.advance is None:
            return
        self.advance(self.pending + file_size - self.in_file)
        self.in_file = self.pending = 0


class Progress:
    """Input bytes read by this job, on stderr: a tqdm bar on a terminal; anywhere else (a
    Slurm log, a pipe, a CI console) a plain line every `interval` seconds, since a bar's
    carriage returns and cursor moves (`[A`) turn a log file into noise."""

    def __init__(self, total: int, enabled: bool, stream=None, interval: float = 10.0):
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.start = self.last = time.monotonic()
        self.bar = None
        self.plain = enabled and not _is_terminal(self.stream)
        if enabled and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="prepare",
                file=self.stream,
                leave=False,
                mininterval=1.0,
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def advance(self, n: int) -> None:
        self.update_to(self.done + n)

    def update_to(self, done: int) -> None:
        """Set the bytes read so far (from a counter shared with worker processes)."""
        if done == self.done:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self.plain and now - self.last >= self.interval:
            self.last = now
            share = f" of {self.total / 1e6:.1f} MB ({100 * done / max(self.total, 1):.0f}%)"
            print(f"prepare: read {rate(done, now - self.start)}{share}", file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
