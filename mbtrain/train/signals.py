"""Stop requests from the scheduler: checkpoint at the next step boundary, then exit 75.

Slurm's warning signal before a time limit, preemption and `scancel --signal` all arrive
as SIGUSR1 or SIGTERM. The handler only sets a flag: saving inside a signal handler would
run in the middle of a collective. Exit code 75 (EX_TEMPFAIL) tells the batch script that
the checkpoint is saved and the job should be requeued.
"""

from __future__ import annotations

import signal

REQUEUE_EXIT_CODE = 75


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> StopRequest:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


class RequeueExit(SystemExit):
    """Raised after the stop checkpoint is saved; the CLI exits with REQUEUE_EXIT_CODE."""

    def __init__(self) -> None:
        super().__init__(REQUEUE_EXIT_CODE)
