"""The Slurm resources of a run: the typed `cluster` section of the run config.

Everything here is checked before `sbatch` is called (habit 6: fail before the cluster is
allocated). Values that end up on `#SBATCH` lines are not parsed by a shell, so they must not
contain whitespace, quotes or newlines; values that reach the shell part of the script are
always quoted by `mbtrain.cluster.sbatch`. `setup` lines are the one exception: they are
shell code on purpose (`module load ...`, `source venv/bin/activate`) and are written verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mbtrain.config.checks import Checks

# Slurm accepts more forms ("60", "1-0"); we accept the two that say what they mean.
_TIME_RE = re.compile(r"^(?:(?P<d>\d+)-)?(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)$")
# A value safe to write after `#SBATCH --opt=`: sbatch splits those lines on whitespace and
# quotes, and treats '%' as a filename pattern.
_SBATCH_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:@+=/\-\[\]|&!()*]+$")


def parse_time(value: str) -> int:
    """Seconds of a Slurm time limit "HH:MM:SS" or "D-HH:MM:SS"; ValueError if malformed.

    Only the exact forms are accepted (no surrounding whitespace): the value is written on an
    `#SBATCH --time=` line, where a newline would end the `#SBATCH` block early."""
    m = _TIME_RE.match(value) if isinstance(value, str) else None
    if not m and isinstance(value, str) and value.isdigit():
        # YAML 1.1 reads an unquoted 12:00:00 as a base-60 number (43200) before we see it.
        n = int(value)
        as_time = f"{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}"
        raise ValueError(
            f"got the number {n}: YAML reads an unquoted {as_time} as {n} (base 60); quote "
            f'it: time: "{as_time}"'
        )
    if not m:
        raise ValueError(f'expected "HH:MM:SS" or "D-HH:MM:SS", got {value!r}')
    d, h, mi, s = (int(m.group(k) or 0) for k in ("d", "h", "m", "s"))
    if mi >= 60 or s >= 60 or (m.group("d") is not None and h >= 24):
        raise ValueError(f"minutes and seconds must be < 60 (hours < 24 with days), got {value!r}")
    seconds = ((d * 24 + h) * 60 + mi) * 60 + s
    if seconds == 0:
        raise ValueError(f"time limit must be positive, got {value!r}")
    return seconds


def sbatch_value_problem(value: str) -> str | None:
    """Why `value` cannot be written on an `#SBATCH` line, or None if it can."""
    if not _SBATCH_VALUE_RE.match(value):
        return (
            f"{value!r} cannot go on an #SBATCH line (allowed: letters, digits and _.,:@+=/-[]|&!()*; "
            "no spaces, quotes, '%' or newlines)"
        )
    return None


@dataclass
class ClusterConfig:
    """Slurm resources and launch policy for `mbtrain submit`."""

    nodes: int = 1
    """Number of nodes (sbatch --nodes)."""
    tasks_per_node: int = 1
    """Processes (ranks) per node; one per GPU on GPU nodes."""
    gpus_per_node: int = 0
    """GPUs per node (sbatch --gpus-per-node); 0 runs on CPU and omits the option."""
    cpus_per_task: int = 1
    """CPU cores per rank (sbatch --cpus-per-task); also each rank's OMP_NUM_THREADS."""
    partition: str = ""
    """Slurm partition; empty uses the cluster's default."""
    account: str = ""
    """Slurm account to charge; empty uses the user's default."""
    qos: str = ""
    """Slurm quality of service; empty uses the default."""
    time: str = "01:00:00"
    """Time limit of one allocation, "HH:MM:SS" or "D-HH:MM:SS"; requeues get it again."""
    constraint: str = ""
    """Node features required (sbatch --constraint), e.g. "a100|h100"; empty for none."""
    sbatch_extra: list[str] = field(default_factory=list)
    """Extra sbatch options, one per entry, e.g. ["--mem=0", "--exclusive"]."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before launch, e.g. ["module load cuda/12.4"]."""
    max_restarts: int = 3
    """How many times a job that saved a checkpoint on request (exit 75) is requeued."""
    signal_seconds: int = 120
    """Seconds before the time limit at which the job is told (SIGUSR1) to checkpoint and stop."""
    python: str = ""
    """Python interpreter on the compute nodes; empty means the one running `mbtrain submit`."""

    def validate(self) -> list[str]:
        """Every problem of this section, as "cluster.<field>: ..." messages."""
        c = Checks("cluster")
        for name in ("nodes", "tasks_per_node", "cpus_per_task"):
            if c.integer(name, getattr(self, name)):
                c.at_least(name, getattr(self, name), 1)
        for name in ("gpus_per_node", "max_restarts"):
            if c.integer(name, getattr(self, name)):
                c.at_least(name, getattr(self, name), 0)
        errors = c.errors
        if (
            isinstance(self.gpus_per_node, int)
            and self.gpus_per_node > 0
            and self.tasks_per_node != self.gpus_per_node
        ):
            errors.append(
                f"cluster.tasks_per_node: must equal cluster.gpus_per_node ({self.gpus_per_node}) "
                f"so that each rank owns one GPU, got {self.tasks_per_node}"
            )
        limit = None
        try:
            limit = parse_time(self.time)
        except ValueError as e:
            errors.append(f"cluster.time: {e}")
        # Slurm stores the warning time in 16 bits.
        if not isinstance(self.signal_seconds, int) or not 1 <= self.signal_seconds <= 65535:
            errors.append(
                f"cluster.signal_seconds: must be an integer in [1, 65535], got {self.signal_seconds!r}"
            )
        elif limit is not None and self.signal_seconds >= limit:
            errors.append(
                f"cluster.signal_seconds: must be shorter than cluster.time ({self.time} = {limit} s), "
                f"got {self.signal_seconds}"
            )
        for name in ("partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value and (problem := sbatch_value_problem(value)):
                errors.append(f"cluster.{name}: {problem}")
        for i, opt in enumerate(self.sbatch_extra):
            if (
                not isinstance(opt, str)
                or not opt.startswith("-")
                or any(c in opt for c in "\r\n\0")
            ):
                errors.append(
                    f"cluster.sbatch_extra[{i}]: must be one option starting with '-' on one line, "
                    f"got {opt!r}"
                )
        for i, line in enumerate(self.setup):
            if not isinstance(line, str) or "\0" in line:
                errors.append(f"cluster.setup[{i}]: must be a string of shell code, got {line!r}")
        if self.python and any(c in self.python for c in "\r\n\0"):
            errors.append(f"cluster.python: must be a path on one line, got {self.python!r}")
        return errors

    @property
    def time_limit(self) -> str:
        """The time limit in Slurm's "D-HH:MM:SS" form, normalised from `time` (validated)."""
        seconds = parse_time(self.time)
        d, rest = divmod(seconds, 86400)
        text = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
        return f"{d}-{text}" if d else text

    @property
    def world_size(self) -> int:
        """Total number of ranks of the job."""
        return self.nodes * self.tasks_per_node
