"""Every check before anything changes: a refused start (another model, another dataset,
`checkpoint.resume=none`, data that is missing or too short) is one line naming what differs
and leaves the run directory byte for byte as it was; data checked in `--dry-run` too; a
dataset that disappears mid-run stops the run with its path named and a checkpoint of the last
completed step; non-finite numbers in the config are config errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbtrain.checkpoint.paths import LATEST, tag_for_step
from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import launch, read_logs, run, wait

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a directory with its content (the lock file aside)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".mbtrain.lock"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_args) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("finished")
    args = [*tiny_args, "train.steps=2", "checkpoint.every=2"]
    run(1, [*args, f"run.dir={base / 'run'}"], base / "logs")
    return base / "run", args


@pytest.fixture
def run_copy(finished, tmp_path) -> tuple[Path, list[str]]:
    src, args = finished
    shutil.copytree(src, tmp_path / "run")
    return tmp_path / "run", args


def _other_dataset(tmp_path: Path) -> Path:
    from mbtrain.data import PrepareConfig, prepare

    src = tmp_path / "other_src"
    src.mkdir()
    for i in range(12):
        (src / f"{i}.txt").write_text(f"another corpus, file {i}\n" * 40)
    prepare(PrepareConfig(inputs=[str(src)], out=str(tmp_path / "other"), seq_len=128,
                          val_fraction=0.2, progress=False))  # fmt: skip
    return tmp_path / "other"


@pytest.mark.parametrize(
    "change, expected",
    [
        (["model.global_dim=32", "model.local_layers=2"],
         "model.global_dim: 16 -> 32; model.local_layers: 1 -> 2"),
        (["checkpoint.resume=none"], "holds checkpoints but checkpoint.resume=none"),
        (["checkpoint.reshard=false", "parallel.zero_stage=1"], "saved with another layout"),
    ],
    ids=["model", "resume_none", "layout"],
)  # fmt: skip
def test_a_refused_resume_changes_nothing(run_copy, change, expected, tmp_path):
    run_dir, args = run_copy
    before = snapshot(run_dir)
    log_dir = tmp_path / "logs"
    run(1, [*args, f"run.dir={run_dir}", "train.steps=4", *change], log_dir, expect=1)
    log = read_logs(log_dir)
    assert expected in log and "Traceback" not in log, log
    errors = [ln for ln in log.splitlines() if "error:" in ln]
    assert len(errors) == 1, log  # one line, not a state-dict dump
    assert snapshot(run_dir) == before  # config.yaml included: the requeue command still works
    run(1, [*args, f"run.dir={run_dir}", "train.steps=3"], tmp_path / "again")


def test_another_dataset_is_refused_unless_restart_is_asked(run_copy, tmp_path):
    """The loader position belongs to the data it was saved with. A copy of the same dataset
    elsewhere is the same data; another dataset is refused, or with data.on_change=restart
    trains from its beginning."""
    run_dir, args = run_copy
    data_arg = next(a for a in args if a.startswith("data.train="))
    same = tmp_path / "moved"
    shutil.copytree(Path(data_arg.split("=", 1)[1]).parent, same)
    run(1, [*args, f"run.dir={run_dir}", "train.steps=3", f"data.train={same}/train"],
        tmp_path / "moved_logs")  # fmt: skip
    assert "resumed from" in read_logs(tmp_path / "moved_logs")
    other = _other_dataset(tmp_path)
    before = snapshot(run_dir)
    new = [f"run.dir={run_dir}", "train.steps=4", f"data.train={other}/train"]
    run(1, [*args, *new], tmp_path / "refused", expect=1)
    log = read_logs(tmp_path / "refused")
    assert "its data position belongs to other data" in log and "data.on_change=restart" in log
    assert snapshot(run_dir) == before
    run(1, [*args, *new, "data.on_change=restart"], tmp_path / "restarted")
    log = read_logs(tmp_path / "restarted")
    assert "the training data changed since this checkpoint; it starts from its beginning" in log
    assert "resumed from" in log
    # The next checkpoint records the new data: a requeue continues without the override.
    run(1, [*args, *new[:1], "train.steps=5", f"data.train={other}/train"], tmp_path / "requeue")


def test_missing_or_short_data_fails_before_anything_is_built(tiny_args, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_args, f"run.dir={run_dir}"]
    for bad, expected in (
        (f"data.train={tmp_path / 'nope'}/train", "no prepared dataset here"),
        ("model.seq_len=256", "shorter than the model's seq_len 256; re-run prepare with --seq-len 256"),
    ):  # fmt: skip
        out = cli("train", *args, bad)
        assert out.returncode == 1 and expected in out.stderr, out.stderr
        assert "training" not in out.stderr and "Traceback" not in out.stderr
        assert not (run_dir / "config.yaml").exists()
        out = cli("train", *args, bad, "--dry-run")
        assert out.returncode == 1 and expected in out.stderr, out.stderr


def test_dry_run_checks_the_data_and_names_the_checkpoint_it_would_resume(finished):
    run_dir, args = finished
    out = cli("train", *args, f"run.dir={run_dir}", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "# data: checked" in out.stdout
    assert f"# start: resume {run_dir / 'checkpoints' / tag_for_step(2)} (step 2)" in out.stdout


def test_non_finite_numbers_are_config_errors(tiny_args, tmp_path):
    for value in ("inf", "nan", "-inf"):
        out = cli("train", *tiny_args, f"run.dir={tmp_path}", f"optim.lr={value}", "--dry-run")
        assert out.returncode == 2 and "optim.lr: must be a finite number" in out.stderr


def test_a_dataset_deleted_mid_run_stops_with_its_path_and_a_checkpoint(tiny_args, tmp_path):
    """Shards read lazily (many small ones, a private cache): once the dataset and the cache
    are gone, the next read names the dataset, the last completed step is saved, exit 1."""
    from mbtrain.data import PrepareConfig, prepare

    stdlib = Path(os.__file__).parent
    data, cache, run_dir = tmp_path / "data", tmp_path / "cache", tmp_path / "run"
    prepare(PrepareConfig(inputs=[f"{stdlib}/email/*.py", f"{stdlib}/json/*.py"], out=str(data),
                          seq_len=128, size_limit=2048, val_fraction=0.1, progress=False))  # fmt: skip
    args = [*tiny_args, f"data.train={data}/train", f"data.val={data}/val", f"run.dir={run_dir}",
            f"data.local_cache={cache}", "train.steps=100000", "checkpoint.every=0"]  # fmt: skip
    procs = launch(1, args, tmp_path / "logs")
    deadline = time.time() + 240
    while not any(r.get("step", 0) >= 3 for r in read_metrics(run_dir / "metrics.jsonl")):
        assert time.time() < deadline and procs[0].poll() is None, read_logs(tmp_path / "logs")
        time.sleep(0.05)
    shutil.rmtree(data)
    shutil.rmtree(cache)
    assert wait(procs, tmp_path / "logs", ok=(1,)) == [1], read_logs(tmp_path / "logs")
    log = read_logs(tmp_path / "logs")
    assert f"{data}/train: the dataset can no longer be read" in log, log
    latest = (run_dir / "checkpoints" / LATEST).read_text().strip()
    last = max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r)
    assert latest == tag_for_step(last) and "checkpoint (data error)" in log
