"""The trainer resumes a checkpoint saved with another parallel layout (checkpoint.reshard)."""

from __future__ import annotations

import shutil

import pytest

from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import read_logs, run

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def train_losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_tp2_checkpoint_resumes_at_tp1_with_the_same_losses(tiny_args, tmp_path):
    args = [*tiny_args, "train.steps=4", "checkpoint.every=2", "parallel.zero_stage=1"]
    ref = tmp_path / "tp2"
    run(2, [*args, "parallel.tensor=2", f"run.dir={ref}"], tmp_path / "l1")
    ref_losses = train_losses(ref)

    # A copy of the TP=2 run as it was at step 2, continued by one process (TP=1).
    resumed = tmp_path / "tp1"
    resumed.mkdir()
    shutil.copytree(ref / "checkpoints" / "step00000002", resumed / "checkpoints" / "step00000002")
    (resumed / "checkpoints" / "latest").write_text("step00000002")
    run(1, [*args, f"run.dir={resumed}"], tmp_path / "l2")
    log = read_logs(tmp_path / "l2")
    assert "resharding" in log and "tensor 2" in log
    got = train_losses(resumed)
    assert sorted(got) == [3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(ref_losses[step], abs=1e-5)


def test_reshard_off_is_a_clear_error(tiny_args, tmp_path):
    args = [*tiny_args, "train.steps=2", "checkpoint.every=1", "data.num_workers=0"]
    src = tmp_path / "dp2"
    run(2, [*args, f"run.dir={src}"], tmp_path / "l1")
    run(
        1,
        [*args, "train.steps=3", "checkpoint.reshard=false", f"run.dir={src}"],
        tmp_path / "l2",
        expect=1,
    )
    log = read_logs(tmp_path / "l2")
    assert "saved with another layout" in log and "checkpoint.reshard=true" in log
    assert "Traceback" not in log


def _continue_from(src, step: int, dst, world: int, args: list[str], log_dir) -> dict:
    tag = f"step{step:08d}"
    dst.mkdir()
    shutil.copytree(src / "checkpoints" / tag, dst / "checkpoints" / tag)
    (dst / "checkpoints" / "latest").write_text(tag)
    run(world, [*args, f"run.dir={dst}"], log_dir)
    assert "resharding" in read_logs(log_dir)
    return train_losses(dst)


def test_context_parallel_checkpoints_resume_in_other_layouts(tiny_args, tmp_path):
    """CP=2 and CP=1 train alike; a CP=2 checkpoint continues at CP=1 and the reverse, with the
    losses of the uninterrupted CP=1 run (same data position: the batches are the same)."""
    args = [*tiny_args, "train.steps=4", "checkpoint.every=2", "parallel.zero_stage=1"]
    cp1, cp2 = tmp_path / "cp1", tmp_path / "cp2"
    run(1, [*args, f"run.dir={cp1}"], tmp_path / "l1")
    run(2, [*args, "parallel.context=2", f"run.dir={cp2}"], tmp_path / "l2")
    ref = train_losses(cp1)
    assert sorted(ref) == [1, 2, 3, 4]
    got = train_losses(cp2)
    for step in ref:
        assert got[step] == pytest.approx(ref[step], abs=1e-5), (step, got, ref)
    to_cp1 = _continue_from(cp2, 2, tmp_path / "to_cp1", 1, args, tmp_path / "l3")
    to_cp2 = _continue_from(
        cp1, 2, tmp_path / "to_cp2", 2, [*args, "parallel.context=2"], tmp_path / "l4"
    )
    for got in (to_cp1, to_cp2):
        assert sorted(got) == [3, 4]
        for step in (3, 4):
            assert got[step] == pytest.approx(ref[step], abs=1e-5), (step, got, ref)
