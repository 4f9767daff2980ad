"""Hang watchdog: a step far slower than usual dumps every thread's Python stack to the run dir.

A collective that never completes (a dead peer, a mismatched shape on one rank) hangs all
ranks silently until the job's time limit; the stacks written here show where each rank waits.
`faulthandler` writes them from a watchdog thread without needing the GIL-holding main thread
to cooperate.
"""

from __future__ import annotations

import faulthandler
import statistics
import threading
import time
from pathlib import Path


class Watchdog:
    def __init__(self, out_dir: str | Path, rank: int, factor: float, min_seconds: float):
        self.path = Path(out_dir) / f"hang_rank{rank}.txt"
        self.factor = factor
        self.min_seconds = min_seconds
        self._durations: list[float] = []
        self._last = time.monotonic()
        self._step = 0
        self._dumped_for = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mbtrain-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._last = time.monotonic()
        self._thread.start()
        return self

    def beat(self, step: int) -> None:
        now = time.monotonic()
        if step != self._step:
            self._durations.append(now - self._last)
            self._durations = self._durations[-50:]
        self._step = step
        self._last = now

    def pause(self) -> None:
        """Restart the clock (after an evaluation or a checkpoint, which are legitimately slow)."""
        self._last = time.monotonic()

    def limit(self) -> float:
        median = statistics.median(self._durations) if self._durations else 0.0
        return max(self.min_seconds, self.factor * median)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            waited = time.monotonic() - self._last
            if waited > self.limit() and self._dumped_for != self._step:
                self._dumped_for = self._step
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as f:
                    f.write(
                        f"\n=== step {self._step + 1} has run {waited:.0f} s "
                        f"(limit {self.limit():.0f} s) at {time.ctime()} ===\n"
                    )
                    f.flush()
                    faulthandler.dump_traceback(file=f, all_threads=True)

    def stop(self) -> None:
        self._stop.set()
