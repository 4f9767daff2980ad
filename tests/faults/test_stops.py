"""Stops that must lose nothing: Ctrl-C (SIGINT) saves the current step and says how to
resume, a second Ctrl-C aborts at once, and context parallelism with ZeRO-3 survives being
killed and stopped exactly as a single-axis run does."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mbtrain.checkpoint.paths import LATEST, step_of_tag
from mbtrain.monitor.metrics import read_metrics
from tests.faults.test_faults import assert_same_weights, losses, wait_for_training
from tests.support.launch import launch, read_logs, run, wait

pytestmark = [pytest.mark.slow, pytest.mark.dist]
STEPS = 30


def _wait_for_step(run_dir: Path, step: int, procs, log_dir: Path) -> None:
    deadline = time.time() + 240
    while not any(r.get("step", 0) >= step for r in read_metrics(run_dir / "metrics.jsonl")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), read_logs(log_dir)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_args):
    base = tmp_path_factory.mktemp("reference")
    args = [*tiny_args, f"train.steps={STEPS}", "parallel.zero_stage=1", "checkpoint.every=10",
            "train.eval_every=0"]  # fmt: skip
    run(2, [*args, f"run.dir={base / 'run'}"], base / "logs")
    return base / "run", args


def test_ctrl_c_saves_the_current_step_and_resumes_bit_exact(reference, tmp_path):
    """SIGINT to every rank (what a terminal sends its foreground job): each rank finishes its
    step, they save that step (not the last periodic checkpoint: nothing is lost), exit 130,
    and print the command that resumes; running it ends with the uninterrupted weights."""
    ref_dir, args = reference
    run_dir, log_dir = tmp_path / "run", tmp_path / "first"
    procs = launch(2, [*args, f"run.dir={run_dir}"], log_dir)
    _wait_for_step(run_dir, 4, procs, log_dir)
    for p in procs:
        p.send_signal(signal.SIGINT)
    assert wait(procs, log_dir, ok=(130,)) == [130, 130], read_logs(log_dir)
    log = read_logs(log_dir)
    saved = step_of_tag((run_dir / "checkpoints" / LATEST).read_text().strip())
    assert saved is not None and saved % 10 != 0, log  # the step it was at, not a periodic one
    assert max(losses(run_dir)) == saved
    assert "Ctrl-C: saving a checkpoint at the end of this step" in log, log
    assert f"stopped at step {saved} (Ctrl-C)" in log, log
    assert f"resume with: mbtrain train {run_dir}/config.yaml" in log, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    # The printed command, as printed (a 2-rank job under the same launcher).
    run(2, [str(run_dir / "config.yaml")], tmp_path / "resumed")
    assert f"resumed from {run_dir / 'checkpoints'}" in read_logs(tmp_path / "resumed")
    assert losses(run_dir) == losses(ref_dir)
    assert_same_weights(run_dir, ref_dir)


def test_a_second_ctrl_c_aborts_at_once(tiny_args, tmp_path):
    """The second SIGINT ends the process by the signal, without waiting for the save."""
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    args = [*tiny_args, "train.steps=100000", "checkpoint.every=0", f"run.dir={run_dir}"]
    (proc,) = launch(1, args, log_dir)
    assert wait_for_training(log_dir, [proc])
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert wait([proc], log_dir, ok=(-signal.SIGINT,)) == [-signal.SIGINT], read_logs(log_dir)
    assert not (run_dir / "checkpoints" / LATEST).exists()  # aborted before any save


def test_context_parallel_zero3_stop_and_kill_resume_to_identical_weights(tiny_args, tmp_path):
    """CP=2 with ZeRO-3 (weights partitioned over the two context ranks): SIGKILL of both
    ranks mid-run, a restart, a Slurm stop (SIGUSR1, exit 75), a restart: the same losses and
    final weights as the run nothing happened to."""
    args = [*tiny_args, "train.steps=16", "parallel.context=2", "parallel.zero_stage=3",
            "checkpoint.every=3", "model.local_context=4"]  # fmt: skip
    ref = tmp_path / "ref"
    run(2, [*args, f"run.dir={ref}"], tmp_path / "ref_logs")
    run_dir = tmp_path / "run"
    procs = launch(2, [*args, f"run.dir={run_dir}"], tmp_path / "l1")
    _wait_for_step(run_dir, 5, procs, tmp_path / "l1")
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    procs = launch(2, [*args, f"run.dir={run_dir}"], tmp_path / "l2")
    _wait_for_step(run_dir, 10, procs, tmp_path / "l2")
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    assert wait(procs, tmp_path / "l2") == [75, 75], read_logs(tmp_path / "l2")
    run(2, [*args, f"run.dir={run_dir}"], tmp_path / "l3")
    assert losses(run_dir) == losses(ref)
    assert_same_weights(run_dir, ref)
