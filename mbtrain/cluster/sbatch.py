"""Render sbatch scripts from the templates shipped in the package (`mbtrain/resources/cluster/`,
package data, so a plain `pip install` has them).

Two kinds of text end up in a batch script and each gets its own rule:

* `#SBATCH` lines are read by sbatch, not by a shell: quoting does not exist there, so each
  value is checked (`sbatch_value_problem`) and refused with a `ConfigError` if it holds
  whitespace, quotes, '%' or newlines. The job name is the one value made safe instead of
  refused, because it is cosmetic and run names are free text. No path goes there at all:
  sbatch runs in the run directory and the output paths are relative to it, so any run
  directory works.
* Everything after them is bash: every value (paths, run name, command arguments,
  environment values) goes through `shlex.quote`, so a run named `$(touch /tmp/pwned)` stays
  a string. Only `cluster.setup` lines are written verbatim, since they are shell code by
  definition and come from the user's own config.

The templates use `@@{name}` placeholders (a `string.Template` with delimiter "@@") so bash's
own `$VAR` and `${VAR:-x}` need no escaping in the template.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from mbtrain.cluster.config import ClusterConfig, sbatch_value_problem
from mbtrain.errors import ConfigError

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "resources" / "cluster"
REQUEUE_EXIT_CODE = 75
"""Exit code of a rank that saved a checkpoint on request and wants the job requeued."""
STEP_EXIT_WAIT_S = 120
"""Seconds srun gives the other ranks after the first one exits (time for rank 0 to finish
an export or a wandb upload; a crashed rank's peers are ended after this)."""


class _Template(string.Template):
    delimiter = "@@"


def _load_template(name: str, template_dir: Path | None) -> _Template:
    path = (template_dir or TEMPLATE_DIR) / name
    try:
        return _Template(path.read_text())
    except OSError as e:
        raise ConfigError(f"sbatch template {path} cannot be read: {e.strerror}") from e


def safe_job_name(name: str) -> str:
    """`name` with everything but [A-Za-z0-9_.+-] replaced by '_' (at most 100 chars)."""
    return re.sub(r"[^A-Za-z0-9_.+\-]", "_", name)[:100] or "mbtrain"


def sbatch_lines(options: Sequence[str]) -> str:
    """`#SBATCH` lines for options such as "--partition=gpu"; each must be one line."""
    lines = []
    for opt in options:
        if any(c in opt for c in "\r\n\0"):
            raise ConfigError(f"sbatch option {opt!r} must be on one line")
        lines.append(f"#SBATCH {opt}")
    return "\n".join(lines)


def resource_options(cfg: ClusterConfig) -> list[str]:
    """The optional `#SBATCH` options of `cfg`: partition, account, qos, constraint, extras."""
    opts = []
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(cfg, name)
        if value:
            problem = sbatch_value_problem(value)
            if problem:
                raise ConfigError(f"cluster.{name}: {problem}")
            opts.append(f"--{name}={value}")
    opts.extend(cfg.sbatch_extra)
    return opts


def env_lines(env: Mapping[str, str], code_dir: str | Path | None = None) -> str:
    """`export K=V` lines with quoted values; `code_dir` goes first on PYTHONPATH."""
    lines = []
    if code_dir is not None:
        lines.append(f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}")
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"environment variable name {key!r} is not a valid identifier")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return "\n".join(lines)


def launch_command(cfg: ClusterConfig, python: str, command: Sequence[str]) -> str:
    """The quoted `srun ...` line that starts one `command` per rank through the env mapping.

    srun gets the task geometry explicitly: since Slurm 22.05 it no longer inherits
    --cpus-per-task from the batch allocation.
    """
    argv = [
        "srun",
        f"--nodes={cfg.nodes}",
        f"--ntasks-per-node={cfg.tasks_per_node}",
        f"--cpus-per-task={cfg.cpus_per_task}",
        # One rank dying must not leave the others hanging in a collective: srun ends the
        # remaining tasks this long after the first one exits. Not --kill-on-bad-exit: it
        # counts exit 75 as bad, so the first rank to exit 75 would get the others killed
        # while they exit (step rc 143 instead of 75: no requeue; seen with 2 nodes).
        f"--wait={STEP_EXIT_WAIT_S}",
        python,
        "-m",
        "mbtrain.cluster.env",
        "--",
        *command,
    ]
    return shlex.join(argv)


def render_train_script(
    cfg: ClusterConfig,
    run_dir: str | Path,
    command: Sequence[str],
    *,
    python: str,
    job_name: str,
    code_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    template_dir: Path | None = None,
) -> str:
    """The batch script of a training job: resources, signal forwarding, requeue on exit 75.

    `command` is the argv each rank runs (e.g. `[python, "-m", "mbtrain.cli.main", "train",
    "<run_dir>/config.yaml"]`); `python` runs the env mapping in front of it.
    """
    errors = cfg.validate()
    if errors:
        raise ConfigError("; ".join(errors))
    if not command:
        raise ConfigError("the training command is empty")
    run_dir = Path(run_dir).absolute()
    log_dir = run_dir / "slurm"
    options = list(resource_options(cfg))
    if cfg.gpus_per_node:
        options.insert(0, f"--gpus-per-node={cfg.gpus_per_node}")
    all_env = {
        "MBTRAIN_RUN_DIR": str(run_dir),
        "MBTRAIN_RUN_NAME": job_name,
        "SRUN_CPUS_PER_TASK": str(cfg.cpus_per_task),
        **(env or {}),
    }
    return _load_template("train.sbatch", template_dir).substitute(
        job_name=safe_job_name(job_name),
        nodes=cfg.nodes,
        tasks_per_node=cfg.tasks_per_node,
        cpus_per_task=cfg.cpus_per_task,
        time=cfg.time_limit,
        signal=f"B:USR1@{cfg.signal_seconds}",
        sbatch_lines=sbatch_lines(options),
        setup_lines="\n".join(cfg.setup),
        env_lines=env_lines(all_env, code_dir),
        run_dir_q=shlex.quote(str(run_dir)),
        log_dir_q=shlex.quote(str(log_dir)),
        max_restarts=int(cfg.max_restarts),
        ntasks=cfg.world_size,
        launch=launch_command(cfg, python, command),
    )


def render_prepare_script(
    cfg: ClusterConfig,
    command_line: str,
    *,
    job_name: str,
    log_pattern: str,
    extra_options: Sequence[str] = (),
    code_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    template_dir: Path | None = None,
) -> str:
    """The batch script of one data-preparation job (an array of workers, or the merge).

    `command_line` is already a shell line: the caller quotes the argv with `shlex.join` and
    may append unquoted Slurm variables such as `"$SLURM_ARRAY_TASK_ID"`.
    `log_pattern` names the output files under slurm/ (relative to the directory sbatch runs
    in), e.g. "prepare-%A_%a" for array tasks.
    """
    errors = [e for e in cfg.validate() if not e.startswith("cluster.tasks_per_node")]
    if errors:
        raise ConfigError("; ".join(errors))
    if not re.fullmatch(r"[A-Za-z0-9_.%\-]+", log_pattern):
        raise ConfigError(f"log pattern {log_pattern!r} is not a plain file name")
    return _load_template("prepare.sbatch", template_dir).substitute(
        job_name=safe_job_name(job_name),
        cpus_per_task=cfg.cpus_per_task,
        time=cfg.time_limit,
        log_pattern=log_pattern,
        sbatch_lines=sbatch_lines([*resource_options(cfg), *extra_options]),
        setup_lines="\n".join(cfg.setup),
        env_lines=env_lines(dict(env or {}), code_dir),
        command=command_line,
    )
