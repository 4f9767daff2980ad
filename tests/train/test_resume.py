"""Real DeepSpeed runs, 2 ranks on gloo: every ZeRO stage trains, stops on a signal exactly
like a preempted Slurm job, resumes, and reproduces the uninterrupted run bit for bit."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import launch, read_logs, run, wait

STEPS = 8
pytestmark = [pytest.mark.dist, pytest.mark.slow]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"duplicated or unordered steps: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def wait_for_step(run_dir: Path, step: int, procs, log_dir: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(r.get("step", 0) >= step for r in read_metrics(run_dir / "metrics.jsonl")):
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a rank exited early:\n{read_logs(log_dir)}")
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached:\n{read_logs(log_dir)}")


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_signal_stop_and_resume_is_bit_exact(zero, tiny_args, tmp_path):
    args = [*tiny_args, f"train.steps={STEPS}", f"parallel.zero_stage={zero}", "checkpoint.every=0"]
    ref = tmp_path / "ref"
    run(2, [*args, f"run.dir={ref}"], tmp_path / "ref_logs")
    ref_losses = losses(ref)
    assert sorted(ref_losses) == list(range(1, STEPS + 1))
    assert ref_losses[STEPS] < ref_losses[1], "loss does not decrease on real data"

    # The same run, preempted: SIGUSR1 to every rank (what Slurm sends), exit 75, resume.
    stopped = tmp_path / "stopped"
    log_dir = tmp_path / "stopped_logs"
    procs = launch(2, [*args, f"run.dir={stopped}"], log_dir)
    wait_for_step(stopped, 3, procs, log_dir)
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    codes = wait(procs, log_dir)
    assert codes == [75, 75], (
        f"expected the requeue exit code 75, got {codes}:\n{read_logs(log_dir)}"
    )
    latest = (stopped / "checkpoints" / "latest").read_text().strip()
    stop_step = int(latest.removeprefix("step"))
    assert 3 <= stop_step < STEPS
    run(2, [*args, f"run.dir={stopped}"], tmp_path / "resumed_logs")
    resumed = losses(stopped)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    # Bit for bit: same data order, same RNG, same optimizer state after the restart.
    assert resumed == ref_losses
    marker = json.loads(
        (stopped / "checkpoints" / f"step{STEPS:08d}" / "mbtrain_complete.json").read_text()
    )
    assert marker["zero_stage"] == zero and marker["world_size"] == 2
    assert (stopped / "export" / "model.safetensors").is_file()


def test_kill_9_during_save_resumes_from_previous_checkpoint(tiny_args, tmp_path):
    """A rank killed with SIGKILL in the middle of a save leaves an incomplete directory that
    is never loaded; the run resumes from the previous complete checkpoint."""
    args = [*tiny_args, "train.steps=6", "checkpoint.every=2", f"run.dir={tmp_path / 'run'}"]
    log_dir = tmp_path / "logs"
    gate = tmp_path / "saving"
    procs = launch(
        1,
        args,
        log_dir,
        script=[__import__("sys").executable, str(Path(__file__).with_name("slow_save.py"))],
        extra_env={"SLOW_SAVE_GATE": str(gate), "SLOW_SAVE_STEP": "4"},
    )
    deadline = time.time() + 240
    while not gate.exists():
        assert time.time() < deadline and procs[0].poll() is None, read_logs(log_dir)
        time.sleep(0.05)
    procs[0].kill()  # SIGKILL while step 4 is half written
    procs[0].wait()
    root = tmp_path / "run" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step00000002"
    assert (root / "step00000004").is_dir() and not (
        root / "step00000004" / "mbtrain_complete.json"
    ).exists()
    run(1, args, tmp_path / "logs2")
    log = read_logs(tmp_path / "logs2")
    assert "resumed from" in log and "step00000002" in log
    assert (root / "latest").read_text().strip() == "step00000006"
    assert (
        not (root / "step00000004").exists()
        or (root / "step00000004" / "mbtrain_complete.json").exists()
    )
    assert sorted(losses(tmp_path / "run")) == list(range(1, 7))


def test_nonfinite_loss_stops_with_the_step_named(tiny_args, tmp_path):
    args = [
        *tiny_args,
        "train.steps=6",
        "optim.lr=1e30",
        "optim.warmup_steps=0",
        "optim.grad_clip=0",
        f"run.dir={tmp_path / 'run'}",
    ]
    log_dir = tmp_path / "logs"
    run(1, args, log_dir, expect=1)
    log = read_logs(log_dir)
    assert "non-finite loss at step" in log and "Traceback" not in log
    log_dir = tmp_path / "logs_skip"
    run(
        1,
        [
            *args[:-1],
            f"run.dir={tmp_path / 'skip'}",
            "train.on_nonfinite=skip",
            "train.max_nonfinite_skips=2",
        ],
        log_dir,
        expect=1,
    )
    log = read_logs(log_dir)
    assert log.count("non-finite loss, update skipped") == 2
    assert "non-finite loss at step" in log


def test_resume_follows_the_schedule_of_the_new_config(tiny_args, tmp_path):
    """Extending a run (`train.steps` 4 -> 8) and changing the peak lr on resume: the lr after
    the restart is the new config's schedule at the restored step, not the checkpoint's."""
    import math

    from mbtrain.train.optim import lr_factor
    from mbtrain.train.run_config import load_config

    run_dir = tmp_path / "run"
    common = [*tiny_args, f"run.dir={run_dir}", "optim.schedule=cosine", "optim.warmup_steps=0"]
    run(1, [*common, "train.steps=4", "optim.lr=0.001"], tmp_path / "first")
    second = [*common, "train.steps=8", "optim.lr=0.002"]
    run(1, second, tmp_path / "second")
    assert "peak lr 0.001 -> 0.002" in read_logs(tmp_path / "second")
    lrs = {r["step"]: r["lr"] for r in read_metrics(run_dir / "metrics.jsonl") if "lr" in r}
    assert sorted(lrs) == list(range(1, 9))
    optim = load_config(second[0], second[1:]).optim
    for step in range(5, 9):  # the lr logged after step s is the one set for step s + 1
        want = 0.002 * lr_factor(step, optim, 8)
        assert math.isclose(lrs[step], want, rel_tol=1e-9), (step, lrs[step], want)
    # And what the old behaviour gave instead (the schedule of 4 steps ends at min_lr):
    assert not math.isclose(lrs[5], 0.001 * lr_factor(5, optim, 4), rel_tol=1e-6)
