"""Stop requests: checkpoint at the next step boundary, then exit.

Slurm's warning signal before a time limit, preemption and `scancel --signal` arrive as
SIGUSR1 or SIGTERM; a user's Ctrl-C as SIGINT. The handler only sets a flag: saving inside a
signal handler would run in the middle of a collective. At the end of the step every rank
agrees on the flag, saves a checkpoint of that step, prints the command that resumes, and
exits: 75 (EX_TEMPFAIL) after SIGUSR1/SIGTERM, which tells the batch script to requeue; 130
after Ctrl-C, as a shell expects of an interrupted command.

A second Ctrl-C aborts at once (SIGINT's default action: no checkpoint, no clean-up), for a
save that takes too long or a rank stuck in a collective. Under torchrun the launcher itself
forwards its SIGINT to the workers, right after the terminal's: there a repeated SIGINT is
the same request, and torchrun ends the workers after its own grace period (30 s).
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys

REQUEUE_EXIT_CODE = 75
INTERRUPT_EXIT_CODE = 130


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()
        self._quiet = False

    def install(self) -> StopRequest:
        """SIGUSR1 and SIGTERM (the scheduler's requests), from start-up on."""
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        # At interpreter exit Python puts SIG_DFL back for every signal with a Python handler,
        # and SIGUSR1's default action kills: a stop request repeated while the process exits
        # (the batch script repeats it until the step ends; Slurm's warning may come just as
        # training ends) would turn exit 75 or 0 into "killed by signal 10". Once the process
        # is exiting, a stop request has nothing left to stop: ignore it.
        atexit.register(_ignore_usr1)
        return self

    def install_interrupt(self, quiet: bool = False) -> StopRequest:
        """Ctrl-C as a stop request, once training steps run (before, there is nothing to
        save, and Ctrl-C interrupts start-up at once). `quiet`: no message (other ranks)."""
        self._quiet = quiet
        signal.signal(signal.SIGINT, self._interrupt)
        return self

    def uninstall_interrupt(self) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def _interrupt(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: its parent decides
            return
        if self.signum == signal.SIGINT and "TORCHELASTIC_RUN_ID" not in os.environ:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: abort now
            return
        if self.signum is None and not self._quiet:
            sys.stderr.write(
                "\n[mbtrain] Ctrl-C: saving a checkpoint at the end of this step, then "
                "stopping (Ctrl-C again to abort at once, without saving)\n"
            )
            sys.stderr.flush()
        self.signum = signum

    def describe(self) -> str:
        """The signal, as a user knows it (Ctrl-C, SIGTERM, SIGUSR1)."""
        if self.signum == signal.SIGINT:
            return "Ctrl-C"
        return signal.Signals(self.signum).name if self.signum else "no signal"

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return INTERRUPT_EXIT_CODE if self.signum == signal.SIGINT else REQUEUE_EXIT_CODE


def _ignore_usr1() -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class StopExit(SystemExit):
    """Raised after the stop checkpoint is saved; the CLI exits with its code (75: requeue,
    130: interrupted)."""

    def __init__(self, code: int = REQUEUE_EXIT_CODE) -> None:
        super().__init__(code)


def resume_hint(run_dir, world_size: int, exit_code: int) -> str:
    """How to continue after a stop, as one sentence with the exact command."""
    command = f"mbtrain train {shlex.quote(str(run_dir))}/config.yaml"
    if exit_code == REQUEUE_EXIT_CODE and os.environ.get("SLURM_JOB_ID"):
        return f"the batch script requeues the job (or run: {command})"
    if world_size > 1:
        return f"resume with: {command} (under the same launcher, {world_size} processes)"
    return f"resume with: {command}"
