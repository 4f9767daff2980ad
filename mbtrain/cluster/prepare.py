"""`mbtrain prepare --slurm`: one data preparation as a Slurm array plus a merge job.

The resolved `PrepareConfig` is written once to `<slurm_dir>/prepare.yaml` (a corpus file,
so every array task reads exactly the same inputs and settings, whatever the working
directory or the shell that submitted it), then:

    array  (--array=0-(N-1))   mbtrain prepare --corpus prepare.yaml --worker-index i --worker-count N
    merge  (afterok:<array>)   mbtrain prepare --merge --out OUT

Each task writes only its own parts and skips parts already finished, so resubmitting after
a failed task redoes only the missing parts. The merge runs only if every task succeeded
(`--kill-on-invalid-dep=yes` removes it otherwise). Scripts, logs and `jobs.jsonl` live in
`slurm_dir` (default: `<out>.slurm` next to a local OUT), where `mbtrain status` and
`mbtrain cancel` find them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import yaml

from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.submit import submit_prepare_array
from mbtrain.errors import ConfigError


def default_slurm_dir(out: str) -> Path:
    """`<out>.slurm` next to a local dataset; `runs/prepare-<name>` for object-store outputs."""
    if "://" in out:
        return Path("runs") / f"prepare-{out.rstrip('/').rsplit('/', 1)[-1]}"
    return Path(out.rstrip("/") + ".slurm")


def _absolute(path: str) -> str:
    """`path` (a file, directory or glob) made absolute against this working directory."""
    if "://" in path:
        return path
    return os.path.join(os.getcwd(), os.path.expanduser(path))


def _corpus_yaml(cfg) -> str:
    values = dataclasses.asdict(cfg)
    for key in ("worker_index", "worker_count", "progress"):
        values.pop(key)  # given per task on the command line; no progress bars in job logs
    # The corpus loader expands "{stdlib}" with str.format: keep literal braces literal.
    values["inputs"] = [s.replace("{", "{{").replace("}", "}}") for s in values["inputs"]]
    return yaml.safe_dump(values, sort_keys=False)


def submit_prepare(
    cfg,
    slurm_dir: str | Path | None = None,
    cluster_cfg: ClusterConfig | None = None,
    *,
    python: str | None = None,
    dry_run: bool = False,
) -> tuple[str, str]:
    """Submit `cfg` (a PrepareConfig) as `cfg.worker_count` array tasks plus a merge job.

    Returns (array_id, merge_id); with `dry_run` the two batch scripts and nothing written.
    """
    errors = cfg.validate()
    if errors:
        raise ConfigError("; ".join(errors))
    # The jobs run in slurm_dir: relative paths must mean what they meant here.
    cfg = dataclasses.replace(
        cfg,
        inputs=[_absolute(s) for s in cfg.inputs],
        out=_absolute(cfg.out),
        local_dir=_absolute(cfg.local_dir) if cfg.local_dir else cfg.local_dir,
    )
    slurm_dir = Path(slurm_dir or default_slurm_dir(cfg.out)).absolute()
    cluster_cfg = cluster_cfg or ClusterConfig(cpus_per_task=cfg.workers)
    python = python or cluster_cfg.python or sys.executable
    corpus = slurm_dir / "prepare.yaml"
    worker = [python, "-m", "mbtrain.cli.main", "prepare", "--corpus", str(corpus)]
    merge = [python, "-m", "mbtrain.cli.main", "prepare", "--merge", "--out", cfg.out]
    if not dry_run:
        slurm_dir.mkdir(parents=True, exist_ok=True)
        corpus.write_text(_corpus_yaml(cfg))
    return submit_prepare_array(
        slurm_dir,
        cluster_cfg,
        [*worker, "--no-progress"],
        merge,
        workers=cfg.worker_count,
        dry_run=dry_run,
        job_name=f"prepare-{Path(cfg.out.rstrip('/')).name or 'data'}",
    )
