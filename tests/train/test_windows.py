"""Windows that grow during a run (`train.seq_len_schedule`): one dataset, prepared at the
longest window, the model unchanged; the switch happens at the scheduled step, and a run
stopped before or after it resumes bit for bit."""

from __future__ import annotations

import signal

import pytest

from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import launch, read_logs, run, wait
from tests.train.test_resume import losses, wait_for_step

pytestmark = [pytest.mark.slow, pytest.mark.dist]
SCHEDULE = "train.seq_len_schedule=[[0,64],[4,128]]"


def test_scheduled_windows_switch_and_resume_bit_exact(tiny_args, tmp_path):
    args = [*tiny_args, "train.steps=8", SCHEDULE, "checkpoint.every=0", "parallel.zero_stage=1"]
    ref = tmp_path / "ref"
    run(2, [*args, f"run.dir={ref}"], tmp_path / "ref_logs")
    log = read_logs(tmp_path / "ref_logs")
    assert "step 5: training windows of 128 bytes (train.seq_len_schedule)" in log, log
    # Bytes per step double at the switch (micro-batch 2 x 2 ranks x the window).
    rows = {r["step"]: r for r in read_metrics(ref / "metrics.jsonl") if "loss" in r}
    assert rows[4]["bytes_seen"] - rows[3]["bytes_seen"] <= 4 * 64
    assert rows[6]["bytes_seen"] - rows[5]["bytes_seen"] > 4 * 64
    # Stopped before the switch (the resumed loader starts at 64, switches at step 5), and
    # stopped after it (resumed at 128 from a position saved at 128).
    for stop_at in (2, 6):
        stopped = tmp_path / f"stopped{stop_at}"
        procs = launch(2, [*args, f"run.dir={stopped}"], tmp_path / f"l{stop_at}")
        wait_for_step(stopped, stop_at, procs, tmp_path / f"l{stop_at}")
        for p in procs:
            p.send_signal(signal.SIGUSR1)
        assert wait(procs, tmp_path / f"l{stop_at}") == [75, 75]
        run(2, [*args, f"run.dir={stopped}"], tmp_path / f"r{stop_at}")
        assert losses(stopped) == losses(ref), stop_at


def test_a_window_the_layout_cannot_run_is_refused(tiny_args, tmp_path):
    from mbtrain.errors import ConfigError
    from mbtrain.train.run_config import check_layout, load_config

    over = [f"run.dir={tmp_path}", "train.seq_len_schedule=[[0,60],[3,256]]"]
    cfg = load_config(tiny_args[0], [*tiny_args[1:], *over])
    with pytest.raises(ConfigError) as e:
        check_layout(cfg, 1)
    assert "window 60 (step 0) must be a multiple of 8" in str(e.value)
    assert "window 256 (step 3) is longer than model.seq_len (128)" in str(e.value)
    with pytest.raises(ConfigError, match="steps must start at 0 and increase"):
        load_config(tiny_args[0], [*tiny_args[1:], "train.seq_len_schedule=[[5,64]]"])
