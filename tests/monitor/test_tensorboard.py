"""`logging.tensorboard=true`: a real training run writes TensorBoard event files under
<run_dir>/tensorboard/ (every metrics row's numbers as scalars, the samples as text) on the
step axis of metrics.jsonl; a resumed run hides what was logged after its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mbtrain.monitor.config import LoggingConfig
from mbtrain.monitor.metrics import read_metrics
from mbtrain.monitor.tensorboard_logger import TensorBoardLogger
from tests.support.launch import REPO, run


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _text(event) -> str:
    return event.tensor_proto.string_val[0].decode()


@pytest.mark.slow
def test_a_training_run_writes_scalars_and_samples(tiny_args, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "train.steps=4", "train.log_every=1", "train.eval_every=2", "train.sample_bytes=24",
        "train.sample_prompt=def", "logging.tensorboard=true", "checkpoint.every=0",
    ]  # fmt: skip
    run(1, [*tiny_args, *overrides, f"run.dir={run_dir}"], tmp_path / "logs")
    acc = _events(run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in metrics if "loss" in r]
    val_rows = [r for r in metrics if "val_bpb" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [r["step"] for r in val_rows] == [2, 4]
    # Every number of every row, at the row's step, with the value metrics.jsonl holds.
    for key in ("loss", "bpb", "lr", "bytes_per_s", "bytes_seen", "elapsed_s"):
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train_rows], key
    assert [(e.step, e.value) for e in acc.Scalars("val_bpb")] == [
        (r["step"], pytest.approx(r["val_bpb"], rel=1e-6)) for r in val_rows
    ]
    # The samples: text at the evaluation steps, the same ones samples.jsonl holds.
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [2, 4]
    assert all(s["prompt"] == "def" and s["sample"] for s in samples)
    texts = acc.Tensors("sample/text_summary")
    assert [e.step for e in texts] == [2, 4]
    for event, sample in zip(texts, samples):
        assert "def" + sample["sample"] in _text(event)
    # The console showed them, one line each; `mbtrain status` shows the last one.
    log = (tmp_path / "logs" / "rank0.log").read_text(errors="replace")
    assert log.count(': sample "def" -> "') == 2, log
    status = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "status", str(run_dir)],
        capture_output=True, text=True, cwd=REPO, check=True,
    ).stdout  # fmt: skip
    assert 'sample:     step 4: "def' in status, status


def test_a_resumed_run_hides_the_steps_after_its_checkpoint(tmp_path):
    on = LoggingConfig(tensorboard=True)
    first = TensorBoardLogger(on, tmp_path, resume_step=0)
    for step in range(1, 7):
        first.log({"step": step, "loss": 1.0, "grad_norm": None, "note": "x"}, step)
    first.finish()
    again = TensorBoardLogger(on, tmp_path, resume_step=4)  # the checkpoint was at step 4
    for step in (5, 6):
        again.log({"step": step, "loss": 2.0}, step)
    again.finish()
    logged = [(e.step, e.value) for e in _events(tmp_path).Scalars("loss")]
    assert logged == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 2.0), (6, 2.0)]
    assert "grad_norm" not in _events(tmp_path).Tags()["scalars"]  # None is no scalar


def test_off_by_default_writes_nothing(tmp_path):
    logger = TensorBoardLogger(LoggingConfig(), tmp_path, resume_step=0)
    logger.log({"step": 1, "loss": 1.0}, 1)
    logger.finish()
    assert not (tmp_path / "tensorboard").exists()
