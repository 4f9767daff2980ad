"""Hang watchdog: a step far slower than usual dumps every thread's Python stack to the run dir,
and one that stays stuck ends the process so that the job is requeued.

A collective that never completes (a dead peer, a mismatched shape on one rank) hangs all
ranks silently until the job's time limit; the stacks written here show where each rank waits.
`faulthandler` writes them from a watchdog thread without needing the GIL-holding main thread
to cooperate. A hung collective cannot be interrupted from Python, so after `exit_after`
more seconds the rank leaves with `os._exit(HANG_EXIT_CODE)` (76): the batch script requeues
the job (within `cluster.max_restarts`), which resumes from the last complete checkpoint
instead of holding the allocation until its time limit. Every rank of a hung job is stuck in
the same collective and reaches the limit at about the same time.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import statistics
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HANG_EXIT_CODE = 76
"""Exit code of a rank whose step hung (EX_PROTOCOL): no checkpoint saved, requeue."""


class Watchdog:
    def __init__(
        self,
        out_dir: str | Path,
        rank: int,
        factor: float,
        min_seconds: float,
        exit_after: float = 0.0,
    ):
        self.path = Path(out_dir) / f"hang_rank{rank}.txt"
        self.factor = factor
        self.min_seconds = min_seconds
        self.exit_after = exit_after
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
            limit = self.limit()
            if waited > limit and self._dumped_for != self._step:
                self._dumped_for = self._step
                self._write(
                    f"\n=== step {self._step + 1} has run {waited:.0f} s "
                    f"(limit {limit:.0f} s) at {time.ctime()} ===\n",
                    stacks=True,
                )
            if self.exit_after > 0 and waited > limit + self.exit_after:
                self._write(
                    f"=== still stuck after {waited:.0f} s: exiting with {HANG_EXIT_CODE} "
                    "so that the job is requeued from the last checkpoint ===\n",
                    stacks=True,
                )
                # A warning: every rank's console shows it (each rank hangs on its own).
                log.warning(
                    f"step {self._step + 1} hung for {waited:.0f} s (stacks in "
                    f"{self.path}); exiting with {HANG_EXIT_CODE} for a requeue"
                )
                for handler in logging.getLogger("mbtrain").handlers:
                    handler.flush()
                os._exit(HANG_EXIT_CODE)

    def _write(self, header: str, stacks: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(header)
                f.flush()
                if stacks:
                    faulthandler.dump_traceback(file=f, all_threads=True)
        except OSError:
            pass  # a full disk must not keep the watchdog from ending a hung process

    def stop(self) -> None:
        self._stop.set()
