"""`mbtrain submit | status | cancel`: thin argument parsing over the cluster library.

`add_parsers(subparsers)` registers the three commands on the main CLI's subparsers; each
sets `func`, a function `func(args) -> int` returning the exit code, which the main CLI calls.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mbtrain.cluster.status import (
    SlurmUnavailable,
    active_jobs,
    cancel,
    format_status,
    list_runs,
    run_status,
)
from mbtrain.cluster.submit import SubmitError, require_sbatch, submit
from mbtrain.train.lock import run_dir_in_use


def _cmd_submit(args: argparse.Namespace) -> int:
    # Imported here: the config package composes every component's config, which the
    # status and cancel commands do not need.
    from mbtrain.config import check_layout, load_config, save_config

    cfg = load_config(args.recipe, args.overrides)
    run_dir = Path(cfg.run.dir).absolute()
    # The same layout check as `train --dry-run`, for the job's world: before any allocation.
    check_layout(cfg, cfg.cluster.world_size)
    # Everything that can refuse runs before the first write into the run directory.
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
    p = subparsers.add_parser("submit", help="submit a training run to Slurm")
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument(
        "--dry-run", action="store_true", help="validate and print the batch script only"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="submit even while a job of this run is pending or running",
    )
    p.set_defaults(func=_cmd_submit)

    p = subparsers.add_parser("status", help="show the state of runs (Slurm job + metrics)")
    p.add_argument(
        "run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (default: recent runs)"
    )
    p.add_argument("--root", default="runs", help="where to look for runs without RUN_DIR [runs]")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_status)

    p = subparsers.add_parser("cancel", help="cancel a run's Slurm jobs")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=_cmd_cancel)
