"""The wheel is complete: installed (not editable) in a fresh venv outside the checkout, it
renders a Slurm batch script from its own templates (package data)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_wheel_installed_outside_the_checkout_renders_a_batch_script(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(REPO)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    wheels = list(dist.glob("mbtrain-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # Only what `submit --dry-run` needs: config loading never imports torch or DeepSpeed.
    pins = [
        line.strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.split("==")[0].strip().lower() in ("omegaconf", "pyyaml", "antlr4-python3-runtime")
    ]
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", wheels[0], *pins], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    recipe = work / "r.yaml"
    recipe.write_text((REPO / "recipes" / "tiny_cpu.yaml").read_text())
    # submit checks the recipe's datasets before anything is written: a prepared split's
    # markers (no shards needed to check them).
    for split in ("train", "val"):
        d = work / "runs" / "data" / "pystdlib" / split
        d.mkdir(parents=True)
        (d / "mbtrain.json").write_text('{"complete": true, "seq_len": 512, "samples": 1}')
        (d / "index.json").write_text('{"version": 2, "shards": []}')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [env_dir / "bin" / "mbtrain", "submit", str(recipe), f"run.dir={work / 'run'}",
         "cluster.time=02:00:00", "--dry-run"],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --time=02:00:00" in out.stdout
    assert "#SBATCH --requeue" in out.stdout and "--signal=B:USR1@" in out.stdout
    # The installed package, not the checkout, answered.
    where = subprocess.run(
        [py, "-c", "import mbtrain, sys; sys.stdout.write(mbtrain.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(env_dir) in where and str(REPO) not in where
