"""Where a run's numbers go: rows at `log_every` and at the last step, throughput over the
steps since the last row only, evaluation rows beside them, a resumed run's file truncated
to its step."""

from __future__ import annotations

import json

from mbtrain.monitor.config import LoggingConfig
from mbtrain.monitor.metrics import read_metrics
from mbtrain.monitor.train_log import TrainLog


def _log(tmp_path, resume_step=0, total=5):
    return TrainLog(
        rank=0, run_dir=tmp_path, cfg=LoggingConfig(), run_name="t", config={},
        resume_step=resume_step, wandb_id="x", total_steps=total, log_every=2,
        flops_per_byte=10.0, total_peak=1000.0, device="cpu",
    )  # fmt: skip


def test_rows_at_log_every_and_the_last_step(tmp_path):
    log = _log(tmp_path)
    for step in range(1, 6):
        log.record(step, loss=1.0, nbytes=100.0, grad_norm=None, seconds=0.5, lr=0.1,
                   bytes_seen=100 * step, elapsed_s=step)  # fmt: skip
    log.evaluation({"step": 5, "val_loss": 0.7, "val_bpb": 1.0, "sample": "hi"})
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 5, 5]
    # Throughput of the steps since the previous row: 2 x 100 bytes in 2 x 0.5 s, then 1 step.
    assert rows[0]["bytes_per_s"] == 200.0 and rows[2]["bytes_per_s"] == 200.0
    assert rows[0]["mfu"] == 200.0 * 10.0 / 1000.0
    assert "sample" not in rows[3] and rows[3]["val_bpb"] == 1.0


def test_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 9))
    )
    log = _log(tmp_path, resume_step=4, total=10)
    log.record(6, 1.0, 1.0, None, 0.1, 0.1, 6, 6)
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 6]


def test_other_ranks_write_nothing(tmp_path):
    log = TrainLog(1, tmp_path, LoggingConfig(), "t", {}, 0, "x", 2, 1, 1.0, 1.0, "cpu")
    log.record(1, 1.0, 1.0, None, 0.1, 0.1, 1, 1)
    log.close()
    assert not (tmp_path / "metrics.jsonl").exists()
