"""Submit training and data-preparation jobs to Slurm.

A run directory is self-contained: `submit` snapshots the `mbtrain` package (and
pyproject.toml) into `<run_dir>/code/` and puts it first on PYTHONPATH in the batch script,
so a job that is requeued hours later, after the working tree has moved on, resumes with
the code it started with. The rendered script is kept at `<run_dir>/slurm/train.sbatch`
and every submitted job id is appended to `<run_dir>/slurm/jobs.jsonl`, which is how
`mbtrain status` and `mbtrain cancel` find the job again without an accounting database.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.sbatch import render_prepare_script, render_train_script
from mbtrain.errors import ConfigError, MbtrainError

JOBS_FILE = "jobs.jsonl"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The `mbtrain` package this module belongs to: what `snapshot_code` copies (found from this
file's own path: the cluster package imports nothing from the package above it)."""


class SubmitError(MbtrainError):
    """sbatch is missing or refused the job."""


def train_command(run_dir: str | Path, python: str) -> list[str]:
    """The argv each rank runs for `mbtrain train` on the run's resolved config."""
    return [
        python,
        "-m",
        "mbtrain.cli.main",
        "train",
        str(Path(run_dir).absolute() / "config.yaml"),
    ]


def snapshot_code(run_dir: str | Path) -> Path:
    """Copy the `mbtrain` package (and pyproject.toml) to `<run_dir>/code/`; return that dir.

    The copy is built next to the old one and swapped in, so a failed copy never leaves a
    half snapshot behind.
    """
    code = Path(run_dir).absolute() / "code"
    tmp = code.with_name("code.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(
        PACKAGE_DIR, tmp / "mbtrain", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if pyproject.is_file():
        shutil.copy2(pyproject, tmp / "pyproject.toml")
    if code.exists():
        shutil.rmtree(code)
    tmp.rename(code)
    return code


def require_sbatch() -> None:
    """Raise SubmitError unless sbatch is on PATH: called before anything is written into
    the run directory, so a submit that cannot happen leaves no config, code or script."""
    if not shutil.which("sbatch"):
        raise SubmitError(
            "sbatch not found on PATH: run on a Slurm login node (or start "
            "cluster/slurm_up.sh); nothing was written"
        )


def _sbatch(script: Path, args: Sequence[str] = (), cwd: Path | None = None) -> str:
    """Run `sbatch --parsable ARGS SCRIPT`; return the job id."""
    require_sbatch()
    argv = ["sbatch", "--parsable", *args, str(script)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
    except subprocess.TimeoutExpired:
        raise SubmitError(
            f"sbatch did not answer within 60 s for {script}: the job may or may not be "
            "queued; look with squeue before submitting again"
        ) from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().replace("\n", " ")
        raise SubmitError(f"sbatch refused {script}: {msg}")
    # --parsable prints "jobid" or "jobid;cluster".
    return proc.stdout.strip().split(";")[0]


def record_job(run_dir: str | Path, job_id: str, kind: str, **fields: object) -> None:
    """Append one submitted job to `<run_dir>/slurm/jobs.jsonl`."""
    log_dir = Path(run_dir) / "slurm"
    log_dir.mkdir(parents=True, exist_ok=True)
    entry = {
        "job_id": job_id,
        "kind": kind,
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
    }
    with open(log_dir / JOBS_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_jobs(run_dir: str | Path) -> list[dict]:
    """The jobs recorded for a run, oldest first (empty if none)."""
    path = Path(run_dir) / "slurm" / JOBS_FILE
    if not path.is_file():
        return []
    jobs = []
    for line in path.read_text().splitlines():
        try:
            jobs.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return jobs


def _check(cfg: ClusterConfig) -> None:
    errors = cfg.validate()
    if errors:
        raise ConfigError("invalid cluster config:\n  " + "\n  ".join(errors))


def submit(
    run_dir: str | Path,
    cluster_cfg: ClusterConfig,
    command: Sequence[str] | None = None,
    dry_run: bool = False,
    *,
    job_name: str | None = None,
    env: Mapping[str, str] | None = None,
    sbatch_args: Sequence[str] = (),
) -> str:
    """Submit the training job of `run_dir`; return its job id, or the script if `dry_run`.

    `command` is the argv every rank runs; by default `mbtrain train <run_dir>/config.yaml`
    with `cluster.python` (or this interpreter). A dry run validates and renders but writes
    nothing and submits nothing.
    """
    _check(cluster_cfg)
    run_dir = Path(run_dir).absolute()
    python = cluster_cfg.python or sys.executable
    command = list(command) if command is not None else train_command(run_dir, python)
    name = job_name or run_dir.name
    code_dir = run_dir / "code"
    script = render_train_script(
        cluster_cfg, run_dir, command, python=python, job_name=name, code_dir=code_dir, env=env
    )
    if dry_run:
        return script
    require_sbatch()
    (run_dir / "slurm").mkdir(parents=True, exist_ok=True)
    snapshot_code(run_dir)
    path = run_dir / "slurm" / "train.sbatch"
    path.write_text(script)
    job_id = _sbatch(path, sbatch_args, cwd=run_dir)
    record_job(run_dir, job_id, "train", script=str(path), command=command)
    return job_id


def submit_prepare_array(
    run_dir: str | Path,
    cluster_cfg: ClusterConfig,
    worker_command: Sequence[str],
    merge_command: Sequence[str],
    workers: int,
    dry_run: bool = False,
    *,
    job_name: str = "prepare",
    env: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Submit `workers` array tasks then a merge job that runs once all of them succeeded.

    Task i runs `worker_command --worker-index i --worker-count workers` (i from
    $SLURM_ARRAY_TASK_ID); the merge runs `merge_command` with `--dependency=afterok:<array>`.
    Logs and jobs.jsonl go under `<run_dir>/slurm/`. Returns (array_id, merge_id); with
    `dry_run`, the two scripts instead.
    """
    _check(cluster_cfg)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: must be an integer >= 1, got {workers!r}")
    run_dir = Path(run_dir).absolute()
    log_dir = run_dir / "slurm"
    code_dir = run_dir / "code"
    worker_line = f'{shlex.join(worker_command)} --worker-index "$SLURM_ARRAY_TASK_ID" --worker-count {workers}'
    array_script = render_prepare_script(
        cluster_cfg,
        worker_line,
        job_name=f"{job_name}-worker",
        log_pattern="prepare-%A_%a",
        extra_options=[f"--array=0-{workers - 1}"],
        code_dir=code_dir,
        env=env,
    )
    merge_script = render_prepare_script(
        cluster_cfg,
        shlex.join(merge_command),
        job_name=f"{job_name}-merge",
        log_pattern="merge-%j",
        code_dir=code_dir,
        env=env,
    )
    if dry_run:
        return array_script, merge_script
    require_sbatch()
    log_dir.mkdir(parents=True, exist_ok=True)
    snapshot_code(run_dir)
    array_path = log_dir / "prepare.sbatch"
    merge_path = log_dir / "merge.sbatch"
    array_path.write_text(array_script)
    merge_path.write_text(merge_script)
    array_id = _sbatch(array_path, cwd=run_dir)
    record_job(run_dir, array_id, "prepare", script=str(array_path), workers=workers)
    # afterok on an array id waits for every task and fails the merge if any task failed.
    merge_id = _sbatch(
        merge_path, [f"--dependency=afterok:{array_id}", "--kill-on-invalid-dep=yes"], cwd=run_dir
    )
    record_job(run_dir, merge_id, "merge", script=str(merge_path), after=array_id)
    return array_id, merge_id
