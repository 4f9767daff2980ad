"""`mbtrain submit` fails closed: it asks Slurm before it writes, and writes nothing it cannot
submit.

A job of the run still queued or running would have code/ and config.yaml replaced under
it, so when Slurm cannot be asked (scontrol missing, failing, hanging) submit refuses instead
of reading the silence as "no job". And without sbatch, nothing lands in the run directory.
The Slurm tests use the local cluster (cluster/slurm_up.sh); scontrol failures are real
processes: small scripts that shadow scontrol on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.cli.cluster import _refuse_if_busy
from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.status import SlurmUnavailable, active_jobs
from mbtrain.cluster.submit import SubmitError, submit, submit_prepare_array

REPO = Path(__file__).resolve().parents[2]
CPU = ClusterConfig(time="00:10:00", signal_seconds=30)


def _bin(tmp_path: Path, **scripts: str) -> Path:
    """A directory of executables: name -> bash body, or '->/path' for a link."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name, body in scripts.items():
        if body.startswith("->"):
            (d / name).symlink_to(body[2:])
        else:
            (d / name).write_text(f"#!/bin/bash\n{body}\n")
            (d / name).chmod(0o755)
    return d


@pytest.fixture
def recipe(tmp_path, tiny_dataset):
    """`recipe(run_dir) -> path`: a recipe of `run_dir` on the tiny dataset (submit checks it
    before it asks Slurm anything)."""

    def write(run_dir: Path) -> Path:
        path = tmp_path / "r.yaml"
        model = "model:\n  seq_len: 128\n"
        path.write_text(f"{model}data:\n  train: {tiny_dataset}/train\nrun:\n  dir: {run_dir}\n")
        return path

    return write


def _mbtrain(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *args], capture_output=True, text=True, env=env
    )


def _record(run_dir: Path, job_id: str) -> None:
    (run_dir / "slurm").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "slurm" / "jobs.jsonl", "a") as f:
        f.write(json.dumps({"job_id": job_id, "kind": "train"}) + "\n")


def test_nothing_is_written_without_sbatch(tmp_path, monkeypatch, recipe):
    run_dir = tmp_path / "run"
    empty = _bin(tmp_path)  # no sbatch, no scontrol
    out = _mbtrain("submit", str(recipe(run_dir)), path=str(empty))
    assert out.returncode == 1, out.stderr
    assert "sbatch not found" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not run_dir.exists()
    # The library too, for training and data-preparation jobs.
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SubmitError, match="sbatch not found"):
        submit(run_dir, CPU, ["true"])
    with pytest.raises(SubmitError, match="sbatch not found"):
        submit_prepare_array(run_dir, CPU, ["true"], ["true"], workers=2)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "scontrol, why",
    [
        ("echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1", "exit"),
        ("exit 1", "exit status 1"),
        ("echo 'JobId=1 JobState=PENDING'; exit 0", None),  # answers: the job is busy
        (None, "scontrol not found"),
    ],
    ids=["no-controller", "silent-failure", "answers", "missing"],
)
def test_submit_refuses_when_slurm_cannot_be_asked(tmp_path, recipe, scontrol, why):
    """A recorded job and a Slurm that cannot say whether it is over: refuse, write nothing."""
    run_dir = tmp_path / "run"
    _record(run_dir, "4242")
    tools = {"sbatch": "echo 99; exit 0"}
    if scontrol is not None:
        tools["scontrol"] = scontrol
    out = _mbtrain("submit", str(recipe(run_dir)), path=str(_bin(tmp_path, **tools)))
    assert out.returncode == 1, out.stdout + out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--force" in err
    if why:
        assert "cannot ask Slurm" in err and why in err, err
    else:
        assert "job 4242 (PENDING)" in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == ["slurm"]
    assert [p.name for p in (run_dir / "slurm").iterdir()] == ["jobs.jsonl"]


def test_submit_force_and_unknown_job_go_ahead(tmp_path, recipe):
    """`--force` skips the question; Slurm saying "Invalid job id" means the job is over."""
    run_dir = tmp_path / "run"
    _record(run_dir, "4242")
    log = tmp_path / "sbatch.log"
    sbatch = f'echo "$@" >> {log}; echo 99'
    for scontrol, extra in (
        ("exit 1", ["--force"]),
        ("echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1", []),
    ):
        shutil.rmtree(tmp_path / "bin", ignore_errors=True)
        bin_dir = _bin(tmp_path, scontrol=scontrol, sbatch=sbatch)
        out = _mbtrain("submit", str(recipe(run_dir)), *extra, path=str(bin_dir))
        assert out.returncode == 0, out.stderr
        assert "submitted job 99" in out.stdout
    assert (run_dir / "config.yaml").is_file() and len(log.read_text().splitlines()) == 2


def test_scontrol_that_hangs_is_a_refusal(tmp_path, monkeypatch):
    import mbtrain.cluster.status as status

    run_dir = tmp_path / "run"
    _record(run_dir, "4242")
    monkeypatch.setenv("PATH", str(_bin(tmp_path, scontrol=f"exec {shutil.which('sleep')} 30")))
    monkeypatch.setattr(status, "SCONTROL_TIMEOUT_S", 0.5)
    with pytest.raises(SlurmUnavailable, match=r"did not answer within 0\.5 s"):
        active_jobs(run_dir)
    with pytest.raises(SubmitError, match=r"cannot ask Slurm.*--force"):
        _refuse_if_busy(run_dir)


@pytest.mark.slurm
def test_real_slurm_busy_unknown_and_broken(slurm_cluster, tmp_path, wait_job, recipe):
    """On the local cluster: a held job refuses; a failing scontrol refuses (it used to read
    as "job unknown" and let a second job in); a job Slurm never had lets submit go ahead."""
    run_dir = tmp_path / "busy"
    job_id = submit(run_dir, CPU, ["sleep", "300"], job_name="busy", sbatch_args=["--hold"])
    recipe_path = recipe(run_dir)
    path = os.environ["PATH"]
    try:
        assert active_jobs(run_dir) == [(job_id, "PENDING")]
        broken = _bin(tmp_path, scontrol="echo 'scontrol: error: broken' >&2; exit 1")
        out = _mbtrain("submit", str(recipe_path), path=f"{broken}:{path}")
        assert out.returncode == 1 and "cannot ask Slurm" in out.stderr, out.stderr
        assert "scontrol: error: broken" in out.stderr and "--force" in out.stderr
        assert not (run_dir / "config.yaml").exists()
        assert len((run_dir / "slurm" / "jobs.jsonl").read_text().splitlines()) == 1
    finally:
        subprocess.run(["scancel", job_id])
    wait_job(job_id, timeout=60)
    gone = tmp_path / "gone"
    _record(gone, "99999999")  # Slurm answers "Invalid job id specified"
    assert active_jobs(gone) == []
    out = _mbtrain("submit", str(recipe(gone)), "--dry-run", path=path)
    assert out.returncode == 0, out.stderr
