"""Stop requests from the scheduler: checkpoint at the next step boundary, then exit 75.

Slurm's warning signal before a time limit, preemption and `scancel --signal` all arrive
as SIGUSR1 or SIGTERM. The handler only sets a flag: saving inside a signal handler would
run in the middle of a collective. Exit code 75 (EX_TEMPFAIL) tells the batch script that
the checkpoint is saved and the job should be requeued.
"""

from __future__ import annotations

import atexit
import signal

REQUEUE_EXIT_CODE = 75


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> StopRequest:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        # At interpreter exit Python puts SIG_DFL back for every signal with a Python handler,
        # and SIGUSR1's default action kills: a stop request repeated while the process exits
        # (the batch script repeats it until the step ends; Slurm's warning may come just as
        # training ends) would turn exit 75 or 0 into "killed by signal 10". Once the process
        # is exiting, a stop request has nothing left to stop: ignore it.
        atexit.register(_ignore_usr1)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


def _ignore_usr1() -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class RequeueExit(SystemExit):
    """Raised after the stop checkpoint is saved; the CLI exits with REQUEUE_EXIT_CODE."""

    def __init__(self) -> None:
        super().__init__(REQUEUE_EXIT_CODE)
