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


def test_samples_go_to_samples_jsonl_and_the_console(tmp_path, caplog):
    log = TrainLog(0, tmp_path, LoggingConfig(), "t", {}, 0, "x", 4, 2, 1.0, 1.0, "cpu",
                   sample_prompt="def ")  # fmt: skip
    with caplog.at_level("INFO", logger="mbtrain.monitor.train_log"):
        log.evaluation(
            {"step": 2, "val_loss": 0.7, "val_bpb": 1.0, "sample": "def f(x):\n\treturn"}
        )
        log.evaluation({"step": 4, "val_loss": 0.6, "val_bpb": 0.9, "sample": "def " + "y" * 500})
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 2, "sample": "f(x):\n\treturn", "prompt": "def "}
    assert rows[1]["step"] == 4 and rows[1]["sample"] == "y" * 500  # the file keeps all of it
    lines = [r.getMessage() for r in caplog.records if "sample" in r.getMessage()]
    # One line per sample: escaped, the prompt apart, long text cut with what was left out.
    assert lines[0] == 'step 2: sample "def " -> "f(x):\\n\\treturn"'
    assert all("\n" not in line for line in lines)
    assert lines[1].endswith(f'"{"y" * 240}"... (+260 chars)')


def test_a_resumed_run_drops_the_samples_after_its_checkpoint(tmp_path):
    (tmp_path / "samples.jsonl").write_text(
        "".join(json.dumps({"step": s, "sample": "a", "prompt": ""}) + "\n" for s in (2, 4, 6))
    )
    log = _log(tmp_path, resume_step=4, total=10)
    log.close()  # no sample since the resume: the leftovers after step 4 are gone all the same
    assert [r["step"] for r in read_metrics(tmp_path / "samples.jsonl")] == [2, 4]


def test_no_samples_no_samples_file(tmp_path):
    log = _log(tmp_path)
    log.evaluation({"step": 5, "val_loss": 0.7, "val_bpb": 1.0})
    log.close()
    assert not (tmp_path / "samples.jsonl").exists()


def test_one_line_escapes_controls_keeps_unicode():
    from mbtrain.monitor.samples import one_line

    assert one_line('é "q" \x1b[2J\\') == '"é \\"q\\" \\x1b[2J\\\\"'
    assert one_line("abcdef", 3) == '"abc"... (+3 chars)'


def test_tensorboard_setting_is_checked(monkeypatch):
    import importlib.util

    assert LoggingConfig(tensorboard=True).validate() == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    (problem,) = LoggingConfig(tensorboard=True).validate()
    assert problem.startswith("logging.tensorboard:") and "pip install tensorboard" in problem
    assert LoggingConfig(tensorboard=False).validate() == []


def test_the_last_sample_is_found_however_long(tmp_path):
    from mbtrain.monitor.samples import read_last_sample

    path = tmp_path / "samples.jsonl"
    assert read_last_sample(path) is None
    rows = [{"step": s, "sample": c * 300_000, "prompt": ""} for s, c in ((2, "a"), (4, "b"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "sam')  # torn
    assert read_last_sample(path) == rows[1]
