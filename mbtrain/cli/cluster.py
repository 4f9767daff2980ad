"""`mbtrain submit | status | cancel`: thin argument parsing over the cluster library.

`add_parsers(subparsers)` registers the three commands on the main CLI's subparsers; each
sets `func`, a function `func(args) -> int` returning the exit code, which the main CLI calls.

`status` is composed here, above both of the rooms it reads: Slurm's side of a run
(`mbtrain.cluster.status`: the job's state and restarts) and the run's own record (the latest
complete checkpoint, `mbtrain.checkpoint.paths`; the metrics and the last evaluation sample,
`mbtrain.monitor`; the trainer holding the run directory, `mbtrain.train.lock`). Cluster and checkpoint are peers
on one floor and do not import each other.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import yaml

from mbtrain.checkpoint.paths import latest_complete
from mbtrain.cluster.status import SlurmUnavailable, active_jobs, cancel, format_job, job_status
from mbtrain.cluster.submit import SubmitError, require_sbatch, submit
from mbtrain.data.splits import check_data
from mbtrain.monitor.console import human_bytes
from mbtrain.monitor.metrics import read_last_metrics
from mbtrain.monitor.samples import one_line, read_last_sample
from mbtrain.train.lock import run_dir_in_use
from mbtrain.train.run_config import check_layout, load_config, save_config, with_absolute_paths


def _cmd_submit(args: argparse.Namespace) -> int:
    # The job starts in its run directory: the paths of config.yaml must not depend on the
    # directory they are read from, so relative ones are made absolute against this shell's.
    cfg = with_absolute_paths(load_config(args.recipe, args.overrides), Path.cwd())
    run_dir = Path(cfg.run.dir)
    # Everything that can refuse runs before the first write into the run directory, and
    # before any allocation: the layout (as `train --dry-run` checks it, for the job's
    # world) and the datasets, as the trainer would check them minutes later.
    check_layout(cfg, cfg.cluster.world_size)
    check_data(cfg.data, cfg.model.seq_len)
    if not args.dry_run:
        require_sbatch()
    if not args.force:
        _refuse_if_busy(run_dir)
    if args.dry_run:
        script = submit(run_dir, cfg.cluster, None, dry_run=True, job_name=cfg.run.name)
        print(f"# dry run: would write {run_dir / 'config.yaml'} and submit:")
        print(script)
        return 0
    save_config(cfg, run_dir / "config.yaml")
    job_id = submit(run_dir, cfg.cluster, None, job_name=cfg.run.name)
    print(f"submitted job {job_id} for run {cfg.run.name!r} in {run_dir}")
    print(f"  mbtrain status {run_dir}")
    return 0


def _refuse_if_busy(run_dir: Path) -> None:
    """A job of this run still queued or running, or a trainer holding the run directory,
    would have its code/ and config.yaml replaced under it: refuse (``--force`` overrides).

    Fails closed: when Slurm cannot say whether a recorded job is over, a second job could
    start on the same run directory, so that is a refusal too."""
    try:
        jobs = active_jobs(run_dir)
    except SlurmUnavailable as e:
        raise SubmitError(
            f"{run_dir}: cannot ask Slurm whether a job of this run is still queued or "
            f"running ({e}); fix Slurm access (PATH, SLURM_CONF, a login node) or, if no "
            "job of this run can be in Slurm, pass --force"
        ) from None
    if jobs:
        listed = ", ".join(f"{j} ({state})" for j, state in jobs)
        raise SubmitError(
            f"{run_dir}: job {listed} of this run is still in Slurm; submitting again would "
            "replace its code/ and config.yaml under it. Wait, `mbtrain cancel` it, or pass --force"
        )
    holder = run_dir_in_use(run_dir)
    if holder:
        raise SubmitError(
            f"{run_dir}: a trainer is using this run directory ({holder}); wait for it to "
            "end, or pass --force"
        )


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


def _progress(run_dir: Path) -> dict[str, Any]:
    """The latest training and eval numbers of `metrics.jsonl`, and `train.steps` of the
    run's config.yaml as total_steps (None when unreadable)."""
    out: dict[str, Any] = {}
    for row in read_last_metrics(run_dir / "metrics.jsonl"):
        if "val_bpb" in row:
            out["val_bpb"] = row["val_bpb"]
            out["val_step"] = row.get("step")
        if "loss" in row:
            out.update(
                {k: row[k] for k in ("step", "loss", "bpb", "bytes_per_s", "eta_s") if k in row}
            )
    try:
        steps = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {})["train"]["steps"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        steps = None
    out["total_steps"] = steps if isinstance(steps, int) else None
    return out


def _trainer(run_dir: Path) -> str | None:
    """Who holds the run directory's lock (pid, host, Slurm job), or None."""
    try:
        return run_dir_in_use(run_dir)
    except OSError:  # a run directory we may read but not lock (another user's): say nothing
        return None


def _checkpoint(run_dir: Path) -> str | None:
    """The checkpoint a restart would resume from (the newest complete one), or None."""
    try:
        return latest_complete(run_dir / "checkpoints")
    except OSError:  # unreadable, or pruned while we look: status must still answer
        return None


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Everything `mbtrain status` shows about one run, as a dict: `job_status` (Slurm's side),
    then from the run directory step, total_steps, loss, bpb, val_bpb, val_step, bytes_per_s,
    eta_s (those that are known), trainer (the lock holder, or None), checkpoint and sample
    (the last line of samples.jsonl: {"step", "sample", "prompt"}, or None)."""
    status = job_status(run_dir)
    run_dir = Path(status["run_dir"])
    status.update(_progress(run_dir))
    status["trainer"] = _trainer(run_dir)
    status["checkpoint"] = _checkpoint(run_dir)
    status["sample"] = read_last_sample(run_dir / "samples.jsonl")
    return status


SAMPLE_CHARS = 100
"""`status` shows this much of the last sample: a glance, not the text (samples.jsonl)."""


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def format_status(status: dict[str, Any]) -> str:
    """A few readable lines for one `run_status` dict."""
    lines = format_job(status)
    if status.get("trainer"):
        lines.append(f"  trainer:    running ({status['trainer']})")
    elif status.get("job_id") is None:  # a local run: the lock is the only sign of life
        lines.append("  trainer:    not running")
    if "step" in status:
        total = status.get("total_steps")
        rate = status.get("bytes_per_s")
        lines.append(
            f"  step:       {status['step']}{f'/{total}' if total else ''}   "
            f"loss {_num(status.get('loss'), '.4f')}   bpb {_num(status.get('bpb'), '.4f')}   "
            f"val bpb {_num(status.get('val_bpb'), '.4f')}"
        )
        speed = f"{human_bytes(rate)}/s" if isinstance(rate, (int, float)) else "-"
        lines.append(f"  speed:      {speed}   ETA {_duration(status.get('eta_s'))}")
    else:
        lines.append("  step:       no metrics yet")
    lines.append(f"  checkpoint: {status.get('checkpoint') or 'none'}")
    sample = status.get("sample")
    if isinstance(sample, dict) and isinstance(sample.get("sample"), str):
        text = str(sample.get("prompt") or "") + sample["sample"]
        lines.append(f"  sample:     step {sample.get('step')}: {one_line(text, SAMPLE_CHARS)}")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    run_dirs = [Path(p) for p in args.run_dirs] or list_runs(args.root)
    if not run_dirs:
        print(f"no runs under {args.root}")
        return 0
    statuses = [run_status(d) for d in run_dirs]
    if args.json:
        print(json.dumps(statuses if len(statuses) > 1 else statuses[0], indent=2, default=str))
    else:
        print("\n\n".join(format_status(s) for s in statuses))
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    ids = cancel(args.run_dir)
    print(f"cancelled {', '.join(ids)}" if ids else "no running or pending job to cancel")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add `submit`, `status` and `cancel` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "submit",
        help="submit a training run to Slurm",
        description="Check a run (config, layout for the job's world size, datasets) on the "
        "login node, write its config.yaml and submit one sbatch job that runs `mbtrain train` "
        "under srun. The job is requeued when preempted and resumes from its latest checkpoint. "
        "A run whose job is still queued or running is refused.",
        epilog="examples:\n"
        "  mbtrain submit recipes/cpu.yaml data.train=data/c/train data.val=data/c/val\n"
        "  mbtrain submit recipes/long_context_1m.yaml cluster.nodes=2 cluster.gpus_per_node=8\n"
        "  mbtrain submit recipes/cpu.yaml run.name=try cluster.time=02:00:00 --dry-run\n"
        "  mbtrain submit runs/my-run/config.yaml --force     # again, while a job still runs",
    )
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML (or a run's config.yaml)")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=100"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate and print the batch script only"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="submit even while a job of this run is pending or running",
    )
    p.set_defaults(func=_cmd_submit)

    p = subparsers.add_parser(
        "status",
        help="show the state of runs (Slurm job + metrics)",
        description="The state of one or more runs: the Slurm job and its restarts, the "
        "trainer holding the run directory, step/total, loss, validation bpb, speed, ETA, the "
        "checkpoint a restart resumes from and the last generated sample.",
        epilog="examples:\n"
        "  mbtrain status runs/my-run\n"
        "  mbtrain status                       # the 20 most recent runs under runs/\n"
        "  mbtrain status --root /scratch/runs --json",
    )
    p.add_argument(
        "run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (default: recent runs)"
    )
    p.add_argument("--root", default="runs", help="where to look for runs without RUN_DIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_status)

    p = subparsers.add_parser(
        "cancel",
        help="cancel a run's Slurm jobs",
        description="Cancel the queued and running Slurm jobs of a run (scancel). The run "
        "directory and its checkpoints stay: `mbtrain submit` continues it later.",
        epilog="examples:\n  mbtrain cancel runs/my-run",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory")
    p.set_defaults(func=_cmd_cancel)
