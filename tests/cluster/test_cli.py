"""`mbtrain submit | status | cancel` as registered by `mbtrain.cluster.cli.add_parsers`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mbtrain.cluster.cli import add_parsers
from mbtrain.errors import MbtrainError

REPO = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mbtrain")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


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


def test_cancel_without_jobs_is_a_user_error(tmp_path):
    args = _parse(["cancel", str(tmp_path)])
    with pytest.raises(MbtrainError, match="no job recorded"):
        args.func(args)


def test_submit_dry_run(tmp_path, capsys):
    recipe = REPO / "recipes" / "tiny_cpu.yaml"
    args = _parse(
        [
            "submit",
            str(recipe),
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
