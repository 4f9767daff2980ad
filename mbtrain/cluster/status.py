"""What a run is doing: Slurm's view of its job plus the run directory's own record.

No accounting database is assumed (many clusters, and the local test cluster, have none):
while Slurm still knows the job, `scontrol show job` gives its state, reason, restart count,
nodes and times; once it has forgotten it (MinJobAge), the run directory alone answers:
`slurm/events.jsonl` (written by the batch script: start, requeue, done, failed),
`metrics.jsonl` (training progress) and `checkpoints/latest` (the last complete checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mbtrain.cluster.submit import read_jobs
from mbtrain.errors import MbtrainError

_TAIL_BYTES = 1 << 18  # metrics lines are short: the last 256 KiB hold the latest ones
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


def metrics_summary(run_dir: str | Path) -> dict[str, Any]:
    """Latest training and eval numbers from `<run_dir>/metrics.jsonl`."""
    out: dict[str, Any] = {}
    for rec in _tail_jsonl(Path(run_dir) / "metrics.jsonl"):
        if "val_bpb" in rec:
            out["val_bpb"] = rec["val_bpb"]
            out["val_step"] = rec.get("step")
        if "loss" in rec:
            for key in ("step", "loss", "bpb", "bytes_per_s", "eta_s"):
                if key in rec:
                    out[key] = rec[key]
    return out


def latest_checkpoint(run_dir: str | Path) -> str | None:
    """The checkpoint a restart would resume from (the newest complete one), or None."""
    from mbtrain.checkpoint.layout import latest_complete

    try:
        return latest_complete(Path(run_dir) / "checkpoints")
    except OSError:  # unreadable, or pruned while we look: status must still answer
        return None


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


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Everything `mbtrain status` shows about one run, as a dict.

    Keys: run_dir, name, job_id, source ("slurm", "run_dir" or "none"), state, reason,
    restarts, nodes, elapsed, time_limit, exit_code, and from the run directory step, loss,
    bpb, val_bpb, bytes_per_s, eta_s, checkpoint (those that are known).
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
    status.update(metrics_summary(run_dir))
    status["checkpoint"] = latest_checkpoint(run_dir)
    return status


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def format_status(status: dict[str, Any]) -> str:
    """A few readable lines for one `run_status` dict."""
    lines = [f"{status['name']}  ({status['run_dir']})"]
    if status.get("job_id") is None:
        lines.append("  job:        never submitted")
    else:
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
    if "step" in status:
        rate = status.get("bytes_per_s")
        lines.append(
            f"  step:       {status['step']}   loss {_num(status.get('loss'), '.4f')}   "
            f"bpb {_num(status.get('bpb'), '.4f')}   val bpb {_num(status.get('val_bpb'), '.4f')}"
        )
        lines.append(
            f"  speed:      {_num(rate / 1e6 if isinstance(rate, (int, float)) else None, '.3f')} MB/s   "
            f"ETA {_duration(status.get('eta_s'))}"
        )
    else:
        lines.append("  step:       no metrics yet")
    lines.append(f"  checkpoint: {status.get('checkpoint') or 'none'}")
    return "\n".join(lines)


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


def list_runs(root: str | Path, limit: int = 20) -> list[Path]:
    """Run directories under `root` (those with slurm/jobs.jsonl or metrics.jsonl), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for child in root.iterdir():
        marks = [child / "slurm" / "jobs.jsonl", child / "metrics.jsonl"]
        mtimes = [m.stat().st_mtime for m in marks if m.is_file()]
        if mtimes:
            runs.append((max(mtimes), child))
    runs.sort(key=lambda t: t[0], reverse=True)
    return [p for _, p in runs[:limit]]
