"""The real trainer on the local Slurm cluster: `mbtrain submit`, preemption, the time-limit
warning, 2 nodes, `mbtrain status | cancel`, and `mbtrain prepare --slurm`.

All jobs are submitted by module fixtures before the first test waits, so they run together
(the nodes declare 8 CPUs each on 2 real cores). Three jobs train the same tiny model with the
same world size (2 ranks, data parallel 2) for the same steps:

    ref        1 node x 2 tasks, never interrupted: the reference
    preempt    1 node x 2 tasks, `scancel --signal=USR1 --batch` mid-run -> checkpoint, exit 75,
               requeue, resume
    timelimit  2 nodes x 1 task (n1, n2), --time=00:02:00 with --signal=B:USR1@100: Slurm's own
               warning -> checkpoint, requeue, resume

and the per-step losses of all three must be identical (fp32 on CPU, gloo: deterministic).
Measured numbers (start overhead, requeue latency) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mbtrain.cli.cluster import run_status
from mbtrain.cli.main import main as cli_main
from mbtrain.cluster.status import slurm_job
from mbtrain.cluster.submit import read_jobs
from mbtrain.monitor.metrics import read_metrics

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny_cpu.yaml"
STEPS = 40
CORPUS = str(Path(json.__file__).parent / "*.py")  # ~56 KB of Python: 5 documents


def _cli(*argv: str) -> str:
    """Run the real `mbtrain` CLI in a subprocess; return its stdout (fail with its output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"mbtrain {' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _job_id(run_dir: Path) -> str:
    return read_jobs(run_dir)[-1]["job_id"]


def _train_rows(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / "metrics.jsonl")  # a line being written is skipped


def _losses(run_dir: Path) -> list[tuple]:
    keys = ("step", "loss", "grad_norm", "lr", "bytes_seen")
    return [tuple(r[k] for k in keys) for r in _train_rows(run_dir) if "loss" in r]


def _events(run_dir: Path) -> list[str]:
    path = run_dir / "slurm" / "events.jsonl"
    return [json.loads(x)["action"] for x in path.read_text().splitlines()] if path.exists() else []


def _seconds(start: str, end: str) -> float:
    """Seconds between two of Slurm's ISO timestamps."""
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _overrides(data: Path, run_dir: Path) -> list[str]:
    return [
        f"run.dir={run_dir}",
        f"run.name={run_dir.name}",
        f"data.train={data}/train",
        f"data.val={data}/val",
        # Its own shard cache per run: runs on one node that share the default cache collide
        # in streaming's shared memory ("Reused local directory").
        f"data.local_cache={run_dir}/cache",
        "model.seq_len=128",
        "model.global_layers=1",
        "model.local_layers=1",
        "train.micro_batch_size=2",
        f"train.steps={STEPS}",
        "train.sample_bytes=0",
        "train.log_every=1",
        "train.eval_every=0",
        "train.eval_batches=2",
        "checkpoint.every=0",
        "optim.warmup_steps=5",
        "cluster.time=00:10:00",
        "cluster.signal_seconds=60",
        "cluster.max_restarts=2",
    ]


def _raise_limit_after_requeue(job_id: str, done: threading.Event, timeout: float = 400) -> None:
    """Once the time-limit job was requeued, give it 10 minutes: the requeued allocation gets
    the same 2-minute limit, and its own warning would come 0-30 s in again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = slurm_job(job_id) or {}
        if int(rec.get("Restarts", 0) or 0) >= 1:
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "TimeLimit=00:10:00"], check=False
            )
            break
        if rec.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(0.3)
    done.set()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The tiny corpus prepared by one local process (also the reference of the array test)."""
    from mbtrain.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("data") / "local"
    prepare(
        PrepareConfig(inputs=[CORPUS], out=str(out), seq_len=128, val_fraction=0.2, progress=False)
    )
    return out


@pytest.fixture(scope="module")
def jobs(slurm_cluster, data, tmp_path_factory) -> dict:
    """Submit every job of this module at once; tests then wait for their own."""
    from mbtrain.cluster.submit import submit
    from mbtrain.train.run_config import load_config, save_config

    root = tmp_path_factory.mktemp("runs")
    t0 = time.monotonic()
    runs = {name: root / name for name in ("ref", "preempt", "timelimit", "held")}
    out = {"root": root, "submitted": t0, **runs}

    # The reference and the preempted run go through the real CLI.
    for name in ("ref", "preempt"):
        _cli("submit", str(RECIPE), *_overrides(data, runs[name]), "cluster.tasks_per_node=2")

    # Time limit, 2 nodes x 1 task. Slurm checks time limits every 30 s (PERIODIC_TIMEOUT) and
    # sends the warning at the first check where elapsed + 30 >= limit - signal_seconds: here
    # the first check after the start, 0-30 s in. The setup line waits for it (first
    # allocation only), so the trainer is always told, whenever the check falls.
    cfg = load_config(RECIPE, _overrides(data, runs["timelimit"]))
    cfg.cluster.nodes, cfg.cluster.tasks_per_node = 2, 1
    cfg.cluster.time, cfg.cluster.signal_seconds = "00:02:00", 100
    cfg.cluster.setup = [
        "if [[ ! -v SLURM_RESTART_COUNT || $SLURM_RESTART_COUNT == 0 ]]; then "
        "for _ in $(seq 300); do [[ -n $stop_signal ]] && break; sleep 0.2; done; fi"
    ]
    save_config(cfg, runs["timelimit"] / "config.yaml")
    limit_id = submit(runs["timelimit"], cfg.cluster, job_name="timelimit")
    out["limit_raised"] = threading.Event()
    threading.Thread(
        target=_raise_limit_after_requeue, args=(limit_id, out["limit_raised"]), daemon=True
    ).start()

    # Data preparation as an array of 2 workers plus a merge job, and a held job to see
    # PENDING and to cancel: the CLI in this process (a new one imports torch for seconds).
    out["prep_out"] = root / "prepared"
    assert cli_main(
        [
            "prepare", CORPUS, "--out", str(out["prep_out"]), "--seq-len", "128",
            "--val-fraction", "0.2", "--worker-count", "2", "--slurm", "--cluster",
            "time=00:05:00",
        ]
    ) == 0  # fmt: skip
    held = [*_overrides(data, runs["held"]), "cluster.sbatch_extra=[--hold]"]
    assert cli_main(["submit", str(RECIPE), *held]) == 0
    out["submit_s"] = time.monotonic() - t0
    print(f"\n[measured] 5 submissions (2 through a new CLI process): {out['submit_s']:.1f} s")
    return out


def test_preempt_requeue_resume_bit_exact(jobs, wait_job, job_output):
    run_dir = jobs["preempt"]
    job_id = _job_id(run_dir)
    rec = wait_job(job_id, lambda r: r["JobState"] != "PENDING", timeout=120, poll=0.1)
    t_running = time.monotonic()
    wait_job(job_id, lambda r: len(_losses(run_dir)) >= 1, timeout=240, poll=0.1)
    t_first = time.monotonic()
    wait_job(job_id, lambda r: len(_losses(run_dir)) >= 2, timeout=240, poll=0.1)
    print(
        f"\n[measured] job start: submitted -> {rec['JobState']} "
        f"{_seconds(rec['SubmitTime'], rec['StartTime']):.0f} s (scheduler), "
        f"-> first training step {t_first - t_running:.1f} s (python, torch, DeepSpeed, "
        "gloo rendezvous, data; 2 ranks on shared CPUs)"
    )
    running = run_status(run_dir)  # what `mbtrain status --json` prints (the CLI: below)
    # What Slurm does before the time limit with --signal=B:USR1@N: signal the batch shell.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    t_signal = time.monotonic()
    assert running["state"] == "RUNNING" and running["step"] >= 2, running
    assert running["nodes"] in ("n1", "n2") and running["checkpoint"] is None, running
    wait_job(job_id, lambda r: int(r.get("Restarts", 0)) >= 1, timeout=120, poll=0.2)
    t_requeued = time.monotonic()
    requeued = run_status(run_dir)
    tag = (run_dir / "checkpoints" / "latest").read_text().strip()
    saved = int(tag.rsplit("step", 1)[-1])
    assert requeued["restarts"] == 1 and requeued["checkpoint"] == tag, requeued
    assert 2 <= saved < STEPS, f"the signal must land mid-run: saved at {saved}"
    text = _cli("status", str(run_dir))
    assert "restarts:   1" in text and f"checkpoint: {tag}" in text, text
    assert json.loads(_cli("status", str(run_dir), "--json"))["restarts"] == 1
    print(f"\n[measured] requeued state: {requeued['state']} ({requeued.get('reason')})")

    wait_job(
        job_id,
        lambda r: r["JobState"] == "RUNNING" and int(r.get("Restarts", 0)) == 1,
        timeout=120,
        poll=0.2,
    )
    t_running = time.monotonic()
    n_before = saved
    wait_job(job_id, lambda r: len(_losses(run_dir)) > n_before or r["JobState"] != "RUNNING",
             timeout=180, poll=0.2)  # fmt: skip
    t_step = time.monotonic()
    rec = wait_job(job_id, timeout=240)
    assert rec["JobState"] == "COMPLETED", job_output(run_dir)
    print(
        f"[measured] USR1 -> requeued {t_requeued - t_signal:.1f} s, -> running again "
        f"{t_running - t_signal:.1f} s, -> first resumed step {t_step - t_signal:.1f} s "
        f"(checkpoint at step {saved})"
    )
    assert _events(run_dir) == ["start", "requeue", "start", "done"]
    out = job_output(run_dir)
    assert "forwarding to the job step" in out and "requeueing job" in out
    assert f"resumed from {run_dir / 'checkpoints' / tag} at step {saved}" in out, out

    ref = jobs["ref"]
    assert wait_job(_job_id(ref), timeout=300)["JobState"] == "COMPLETED", job_output(ref)
    # Every step once, and the same numbers as the run that was never interrupted.
    assert _losses(run_dir) == _losses(ref)
    val = [r["val_bpb"] for r in _train_rows(run_dir) if "val_bpb" in r]
    assert val == [r["val_bpb"] for r in _train_rows(ref) if "val_bpb" in r]
    final = run_status(run_dir)
    assert final["state"] == "COMPLETED" and final["step"] == STEPS and final["restarts"] == 1


def test_submit_real_training(jobs, wait_job, job_output):
    run_dir = jobs["ref"]
    job_id = _job_id(run_dir)
    rec = wait_job(job_id, timeout=300)
    assert rec["JobState"] == "COMPLETED", job_output(run_dir)
    print(f"\n[measured] ref: RunTime {rec['RunTime']} for {STEPS} steps (2 ranks, shared CPUs)")
    assert (run_dir / "config.yaml").is_file()
    steps = [r[0] for r in _losses(run_dir)]
    assert steps == list(range(1, STEPS + 1)), steps  # every step exactly once
    assert [r["step"] for r in _train_rows(run_dir) if "val_bpb" in r] == [STEPS]
    assert (run_dir / "checkpoints" / "latest").read_text().strip().endswith(f"{STEPS:08d}")
    assert (run_dir / "export" / "model.safetensors").is_file()
    assert _events(run_dir) == ["start", "done"]
    losses = [r[1] for r in _losses(run_dir)]
    assert losses[-1] < losses[0]  # it learns
    text = _cli("status", str(run_dir))
    assert "COMPLETED" in text and f"step:       {STEPS}" in text, text


def test_time_limit_warning_two_nodes(jobs, wait_job, job_output):
    run_dir = jobs["timelimit"]
    job_id = _job_id(run_dir)
    rec = wait_job(job_id, timeout=400)
    assert jobs["limit_raised"].wait(10)
    out = job_output(run_dir)
    assert rec["JobState"] == "COMPLETED", out
    assert rec["NodeList"] == "n[1-2]" and rec["TimeLimit"] == "00:10:00", rec
    # Nobody but Slurm signalled this job.
    assert "batch shell got SIGUSR1" in out and "requeueing job" in out, out
    first = (run_dir / "slurm" / f"slurm-{job_id}.out").read_text()
    started = re.search(r"start \(restart 0 .* at (\S+)", first)
    warned = re.search(r"batch shell got SIGUSR1 at (\S+)", first)
    if started and warned:
        print(
            f"\n[measured] time-limit warning {_seconds(started[1], warned[1]):.0f} s after start"
        )
    assert "on 2 cpu process(es)" in out, out
    assert _events(run_dir) == ["start", "requeue", "start", "done"]
    ref = jobs["ref"]
    assert wait_job(_job_id(ref), timeout=300)["JobState"] == "COMPLETED", job_output(ref)
    assert _losses(run_dir) == _losses(ref)  # 2 nodes x 1 task == 1 node x 2 tasks


def test_status_pending_and_cancel_cli(jobs, wait_job):
    run_dir = jobs["held"]
    job_id = _job_id(run_dir)
    text = _cli("status", str(run_dir))
    assert "PENDING (JobHeldUser)" in text and "no metrics yet" in text, text
    assert f"cancelled {job_id}" in _cli("cancel", str(run_dir))
    assert wait_job(job_id)["JobState"] == "CANCELLED"
    assert "CANCELLED" in _cli("status", str(run_dir))
    assert "no running or pending job" in _cli("cancel", str(run_dir))


def test_prepare_array_on_slurm_equals_local(jobs, data, wait_job, job_output):
    from mbtrain.data import iter_documents

    out = jobs["prep_out"]
    slurm_dir = Path(str(out) + ".slurm")
    kinds = [(j["kind"], j["job_id"]) for j in read_jobs(slurm_dir)]
    assert [k for k, _ in kinds] == ["prepare", "merge"]
    array_id, merge_id = (i for _, i in kinds)
    rec = wait_job(merge_id, timeout=300)
    assert rec["JobState"] == "COMPLETED", job_output(slurm_dir)
    assert array_id in rec.get("Dependency", "") or rec.get("Dependency") == "(null)"
    assert json.loads((out / "layout.json").read_text())["total_parts"] == 2
    for split in ("train", "val"):
        docs = sorted(iter_documents(str(out / split)))
        assert docs and docs == sorted(iter_documents(str(data / split))), split
