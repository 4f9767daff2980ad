"""A real finished run (DeepSpeed, 1 process, tiny model) with checkpoints at steps 2, 4, 6,
trained once per session; tests copy it before changing anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.launch import run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_args) -> tuple[Path, list[str]]:
    """(run directory, training args without run.dir) of a 6-step run, checkpoint every 2."""
    base = tmp_path_factory.mktemp("trained")
    args = [*tiny_args, "train.steps=6", "checkpoint.every=2", "checkpoint.keep=5"]
    run(1, [*args, f"run.dir={base / 'run'}"], base / "logs")
    return base / "run", args


@pytest.fixture
def run_copy(trained_run, tmp_path) -> tuple[Path, list[str]]:
    """A private copy of the trained run (same args)."""
    src, args = trained_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".mbtrain.lock"))
    return dst, args
