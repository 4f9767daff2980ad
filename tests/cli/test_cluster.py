"""`mbtrain submit | status | cancel` as registered by `mbtrain.cli.cluster.add_parsers`.

No Slurm here: a submit that must reach sbatch finds a stand-in on PATH that records its
arguments and answers a job id; the status of a run is read from its directory alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbtrain.checkpoint.paths import COMPLETE_MARKER
from mbtrain.cli.cluster import add_parsers, format_status, run_status
from mbtrain.errors import MbtrainError
from mbtrain.train.lock import RunDirLock

REPO = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mbtrain")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _fake_sbatch(tmp_path: Path) -> tuple[Path, Path]:
    """A directory holding an `sbatch` that logs its arguments and prints job id 4242."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$@" >> {log}\necho 4242\n')
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir, log


def test_status_json_and_text(tmp_path, capsys):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 3, "loss": 4.0, "bpb": 5.7, "bytes_per_s": 1e3, "eta_s": 60}\n'
    )
    args = _parse(["status", str(run), "--json"])
    assert args.func(args) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["step"] == 3 and status["job_id"] is None
    args = _parse(["status", "--root", str(tmp_path)])  # no RUN_DIR: recent runs under --root
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "never submitted" in out and "r1" in out


def test_status_of_a_local_run(tmp_path, capsys):
    """A run trained without Slurm: steps as done/total, whether a trainer holds the run
    directory (its lock), and the speed in units that fit (430 B/s, not 0.000 MB/s)."""
    run = tmp_path / "local"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  steps: 200\n")
    (run / "metrics.jsonl").write_text(
        '{"step": 30, "loss": 4.0, "bpb": 5.77, "bytes_per_s": 430.0, "eta_s": 3725}\n'
    )
    lock = RunDirLock(run).acquire()  # what rank 0 of a trainer holds while it runs
    try:
        args = _parse(["status", str(run)])
        assert args.func(args) == 0
        text = capsys.readouterr().out
        assert f"trainer:    running (pid {os.getpid()} on " in text, text
        args = _parse(["status", str(run), "--json"])
        assert args.func(args) == 0
        status = json.loads(capsys.readouterr().out)
        assert str(os.getpid()) in status["trainer"] and status["total_steps"] == 200
    finally:
        lock.release()
    text = format_status(run_status(run))
    assert text.splitlines() == [
        f"local  ({run})",
        "  job:        never submitted",
        "  trainer:    not running",
        "  step:       30/200   loss 4.0000   bpb 5.7700   val bpb -",
        "  speed:      430.0 B/s   ETA 1:02:05",
        "  checkpoint: none",
    ]
    (run / "config.yaml").unlink()  # total unknown: the step alone
    assert "  step:       30   loss" in format_status(run_status(run))


def test_status_without_slurm_record(tmp_path):
    """Once Slurm forgot the job, the run directory alone answers."""
    run_dir = tmp_path / "old"
    (run_dir / "slurm").mkdir(parents=True)
    (run_dir / "slurm" / "jobs.jsonl").write_text(
        json.dumps({"job_id": "99999999", "kind": "train"}) + "\n"
    )
    (run_dir / "slurm" / "events.jsonl").write_text(
        json.dumps({"job_id": "99999999", "restart": 1, "action": "done", "rc": 0}) + "\n"
    )
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 2.5, "bpb": 3.6, "bytes_per_s": 5e6, "eta_s": 0}\n'
        '{"step": 10, "val_bpb": 3.7}\n'
    )
    (run_dir / "checkpoints" / "step00000010").mkdir(parents=True)
    (run_dir / "checkpoints" / "step00000010" / COMPLETE_MARKER).write_text("{}")
    (run_dir / "checkpoints" / "step00000011").mkdir()  # a save cut short: no marker
    (run_dir / "checkpoints" / "latest").write_text("step00000011\n")
    status = run_status(run_dir)
    assert status["source"] == "run_dir" and status["state"] == "COMPLETED"
    assert (status["step"], status["loss"], status["val_bpb"], status["checkpoint"]) == (
        10,
        2.5,
        3.7,
        "step00000010",
    )
    text = format_status(status)
    assert "5.0 MB/s" in text and "step00000010" in text
    assert "trainer:" not in text  # a Slurm run: its job's state says whether it runs


def test_cancel_without_jobs_is_a_user_error(tmp_path):
    args = _parse(["cancel", str(tmp_path)])
    with pytest.raises(MbtrainError, match="no job recorded"):
        args.func(args)


def test_submit_dry_run(tmp_path, capsys, tiny_args):
    args = _parse(
        [
            "submit",
            *tiny_args,
            f"run.dir={tmp_path}/run",
            "run.name=$(touch x)",
            "cluster.tasks_per_node=2",
            "--dry-run",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --ntasks-per-node=2" in out
    assert "export MBTRAIN_RUN_NAME='$(touch x)'" in out
    assert "mbtrain.cli.main train" in out and not (tmp_path / "run").exists()


def test_submit_writes_absolute_paths(tmp_path, tiny_args, tiny_dataset, monkeypatch, capsys):
    """The job starts in its run directory: relative data paths and a relative run.dir
    (`runs/${run.name}` by default) are made absolute against the submitting shell's cwd."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").symlink_to(tiny_dataset)
    bin_dir, log = _fake_sbatch(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    cwd = Path.cwd()
    overrides = ["data.train=data/x/train", "data.val=data/x/val", "run.name=y"]
    args = _parse(["submit", *tiny_args, *overrides])
    assert args.func(args) == 0
    run_dir = cwd / "runs" / "y"
    assert f"submitted job 4242 for run 'y' in {run_dir}" in capsys.readouterr().out
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["run"]["dir"] == str(run_dir)
    assert cfg["data"]["train"] == str(cwd / "data" / "x" / "train")
    assert cfg["data"]["val"] == str(cwd / "data" / "x" / "val")
    assert cfg["checkpoint"]["resume"] == "auto"  # a word, not a path
    script = (run_dir / "slurm" / "train.sbatch").read_text()
    assert f"train {run_dir / 'config.yaml'}" in script
    assert log.read_text().split()[-1] == str(run_dir / "slurm" / "train.sbatch")


@pytest.mark.parametrize(
    "data, error",
    [
        ("data/missing", "data/missing/train: no prepared dataset here"),
        (None, "prepared with seq_len 128, shorter than the model's seq_len 512"),
    ],
    ids=["missing", "too-short"],
)
def test_submit_checks_the_data_first(tmp_path, tiny_args, tiny_dataset, data, error):
    """An unusable dataset is one line, before anything is written or submitted (also in a
    dry run): the job would otherwise fail minutes later, after its allocation."""
    bin_dir, log = _fake_sbatch(tmp_path)
    data = data or str(tiny_dataset)
    argv = ["submit", *tiny_args, f"data.train={data}/train", "model.seq_len=512", "run.name=y"]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    for extra in ([], ["--dry-run"]):
        out = subprocess.run(
            [sys.executable, "-m", "mbtrain.cli.main", *argv, *extra],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stderr.count("\n") == 1 and error in out.stderr, out.stderr
        assert not (tmp_path / "runs").exists() and not log.exists()


def test_status_shows_the_last_sample(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 4, "loss": 4.0, "bpb": 5.7}\n')
    rows = [{"step": 2, "sample": "old", "prompt": ""},
            {"step": 4, "sample": "x = 1\n" * 50, "prompt": "def "}]  # fmt: skip
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = run_status(run)
    assert status["sample"] == rows[1]
    line = next(ln for ln in format_status(status).splitlines() if "sample:" in ln)
    assert line.startswith('  sample:     step 4: "def x = 1\\nx = 1\\n') and "chars)" in line
    assert len(line) < 160  # a glance: samples.jsonl holds the whole text
    (run / "samples.jsonl").unlink()
    assert run_status(run)["sample"] is None
    assert "sample:" not in format_status(run_status(run))
