"""Real jobs on the local Slurm cluster (cluster/slurm_up.sh): submit, gloo across srun tasks,
preemption (USR1 -> checkpoint -> exit 75 -> requeue -> resume), status, cancel, prepare arrays.

The jobs run concurrently where they can (the node declares 8 CPUs on 2 real cores) to keep
the whole module around a minute.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbtrain.checkpoint.paths import step_of_tag
from mbtrain.cli.cluster import format_status, run_status
from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.status import cancel
from mbtrain.cluster.submit import read_jobs, submit, submit_prepare_array

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin_trainer.py"
GLOO = HERE / "gloo_allreduce.py"
CPU = ClusterConfig(time="00:10:00", signal_seconds=30)


def _metrics_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if '"loss"' in x]


@pytest.mark.parametrize("nodes, tasks_per_node", [(1, 2), (2, 1)])
def test_gloo_across_srun_tasks(
    slurm_cluster, tmp_path, wait_job, job_output, nodes, tasks_per_node
):
    """(1, 2): two ranks on one node; (2, 1): one rank on each of the nodes n1 and n2."""
    run_dir = tmp_path / "gloo run"
    cfg = ClusterConfig(
        nodes=nodes, tasks_per_node=tasks_per_node, time="00:05:00", signal_seconds=30
    )
    job_id = submit(
        run_dir, cfg, [sys.executable, str(GLOO), str(run_dir / "out")], job_name="gloo"
    )
    assert read_jobs(run_dir)[-1]["job_id"] == job_id
    assert (run_dir / "code" / "mbtrain" / "cluster" / "env.py").is_file()
    rec = wait_job(job_id, timeout=150)
    assert rec["JobState"] == "COMPLETED", job_output(run_dir)
    world = nodes * tasks_per_node
    results = [json.loads((run_dir / "out" / f"rank{r}.json").read_text()) for r in range(world)]
    for r, res in enumerate(results):
        assert res["sum"] == world * (world + 1) / 2 and res["world"] == world
        env = res["env"]
        assert env["RANK"] == str(r) and env["LOCAL_RANK"] == str(r % tasks_per_node)
        assert env["WORLD_SIZE"] == str(world) and env["LOCAL_WORLD_SIZE"] == str(tasks_per_node)
        assert env["MASTER_ADDR"] == "127.0.0.1"  # node names are not DNS names: their NodeAddr
        assert env["MASTER_PORT"] == str(10000 + int(job_id) % 50000)
        assert env["OMP_NUM_THREADS"] == "1" and res["torch_threads"] == 1
        assert res["node_ids"] == [str(i // tasks_per_node) for i in range(world)]
    status = run_status(run_dir)
    assert status["state"] == "COMPLETED" and status["source"] == "slurm"
    assert "COMPLETED" in format_status(status)


@pytest.mark.parametrize("sig", ["USR1", "TERM"])
def test_preempt_requeue_resume(slurm_cluster, tmp_path, wait_job, job_output, sig):
    """USR1: the time-limit warning. TERM to the batch shell: must reach the ranks as USR1,
    since srun answers TERM by killing its tasks (Slurm 22.05: "forcing job termination")."""
    run_dir = tmp_path / "preempt"
    steps = 40
    job_id = submit(
        run_dir,
        ClusterConfig(time="00:10:00", signal_seconds=30, max_restarts=2),
        [sys.executable, str(STANDIN), str(run_dir), str(steps), "0.1"],
        job_name="preempt",
    )
    wait_job(
        job_id,
        lambda r: r["JobState"] == "RUNNING" and len(_metrics_steps(run_dir)) >= 5,
        timeout=60,
        poll=0.2,
    )
    running = run_status(run_dir)
    assert running["state"] == "RUNNING" and running["nodes"] in ("n1", "n2")
    assert "RUNNING" in format_status(running) and running["step"] >= 5

    # What Slurm does ahead of the time limit with --signal=B:USR1@N: signal the batch shell.
    subprocess.run(["scancel", f"--signal={sig}", "--batch", job_id], check=True)
    t_signal = time.monotonic()
    rec = wait_job(job_id, lambda r: int(r.get("Restarts", 0)) >= 1, timeout=60, poll=0.2)
    tag = (run_dir / "checkpoints" / "latest").read_text()
    saved = step_of_tag(tag)
    requeued = run_status(run_dir)
    assert requeued["restarts"] == 1 and requeued["checkpoint"] == tag
    print(f"\nrequeued state: {rec['JobState']} ({rec.get('Reason')})")

    rec = wait_job(
        job_id,
        lambda r: r["JobState"] == "RUNNING" and int(r.get("Restarts", 0)) == 1,
        timeout=90,
        poll=0.2,
    )
    t_resumed = time.monotonic()
    rec = wait_job(job_id, timeout=90)
    assert rec["JobState"] == "COMPLETED", job_output(run_dir)
    print(f"requeue latency ({sig} -> running again): {t_resumed - t_signal:.1f} s")

    steps_seen = _metrics_steps(run_dir)
    # The resumed job starts right after the checkpoint: every step exactly once.
    assert steps_seen == list(range(1, steps + 1)), steps_seen
    assert saved < steps and (run_dir / "finished").exists()
    restarts = [
        json.loads(x)["restart"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    assert restarts[saved - 1] == 0 and restarts[saved] == 1
    events = [
        json.loads(x)["action"]
        for x in (run_dir / "slurm" / "events.jsonl").read_text().splitlines()
    ]
    assert events == ["start", "requeue", "start", "done"], events
    out = job_output(run_dir)
    assert "forwarding to the job step" in out and "requeueing job" in out
    assert f"standin: signal {int(signal.SIGUSR1)} -> saved" in out, out  # USR1 even for TERM
    final = run_status(run_dir)
    assert (
        final["state"] == "COMPLETED" and final["step"] == steps and final["val_bpb"] == 2.0 / steps
    )


def test_hung_step_exit_76_is_requeued(slurm_cluster, tmp_path, wait_job, job_output):
    """The watchdog's exit code 76 (a hung collective) is requeued like a stop request."""
    run_dir = tmp_path / "hang"
    job_id = submit(
        run_dir,
        ClusterConfig(time="00:10:00", signal_seconds=30, max_restarts=2),
        [sys.executable, str(STANDIN), str(run_dir), "8", "0.05", "HANG_ONCE"],
        job_name="hang",
    )
    rec = wait_job(job_id, timeout=150)
    assert rec["JobState"] == "COMPLETED" and int(rec.get("Restarts", 0)) == 1, job_output(run_dir)
    events = [
        json.loads(x)["action"]
        for x in (run_dir / "slurm" / "events.jsonl").read_text().splitlines()
    ]
    assert events == ["start", "requeue-hang", "start", "done"], events
    assert (run_dir / "finished").exists()


def test_submit_refuses_while_a_job_of_the_run_is_in_slurm(
    slurm_cluster, tmp_path, wait_job, tiny_dataset
):
    """`mbtrain submit` would replace code/ and config.yaml under a queued or running job."""
    run_dir = tmp_path / "busy"
    job_id = submit(run_dir, CPU, ["sleep", "300"], job_name="busy", sbatch_args=["--hold"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model:\n  seq_len: 128\ndata:\n  train: {tiny_dataset}/train\nrun:\n  dir: {run_dir}\n"
    )
    cmd = [sys.executable, "-m", "mbtrain.cli.main", "submit", str(recipe)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 1, out.stdout
        assert f"job {job_id} (PENDING)" in out.stderr and "--force" in out.stderr
        assert not (run_dir / "config.yaml").exists()
        forced = subprocess.run([*cmd, "--force", "--dry-run"], capture_output=True, text=True)
        assert forced.returncode == 0, forced.stderr
    finally:
        subprocess.run(["scancel", job_id])
    wait_job(job_id, timeout=60)
    assert subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True).returncode == 0


def test_status_pending_failed_and_cancel(slurm_cluster, tmp_path, wait_job):
    held = tmp_path / "held"
    job_id = submit(held, CPU, ["true"], job_name="held", sbatch_args=["--hold"])
    pending = run_status(held)
    assert pending["state"] == "PENDING" and pending["reason"] == "JobHeldUser"
    text = format_status(pending)
    assert "PENDING (JobHeldUser)" in text and "no metrics yet" in text
    assert cancel(held) == [job_id]
    assert wait_job(job_id)["JobState"] == "CANCELLED"
    assert cancel(held) == []  # nothing left to cancel

    failed = tmp_path / "failed"
    job_id = submit(failed, CPU, [sys.executable, "-c", "raise SystemExit(3)"], job_name="failed")
    rec = wait_job(job_id, timeout=60)
    assert rec["JobState"] == "FAILED" and rec["ExitCode"] == "3:0"
    status = run_status(failed)
    assert status["state"] == "FAILED" and "exit code:  3:0" in format_status(status)


def test_prepare_array_then_merge(slurm_cluster, tmp_path, wait_job, job_output):
    run_dir = tmp_path / "prep"
    out = run_dir / "parts"
    worker = [
        sys.executable,
        "-c",
        "import sys, pathlib; a = sys.argv[1:]; p = pathlib.Path(a[0]); p.mkdir(parents=True, exist_ok=True); "
        "i, n = a[a.index('--worker-index') + 1], a[a.index('--worker-count') + 1]; "
        "(p / f'part{i}of{n}').write_text(i)",
        str(out),
    ]
    merge = [
        sys.executable,
        "-c",
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]); parts = sorted(x.name for x in p.iterdir()); "
        "assert parts == ['part0of2', 'part1of2'], parts; (p / 'merged').write_text(' '.join(parts))",
        str(out),
    ]
    array_id, merge_id = submit_prepare_array(run_dir, CPU, worker, merge, workers=2)
    rec = wait_job(merge_id, timeout=90)
    assert rec["JobState"] == "COMPLETED", job_output(run_dir)
    assert rec["Dependency"] == "(null)" or array_id in rec.get("Dependency", "")
    assert (out / "merged").read_text() == "part0of2 part1of2"
    assert [j["kind"] for j in read_jobs(run_dir)] == ["prepare", "merge"]
