"""Batch-script rendering, quoting, and the script's signal/requeue logic run by real bash.

The rendered script is executed with bash and stand-ins for `srun` (runs the command) and
`scontrol` (records what it was asked), so the trap/forward/requeue path and the quoting are
tested without a cluster; tests/cluster/test_slurm_jobs.py runs the same scripts for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mbtrain.checkpoint.paths import tag_for_step
from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.sbatch import render_train_script, safe_job_name
from mbtrain.cluster.submit import submit, submit_prepare_array
from mbtrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin_trainer.py")
HOSTILE_NAMES = [
    'x"; touch /tmp/pwned-{u}; echo "',
    "$(touch /tmp/pwned-{u})",
    "`touch /tmp/pwned-{u}`",
    "a'b\nc; touch /tmp/pwned-{u}",
]


def sbatch_options(script: str) -> list[str]:
    return [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_render_options():
    cfg = ClusterConfig(
        nodes=2,
        tasks_per_node=4,
        gpus_per_node=4,
        cpus_per_task=8,
        partition="gpu",
        account="proj",
        qos="high",
        time="1-00:00:00",
        constraint="a100|h100",
        sbatch_extra=["--mem=0", "--exclusive"],
        signal_seconds=300,
        max_restarts=5,
        setup=["module load cuda/12.4"],
    )
    script = render_train_script(
        cfg, "/runs/r1", ["python", "-m", "x"], python="/usr/bin/python3", job_name="my run"
    )
    opts = sbatch_options(script)
    for expected in [
        "--job-name=my_run",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--account=proj",
        "--qos=high",
        "--time=1-00:00:00",
        "--constraint=a100|h100",
        "--mem=0",
        "--exclusive",
        "--open-mode=append",
        "--signal=B:USR1@300",
        "--requeue",
        "--output=slurm/slurm-%j.out",
        "--error=slurm/slurm-%j.err",
    ]:
        assert expected in opts, (expected, opts)
    assert "module load cuda/12.4" in script
    assert "max_restarts=5" in script
    assert "srun --nodes=2 --ntasks-per-node=4 --cpus-per-task=8" in script
    # #SBATCH lines must all come before the first command, or sbatch ignores them.
    first_cmd = next(
        i for i, line in enumerate(script.splitlines()) if line and not line.startswith("#")
    )
    last_opt = max(i for i, line in enumerate(script.splitlines()) if line.startswith("#SBATCH"))
    assert last_opt < first_cmd


def test_cpu_job_has_no_gpu_option():
    script = render_train_script(ClusterConfig(), "/r", ["true"], python="python", job_name="r")
    assert not any(o.startswith("--gpus") for o in sbatch_options(script))


def test_invalid_config_refused_before_rendering():
    with pytest.raises(ConfigError, match=r"cluster\.partition"):
        render_train_script(
            ClusterConfig(partition="a\n#SBATCH --x"), "/r", ["true"], python="p", job_name="r"
        )
    with pytest.raises(ConfigError, match=r"cluster\.time"):
        submit("/tmp/r", ClusterConfig(time="forever"), ["true"], dry_run=True)


def test_safe_job_name():
    assert safe_job_name('x"; touch /tmp/pwned; echo "') == "x___touch__tmp_pwned__echo__"
    assert safe_job_name("") == "mbtrain"


# --- the rendered script, run by bash with a fake srun and scontrol --------------------------


@pytest.fixture
def fake_slurm(tmp_path):
    """PATH with `srun` (drops its options, execs the command) and `scontrol` (logs args).

    The task starts with USR1 at its default action, as slurmstepd starts real tasks (the
    batch script starts srun with USR1 ignored), so a USR1 that reaches a task before
    mbtrain.cluster.env ignores it kills the task, as on a cluster."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "srun").write_text(
        f"#!{sys.executable}\n"
        "import os, signal, sys\n"
        "args = sys.argv[1:]\n"
        "while args[0].startswith('--'):\n"
        "    args.pop(0)\n"
        "signal.signal(signal.SIGUSR1, signal.SIG_DFL)\n"
        "os.execvp(args[0], args)\n"
    )
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "77",
        "PYTHONPATH": str(REPO),
    }
    for key in ("SLURM_RESTART_COUNT", "SLURM_PROCID", "RANK", "WORLD_SIZE"):
        env.pop(key, None)
    return env, log


def _write_script(run_dir: Path, cfg: ClusterConfig, command: list[str], name: str) -> Path:
    script = submit(run_dir, cfg, command, dry_run=True, job_name=name)
    path = run_dir / "slurm" / "train.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return path


@pytest.mark.parametrize("template", HOSTILE_NAMES)
def test_hostile_names_cannot_inject(tmp_path, fake_slurm, template):
    env, _ = fake_slurm
    u = uuid.uuid4().hex
    name = template.format(u=u)
    run_dir = tmp_path / name.replace("/", "_")  # the run directory carries the name too
    run_dir.mkdir()
    out = tmp_path / "argv.json"
    command = [
        sys.executable,
        "-c",
        "import json,os,sys; json.dump([sys.argv[1:], os.environ['MBTRAIN_RUN_NAME'], "
        "os.getcwd()], open(sys.argv[1], 'w'))",
        str(out),
        name,
        "$HOME",
        "*",
    ]
    path = _write_script(run_dir, ClusterConfig(), command, name)
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not Path(f"/tmp/pwned-{u}").exists()
    assert not list(tmp_path.rglob("pwned*"))
    argv, run_name, cwd = json.loads(out.read_text())
    assert argv == [str(out), name, "$HOME", "*"]  # every argument arrives verbatim
    assert run_name == name
    assert cwd == str(run_dir)


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "slurm" / "events.jsonl").read_text().splitlines()]


def _metrics_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if "loss" in x]


@pytest.mark.parametrize("restart_count, requeued", [(0, True), (3, False)])
def test_usr1_forwarded_checkpoint_and_requeue(tmp_path, fake_slurm, restart_count, requeued):
    env, log = fake_slurm
    env["SLURM_RESTART_COUNT"] = str(restart_count)
    run_dir = tmp_path / "run"
    path = _write_script(
        run_dir,
        ClusterConfig(max_restarts=3),
        [sys.executable, str(STANDIN), str(run_dir), "200", "0.05"],
        "run",
    )
    proc = subprocess.Popen(
        ["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while len(_metrics_steps(run_dir)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what Slurm's --signal=B:USR1 does
    out, _ = proc.communicate(timeout=30)
    assert "forwarding to the job step" in out
    tag = (run_dir / "checkpoints" / "latest").read_text()
    assert tag == tag_for_step(_metrics_steps(run_dir)[-1])
    assert not (run_dir / "finished").exists()
    if requeued:
        assert proc.returncode == 0, out
        assert log.read_text().split() == ["requeue", "77"]
        assert _events(run_dir)[-1]["action"] == "requeue"
    else:
        assert proc.returncode == 75, out
        assert not log.exists()
        assert _events(run_dir)[-1]["action"] == "stopped"


def test_exit_code_propagates(tmp_path, fake_slurm):
    env, log = fake_slurm
    run_dir = tmp_path / "run"
    path = _write_script(
        run_dir, ClusterConfig(), [sys.executable, "-c", "raise SystemExit(3)"], "run"
    )
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert not log.exists()
    assert [e["action"] for e in _events(run_dir)] == ["start", "failed"]


def test_prepare_array_scripts():
    array, merge = submit_prepare_array(
        "/data/out",
        ClusterConfig(cpus_per_task=2, time="02:00:00"),
        ["python", "-m", "prep", "a b"],
        ["python", "-m", "prep", "--merge"],
        workers=4,
        dry_run=True,
    )
    assert "--array=0-3" in sbatch_options(array)
    assert "--cpus-per-task=2" in sbatch_options(array)
    assert "python -m prep 'a b' --worker-index \"$SLURM_ARRAY_TASK_ID\" --worker-count 4" in array
    assert "python -m prep --merge" in merge
    assert not any(o.startswith("--array") for o in sbatch_options(merge))


def test_term_forwarded_as_usr1_and_early_signal_kept(tmp_path, fake_slurm):
    """TERM reaches the ranks as USR1 (srun would answer TERM by killing them), and a signal
    that arrives before the launch (here: during a slow setup line) is delivered once the step
    runs, repeatedly, so that a rank still starting up (USR1 ignored) hears a later one."""
    env, log = fake_slurm
    run_dir = tmp_path / "run"
    flag = tmp_path / "in-setup"
    cfg = ClusterConfig(max_restarts=3, setup=[f"touch {flag}; sleep 1"])
    # The stand-in installs its handlers only after 2 s; the first USR1 finds SIG_IGN.
    slow_start = (
        "import runpy, sys, time; time.sleep(2); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [sys.executable, "-c", slow_start, str(STANDIN), str(run_dir), "400", "0.05"]
    path = _write_script(run_dir, cfg, command, "run")
    proc = subprocess.Popen(
        ["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # during setup, before srun starts
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "got SIGTERM" in out and "SIGUSR1 (stop request SIGTERM" in out, out
    assert f"signal {int(signal.SIGUSR1)} -> saved" in out, out
    steps = _metrics_steps(run_dir)
    assert 0 < len(steps) < 400 and not (run_dir / "finished").exists()
    assert log.read_text().split() == ["requeue", "77"]


def test_prepare_slurm_dry_run(tmp_path, monkeypatch):
    """`mbtrain prepare --slurm --dry-run`: relative paths made absolute, array + merge scripts."""
    from mbtrain.cluster.prepare import submit_prepare
    from mbtrain.data.config import PrepareConfig

    monkeypatch.chdir(tmp_path)
    cluster = ClusterConfig(time="00:30:00", partition="cpu", cpus_per_task=4)
    cfg = PrepareConfig(inputs=["raw/*.txt"], out="out/ds", seq_len=64, worker_count=3, workers=4)
    array, merge = submit_prepare(cfg, cluster_cfg=cluster, python="py", dry_run=True)
    corpus = tmp_path / "out" / "ds.slurm" / "prepare.yaml"
    assert "--array=0-2" in sbatch_options(array) and "--partition=cpu" in sbatch_options(array)
    assert f"py -m mbtrain.cli.main prepare --corpus {corpus} --no-progress" in array
    assert '--worker-index "$SLURM_ARRAY_TASK_ID" --worker-count 3' in array
    assert f"prepare --merge --out {tmp_path / 'out' / 'ds'}" in merge
    assert not corpus.exists()  # a dry run writes nothing


def test_stop_request_at_launch_never_kills_the_step(tmp_path, fake_slurm):
    """A stop request pending when the step is launched (Slurm's warning can come during
    setup) is sent only once every task ignores USR1. Before, it went out at the launch and
    found the forked subshell (before its `trap '' USR1`) or a task still starting Python with
    USR1 at its default action: the step died with rc 138 instead of checkpointing. Here the
    setup line signals the batch shell itself, so every run has a request at the launch; the
    command, like a rank before the trainer's handler, ignores it and runs to its end."""
    env, _ = fake_slurm
    cfg = ClusterConfig(setup=["kill -s USR1 $$"])
    command = [sys.executable, "-c", "import time; time.sleep(0.05)"]
    codes = []
    for i in range(10):
        run_dir = tmp_path / f"run{i}"
        path = _write_script(run_dir, cfg, command, "run")
        log = run_dir / "batch.out"  # a file, not a pipe: the resender's sleep keeps a pipe open
        with log.open("w") as out:
            rc = subprocess.run(["bash", str(path)], env=env, stdout=out, stderr=out, timeout=60)
        assert "forwarding to the job step" in log.read_text(), log.read_text()
        codes.append(rc.returncode)
        assert not list((run_dir / "slurm").glob(".ready-*"))  # removed after the step
    assert codes == [0] * len(codes), codes
