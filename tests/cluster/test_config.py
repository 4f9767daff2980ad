"""ClusterConfig validation: every problem at once, named cluster.<field>."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.cluster.config import ClusterConfig, parse_time

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("00:00:30", 30),
        ("01:00:00", 3600),
        ("48:00:00", 172800),
        ("2-00:00:00", 172800),
        ("1-12:30:15", 131415),
    ],
)
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        "60",
        "1:00",
        "01:60:00",
        "00:00:60",
        "1-24:00:00",
        "00:00:00",
        "1h",
        "",
        "01:00:00\n#SBATCH --x",
    ],
)
def test_parse_time_rejects(bad):
    with pytest.raises(ValueError):
        parse_time(bad)


def test_defaults_valid():
    assert ClusterConfig().validate() == []
    assert (
        ClusterConfig(
            nodes=4,
            tasks_per_node=8,
            gpus_per_node=8,
            partition="gpu",
            constraint="a100|h100",
            time="2-00:00:00",
        ).validate()
        == []
    )


def test_reports_every_problem():
    cfg = ClusterConfig(
        nodes=0,
        tasks_per_node=2,
        gpus_per_node=4,
        cpus_per_task=0,
        time="25:99",
        signal_seconds=0,
        partition="gpu\n#SBATCH --x",
        account="a b",
        sbatch_extra=["mem=0", "--x\n--y"],
        max_restarts=-1,
    )
    errors = cfg.validate()
    fields = {e.split(":")[0] for e in errors}
    assert fields >= {
        "cluster.nodes",
        "cluster.cpus_per_task",
        "cluster.tasks_per_node",
        "cluster.time",
        "cluster.signal_seconds",
        "cluster.partition",
        "cluster.account",
        "cluster.sbatch_extra[0]",
        "cluster.sbatch_extra[1]",
        "cluster.max_restarts",
    }, errors
    assert all(e.startswith("cluster.") for e in errors)


def test_signal_must_precede_time_limit():
    errors = ClusterConfig(time="00:01:00", signal_seconds=120).validate()
    assert errors and errors[0].startswith("cluster.signal_seconds")


def test_every_field_has_a_docstring():
    src = inspect.getsource(ClusterConfig).splitlines()
    for f in dataclasses.fields(ClusterConfig):
        i = next(n for n, line in enumerate(src) if line.strip().startswith(f"{f.name}:"))
        assert src[i + 1].strip().startswith('"""'), f.name


def test_time_limit_is_normalised_or_refused(tmp_path, tiny_dataset):
    assert ClusterConfig(time="1-02:03:04").time_limit == "1-02:03:04"
    assert ClusterConfig(time="30:00:00").time_limit == "1-06:00:00"
    errors = ClusterConfig(time="\n01:00:00").validate()
    assert errors and errors[0].startswith("cluster.time:")  # would end the #SBATCH block
    # An unquoted 12:00:00 in YAML arrives as the base-60 number 43200: say so.
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  train: x\ncluster:\n  time: 12:00:00\n")
    out = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "submit", str(recipe), "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and 'quote it: time: "12:00:00"' in out.stderr, out.stderr
    # On the command line it is a time, as the user means it.
    out = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "submit", str(recipe), "cluster.time=12:00:00",
         f"data.train={tiny_dataset}/train", "model.seq_len=128", f"run.dir={tmp_path / 'run'}",
         "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0 and "#SBATCH --time=12:00:00\n" in out.stdout, out.stderr


def test_submit_dry_run_checks_the_layout_of_the_job(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "submit", str(REPO / "recipes" / "tiny_cpu.yaml"),
         "parallel.tensor=3", "cluster.nodes=2", "cluster.tasks_per_node=2",
         f"run.dir={tmp_path / 'run'}", "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout
    assert "invalid parallel layout for 4 processes" in out.stderr
    assert "parallel.tensor (3)" in out.stderr and not (tmp_path / "run").exists()
