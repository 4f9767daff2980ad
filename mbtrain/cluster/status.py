"""A run's Slurm side: the state of its job, its restarts, and cancelling it.

No accounting database is assumed (many clusters, and the local test cluster, have none):
while Slurm still knows the job, `scontrol show job` gives its state, reason, restart count,
nodes and times; once it has forgotten it (MinJobAge), the run directory's Slurm record
answers: `slurm/jobs.jsonl` (the jobs submitted) and `slurm/events.jsonl` (written by the
batch script: start, requeue, done, failed). What the trainer itself recorded (metrics,
checkpoints) is not read here: `mbtrain status` (`mbtrain.cli.cluster`) adds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mbtrain.cluster.submit import read_jobs
from mbtrain.errors import MbtrainError

_TAIL_BYTES = 1 << 18  # event lines are short: the last 256 KiB hold the latest ones
SCONTROL_TIMEOUT_S = 30.0
"""How long scontrol may take to answer; a busy controller answers in seconds."""
_UNKNOWN_JOB = "Invalid job id specified"  # scontrol's answer for a job it does not know


class SlurmUnavailable(MbtrainError):
    """Slurm could not be asked: scontrol missing, failing or not answering."""


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    if not shutil.which(argv[0]):
        return None
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`Key=Value Key2=Value2 ...` (one `scontrol -o` record) -> dict."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)", line))


def query_job(job_id: str) -> dict[str, str] | None:
    """Slurm's record of `job_id` (first record for arrays), or None when Slurm answers that it
    does not know it (ended and forgotten, or never there).

    Anything else raises SlurmUnavailable: a missing scontrol, an unreachable controller or a
    timeout says nothing about the job, and callers that act on "no job" must not guess.
    """
    argv = ["scontrol", "show", "job", "-o", str(job_id)]
    if not shutil.which(argv[0]):
        raise SlurmUnavailable("scontrol not found on PATH")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(
            f"`{' '.join(argv)}` did not answer within {SCONTROL_TIMEOUT_S:g} s"
        ) from None
    except OSError as e:
        raise SlurmUnavailable(f"`{' '.join(argv)}` could not run: {e}") from None
    if proc.returncode != 0:
        if _UNKNOWN_JOB in proc.stderr:
            return None
        said = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise SlurmUnavailable(
            f"`{' '.join(argv)}` failed (exit status {proc.returncode}){f': {said}' if said else ''}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise SlurmUnavailable(f"`{' '.join(argv)}` succeeded but printed no record")
    return parse_scontrol_record(lines[0])


def slurm_job(job_id: str) -> dict[str, str] | None:
    """Slurm's record of `job_id`, or None if Slurm does not know it or cannot be asked (for
    display, where the run directory answers instead; `query_job` tells the two apart)."""
    try:
        return query_job(job_id)
    except SlurmUnavailable:
        return None


def _tail_jsonl(path: Path) -> list[dict]:
    """The JSON objects of the last ~256 KiB of a JSONL file (torn lines skipped)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            f.seek(start)
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line is probably cut
    out = []
    for raw in lines:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _last_event(run_dir: Path, job_id: str | None) -> dict | None:
    events = [
        e
        for e in _tail_jsonl(run_dir / "slurm" / "events.jsonl")
        if job_id is None or e.get("job_id") == job_id
    ]
    return events[-1] if events else None


_EVENT_STATE = {
    "done": "COMPLETED",
    "failed": "FAILED",
    "stopped": "STOPPED",
    "requeue": "REQUEUED",
    "requeue-hang": "REQUEUED (hung step)",
    "start": "RUNNING?",
}


def job_status(run_dir: str | Path) -> dict[str, Any]:
    """Slurm's side of one run, as a dict.

    Keys: run_dir, name, job_id (None: never submitted), source ("slurm" while Slurm knows
    the job, "run_dir" once it forgot it, "none"), and those that are known of state, reason,
    restarts, nodes, elapsed, time_limit, exit_code.
    """
    run_dir = Path(run_dir).absolute()
    status: dict[str, Any] = {"run_dir": str(run_dir), "name": run_dir.name, "source": "none"}
    jobs = [j for j in read_jobs(run_dir) if j.get("kind", "train") == "train"] or read_jobs(
        run_dir
    )
    job_id = jobs[-1]["job_id"] if jobs else None
    status["job_id"] = job_id
    record = slurm_job(job_id) if job_id else None
    if record:
        status.update(
            source="slurm",
            state=record.get("JobState"),
            reason=record.get("Reason"),
            restarts=int(record.get("Restarts", "0") or 0),
            nodes=record.get("NodeList") or None,
            elapsed=record.get("RunTime"),
            time_limit=record.get("TimeLimit"),
            exit_code=record.get("ExitCode"),
        )
        if status["nodes"] == "(null)":
            status["nodes"] = None
    elif job_id:
        event = _last_event(run_dir, job_id)
        status["source"] = "run_dir"
        if event:
            status.update(
                state=_EVENT_STATE.get(event.get("action"), "UNKNOWN"),
                restarts=event.get("restart"),
                exit_code=event.get("rc"),
                reason="job no longer known to Slurm",
            )
        else:
            status.update(
                state="UNKNOWN", reason="job no longer known to Slurm and no events recorded"
            )
    return status


def format_job(status: dict[str, Any]) -> list[str]:
    """The lines of `mbtrain status` about the job of one `job_status` dict: the run's name,
    then its job's state (and restarts, nodes, time and exit code when Slurm knows them)."""
    lines = [f"{status['name']}  ({status['run_dir']})"]
    if status.get("job_id") is None:
        lines.append("  job:        never submitted")
        return lines
    state = status.get("state") or "?"
    reason = status.get("reason")
    if reason and reason not in ("None", "(null)"):
        state += f" ({reason})"
    lines.append(f"  job:        {status['job_id']}  {state}")
    if status.get("source") == "slurm":
        lines.append(
            f"  restarts:   {status.get('restarts', 0)}   nodes: {status.get('nodes') or '-'}   "
            f"time: {status.get('elapsed') or '-'} / {status.get('time_limit') or '-'}"
        )
    if status.get("exit_code") not in (None, "0:0", 0):
        lines.append(f"  exit code:  {status['exit_code']}")
    return lines


def cancel(run_dir: str | Path) -> list[str]:
    """scancel every job recorded for the run (a train job, or prepare array + merge).

    Returns the ids Slurm still knew; jobs that already ended are skipped.
    """
    ids = list(dict.fromkeys(str(j["job_id"]) for j in read_jobs(run_dir)))
    if not ids:
        raise MbtrainError(f"{run_dir}: no job recorded in slurm/jobs.jsonl")
    # query_job, not slurm_job: a Slurm that cannot be asked is an error, not "nothing to cancel".
    live = [i for i in ids if (rec := query_job(i)) and not _finished(rec.get("JobState"))]
    if not live:
        return []
    proc = _run(["scancel", *live])
    if proc is None:
        raise MbtrainError("scancel not found: run on a Slurm login node")
    if proc.returncode != 0:
        raise MbtrainError(f"scancel {' '.join(live)} failed: {proc.stderr.strip()}")
    return live


def active_jobs(run_dir: str | Path) -> list[tuple[str, str]]:
    """(job id, Slurm state) of the run's training jobs that Slurm still has pending, running
    or requeued (anything not finished); jobs Slurm no longer knows are over.

    Raises SlurmUnavailable when Slurm cannot be asked about a recorded job; a run with no
    recorded job asks nothing (a first submit, or a dry run away from the cluster)."""
    out = []
    for job_id in dict.fromkeys(
        str(j["job_id"]) for j in read_jobs(run_dir) if j.get("kind", "train") == "train"
    ):
        rec = query_job(job_id)
        if rec and not _finished(rec.get("JobState")):
            out.append((job_id, rec.get("JobState") or "?"))
    return out


def _finished(state: str | None) -> bool:
    return state in {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
