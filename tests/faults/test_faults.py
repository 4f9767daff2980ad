"""Fault injection: whatever happens to a run, it ends with exactly the weights of a run that
nothing happened to. SIGKILL at random moments (inside checkpoint saves too) with 2 ranks, a
disk that fills up during a save, a damaged newest checkpoint, a second trainer.

Counts (kills, kills that landed inside a save, restarts) are printed with `-s` and written to
the test's tmp directory as faults.json.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from mbtrain.checkpoint.integrity import checkpoint_problem
from mbtrain.checkpoint.paths import COMPLETE_MARKER, LATEST, step_of_tag, tag_for_step
from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import launch, read_logs, run, wait

pytestmark = [pytest.mark.slow, pytest.mark.dist]
HERE = Path(__file__).resolve().parent
STEPS = 80
KILLS = 20


def losses(run_dir: Path) -> dict[int, float]:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"duplicated or unordered steps: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "export" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].equal(wb[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_args):
    """The uninterrupted 2-rank run (ZeRO-1: each rank owns optimizer state on disk)."""
    base = tmp_path_factory.mktemp("reference")
    args = [*tiny_args, f"train.steps={STEPS}", "parallel.zero_stage=1", "checkpoint.every=1",
            "checkpoint.keep=2", "train.eval_every=0"]  # fmt: skip
    run(2, [*args, f"run.dir={base / 'run'}"], base / "logs")
    return base / "run", args


def stop_after(step: int, world: int, args: list[str], log_dir: Path) -> None:
    """Run until `step` is logged, then stop it as Slurm would (SIGUSR1: checkpoint, exit 75),
    so that the run keeps the schedule of the full run."""
    procs = launch(world, args, log_dir)
    run_dir = Path(next(a for a in args if a.startswith("run.dir=")).split("=", 1)[1])
    deadline = time.time() + 240
    while not any(r.get("step", 0) >= step for r in read_metrics(run_dir / "metrics.jsonl")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), read_logs(log_dir)
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    assert wait(procs, log_dir) == [75] * world, read_logs(log_dir)


def wait_for_training(log_dir: Path, procs, timeout: float = 240) -> bool:
    """Until rank 0 says it trains (False if the ranks ended first)."""
    deadline = time.time() + timeout
    log = log_dir / "rank0.log"
    while time.time() < deadline:
        if log.exists() and "[mbtrain] training" in log.read_text(errors="replace"):
            return True
        if any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.05)
    raise AssertionError(read_logs(log_dir))


def partial_saves(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return [
        p.name for p in root.iterdir()
        if step_of_tag(p.name) is not None and not (p / COMPLETE_MARKER).exists()
    ]  # fmt: skip


def wait_for_partial_save(root: Path, procs, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not partial_saves(root):
        if any(p.poll() is not None for p in procs):
            return
        time.sleep(0.002)


def test_sigkill_anywhere_resumes_to_identical_weights(reference, tmp_path):
    ref_dir, args = reference
    run_dir, rng = tmp_path / "run", random.Random(1234)
    report = {"kills": 0, "inside_save": 0, "both_at_once": 0, "one_then_other": 0, "restarts": 0}
    launches = 0
    while report["kills"] < KILLS:
        log_dir = tmp_path / f"logs{launches}"
        procs = launch(2, [*args, f"run.dir={run_dir}"], log_dir)
        launches += 1
        mode = rng.choice(["startup", "training", "save", "save"])
        if mode == "startup":
            time.sleep(rng.uniform(0.5, 6.0))  # imports, resume, set-asides
        elif wait_for_training(log_dir, procs):
            if mode == "save":  # the moment a save has begun, plus up to 50 ms
                wait_for_partial_save(run_dir / "checkpoints", procs)
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                time.sleep(rng.uniform(0.0, 1.5))
        report[mode] = report.get(mode, 0) + 1
        if any(p.poll() is not None for p in procs):
            codes = wait(procs, log_dir)
            assert codes == [0, 0], read_logs(log_dir)
            if (run_dir / "export").exists():
                break  # finished before this kill: start over the count on a fresh run
            continue
        victim = rng.randrange(2)
        if rng.random() < 0.5:
            for p in procs:
                p.send_signal(signal.SIGKILL)
            report["both_at_once"] += 1
        else:
            # One rank dies; the other is left waiting in a collective until the launcher
            # (srun --wait) ends it.
            procs[victim].send_signal(signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 1.5))
            procs[1 - victim].send_signal(signal.SIGKILL)
            report["one_then_other"] += 1
        for p in procs:
            p.wait()
        report["kills"] += 1
        root = run_dir / "checkpoints"
        if root.is_dir():
            report["inside_save"] += bool(partial_saves(root))
            latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
            if latest:
                assert checkpoint_problem(root / latest) is None, latest  # always loadable
        if (run_dir / "export").exists():
            break
    report["restarts"] = launches
    log_dir = tmp_path / "final"
    run(2, [*args, f"run.dir={run_dir}"], log_dir)
    print(f"\nfault injection: {report}")
    (tmp_path / "faults.json").write_text(json.dumps(report))
    assert report["kills"] == KILLS, report  # all of them before the run could finish
    assert report["inside_save"] >= 5, report  # the point of the exercise
    assert losses(run_dir) == losses(ref_dir)
    assert_same_weights(run_dir, ref_dir)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(reference, tmp_path, tiny_args):
    ref_dir, args = reference
    run_dir = tmp_path / "run"
    stop_after(3, 2, [*args, f"run.dir={run_dir}"], tmp_path / "first")
    latest = (run_dir / "checkpoints" / LATEST).read_text().strip()
    saved = step_of_tag(latest)
    # Rank 1 can write nothing bigger than 1 MiB: its ZeRO-1 optimizer shard (2.5 MB) does not fit.
    log_dir = tmp_path / "full"
    procs = launch(
        2,
        [*args, f"run.dir={run_dir}"],
        log_dir,
        script=[sys.executable, str(HERE / "limited_train.py")],
        extra_env={"FSIZE_LIMIT_RANK": "1", "FSIZE_LIMIT": str(1 << 20)},
    )
    codes = wait(procs, log_dir, ok=(1,))
    log = read_logs(log_dir)
    assert codes == [1, 1], log  # both ranks stop; neither hangs in a barrier
    assert "could not be written" in log and "File too large" in log, log
    assert "is intact and still the latest" in log and "Traceback" not in log
    root = run_dir / "checkpoints"
    assert (root / LATEST).read_text().strip() == latest
    assert checkpoint_problem(root / latest) is None
    assert not (root / tag_for_step(saved + 1)).exists()  # the failed save's space is freed
    run(2, [*args, f"run.dir={run_dir}"], tmp_path / "resumed")
    assert f"resumed from {root / latest}" in (tmp_path / "resumed" / "rank0.log").read_text()
    assert losses(run_dir) == losses(ref_dir)
    assert_same_weights(run_dir, ref_dir)


def test_damaged_shard_of_one_rank_falls_back_on_both(reference, tmp_path):
    """Rank 1's optimizer shard of the newest checkpoint is cut short: the ranks agree (each
    checks its share) and both resume from the previous checkpoint."""
    ref_dir, args = reference
    run_dir = tmp_path / "run"
    stop_after(5, 2, [*args, f"run.dir={run_dir}"], tmp_path / "first")
    root = run_dir / "checkpoints"
    newest = root / (root / LATEST).read_text().strip()
    shard = next(newest.glob("*zero_pp_rank_1_*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[:-100])
    run(2, [*args, f"run.dir={run_dir}"], tmp_path / "resumed")
    log = (tmp_path / "resumed" / "rank0.log").read_text()
    assert "cannot be loaded" in log and shard.name in log, log
    assert f"resumed from {root / tag_for_step(step_of_tag(newest.name) - 1)}" in log
    assert losses(run_dir) == losses(ref_dir)
    assert_same_weights(run_dir, ref_dir)
    assert any(p.name.startswith(newest.name + ".corrupt-") for p in newest.parent.iterdir())


def test_second_trainer_is_refused_and_the_first_goes_on(reference, tmp_path):
    _, args = reference
    run_dir = tmp_path / "run"
    args = [*args, f"run.dir={run_dir}", "train.steps=100000", "checkpoint.every=20"]
    first = launch(2, args, tmp_path / "first")
    try:
        deadline = time.time() + 240
        while not any("loss" in r for r in read_metrics(run_dir / "metrics.jsonl")):
            assert time.time() < deadline, read_logs(tmp_path / "first")
            time.sleep(0.1)
        config = (run_dir / "config.yaml").read_text()
        run(2, [*args, "train.seed=3"], tmp_path / "second", expect=1)
        log = read_logs(tmp_path / "second")
        assert "another trainer is using this run directory" in log, log
        assert f"pid {first[0].pid}" in log and "Traceback" not in log
        assert (run_dir / "config.yaml").read_text() == config
        assert all(p.poll() is None for p in first)
    finally:
        for p in first:
            p.send_signal(signal.SIGUSR1)  # checkpoint and stop, as Slurm would
    assert wait(first, tmp_path / "first") == [75, 75], read_logs(tmp_path / "first")
    steps = sorted(losses(run_dir))
    assert steps == list(range(1, steps[-1] + 1))  # nothing truncated or written twice
    # The lock went with the first trainer's processes: a restart resumes at once.
    run(2, [*args[:-2], f"train.steps={steps[-1] + 2}"], tmp_path / "third")
    assert "resumed from" in read_logs(tmp_path / "third")
