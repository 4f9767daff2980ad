"""Nothing a user does loses a run, and nothing in a checkpoint runs code: export refuses
directories it did not write, checkpoints load as data only, a damaged newest checkpoint is
set aside and the previous one used (training, eval and generate), a missing per-rank file
is never resumed without."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbtrain.checkpoint.integrity import checkpoint_problem
from mbtrain.checkpoint.paths import COMPLETE_MARKER, LATEST, tag_for_step
from mbtrain.checkpoint.serialization import load_torch_file, trusted_classes
from mbtrain.errors import CheckpointError
from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import read_logs, run

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *map(str, args)],
        capture_output=True, text=True, errors="replace", env=env, cwd=cwd,
    )  # fmt: skip


def tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- what is written


def test_every_file_written_is_data_and_listed_in_the_marker(trained_run):
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / tag_for_step(6)
    marker = json.loads((ckpt / COMPLETE_MARKER).read_text())
    listed = marker["files"]
    pts = sorted(p.name for p in ckpt.glob("*.pt"))
    assert sorted(listed) == pts and "mbtrain_rank0.pt" in listed
    trusted = {f"{c.__module__}.{c.__qualname__}" for c in trusted_classes()}
    for name, size in listed.items():
        assert (ckpt / name).stat().st_size == size
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt / name)))
        assert unsafe <= trusted, (name, unsafe - trusted)
        load_torch_file(ckpt / name)  # weights_only=True
    assert checkpoint_problem(ckpt) is None


# ----------------------------------------------------------------------------- export


def test_export_refuses_what_it_did_not_write(run_copy, tmp_path):
    run_dir, _ = run_copy
    before = tree(run_dir)
    out = cli("export", run_dir, "--out", run_dir)
    assert out.returncode == 1 and "not an mbtrain export" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert tree(run_dir) == before  # the whole run is still there
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    out = cli("export", run_dir, "--out", notes)
    assert out.returncode == 1 and (notes / "todo.txt").read_text() == "keep me"
    fresh = tmp_path / "fresh"
    assert cli("export", run_dir, "--out", fresh).returncode == 0
    assert cli("export", run_dir, "--out", fresh, "--step", "4").returncode == 0  # replaces
    assert json.loads((fresh / "model.json").read_text())["step"] == 4
    (fresh / "README").write_text("mine")
    out = cli("export", run_dir, "--out", fresh)
    assert out.returncode == 1 and "README" in out.stderr
    assert (fresh / "README").read_text() == "mine"
    out = cli("export", run_dir, "--out", fresh / "model.json" / "x")
    assert out.returncode == 1 and "is a file" in out.stderr


# ----------------------------------------------------------------------------- unpickling


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_run(tmp_path: Path, zipped: bool) -> tuple[Path, Path]:
    """A run directory whose only checkpoint runs `touch MARKER` when unpickled."""
    from mbtrain.model import ModelConfig

    run_dir, marker = tmp_path / "crafted", tmp_path / "pwned"
    ckpt = run_dir / "checkpoints" / tag_for_step(1)
    ckpt.mkdir(parents=True)
    import dataclasses

    (ckpt / COMPLETE_MARKER).write_text(
        json.dumps({"step": 1, "model": dataclasses.asdict(ModelConfig.tiny())})
    )
    torch.save(
        {"module": {"x": _Payload(marker)}},
        ckpt / "mp_rank_00_model_states.pt",
        _use_new_zipfile_serialization=zipped,
    )
    (run_dir / "checkpoints" / LATEST).write_text(tag_for_step(1))
    return run_dir, marker


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_crafted_checkpoint_never_runs_code(tmp_path, zipped):
    run_dir, marker = _crafted_run(tmp_path, zipped)
    for args in (
        ("generate", run_dir, "--max-bytes", "4"),
        ("eval", run_dir, REPO / "README.md", "--max-bytes", "100"),
        ("export", run_dir, "--out", tmp_path / "exp"),
    ):
        out = cli(*args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and "refused" in out.stderr, out.stderr
        assert not marker.exists(), f"{args[0]} ran the checkpoint's code"
    with pytest.raises(CheckpointError, match="refused"):
        load_torch_file(run_dir / "checkpoints" / tag_for_step(1) / "mp_rank_00_model_states.pt")
    assert not marker.exists()


def test_resume_from_a_crafted_path_is_refused(tmp_path, tiny_args):
    crafted, marker = _crafted_run(tmp_path, zipped=True)
    log_dir = tmp_path / "logs"
    run(
        1,
        [*tiny_args, f"run.dir={tmp_path / 'r'}", f"checkpoint.resume={crafted}"],
        log_dir,
        expect=1,
    )
    log = read_logs(log_dir)
    assert "refused" in log or "cannot be loaded" in log, log
    assert not marker.exists()


# ----------------------------------------------------------------------------- fallback


def _truncate(ckpt: Path) -> None:
    f = ckpt / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bad_marker(ckpt: Path) -> None:
    (ckpt / COMPLETE_MARKER).write_text('{"step": 6, "files": ')


def _no_rank_file(ckpt: Path) -> None:
    (ckpt / "mbtrain_rank0.pt").unlink()


def _flipped(ckpt: Path) -> None:
    f = ckpt / "mp_rank_00_model_states.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


DAMAGE = {
    "truncated": _truncate,
    "marker": _bad_marker,
    "rank_file": _no_rank_file,
    "flip": _flipped,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back(run_copy, tmp_path, damage):
    run_dir, args = run_copy
    root = run_dir / "checkpoints"
    newest = root / tag_for_step(6)
    DAMAGE[damage](newest)
    assert checkpoint_problem(newest) is not None
    # Training: one line says so, the damaged one is kept aside, the run resumes from step 4.
    log_dir = tmp_path / "logs"
    run(1, [*args, f"run.dir={run_dir}", "train.steps=8"], log_dir)
    log = read_logs(log_dir)
    assert "cannot be loaded" in log and "Traceback" not in log, log
    assert f"resumed from {root / tag_for_step(4)} at step 4" in log, log
    aside = [p.name for p in root.iterdir() if p.name.startswith(tag_for_step(6) + ".corrupt-")]
    assert len(aside) == 1
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 9)), steps
    assert (root / LATEST).read_text().strip() == tag_for_step(8)


def test_eval_and_generate_skip_a_damaged_newest_checkpoint(run_copy, tmp_path):
    run_dir, _ = run_copy
    (run_dir / "export").rename(tmp_path / "old-export")  # make them read checkpoints
    _truncate(run_dir / "checkpoints" / tag_for_step(6))
    out = cli("generate", run_dir, "--max-bytes", "8", "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert "cannot be loaded" in out.stderr and tag_for_step(4) in out.stderr
    out = cli("eval", run_dir, REPO / "README.md", "--max-bytes", "2000", "--mode", "basic",
              "-o", tmp_path / "e.json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Read-only commands leave the run directory as it is (a trainer may be running there).
    assert (run_dir / "checkpoints" / tag_for_step(6)).is_dir()


def test_generate_prefers_the_current_export(trained_run, monkeypatch):
    """The safetensors export of a finished run is what inference reads (no pickle at all)."""
    from mbtrain.checkpoint import consolidate

    run_dir, _ = trained_run
    called = []
    monkeypatch.setattr(consolidate, "find_checkpoint", lambda *a, **k: called.append(a))
    model = consolidate.load_model(run_dir)
    assert not called and model is not None


def test_a_file_outside_the_marker_list_is_never_opened(tiny_args, tmp_path):
    """A ZeRO-3 checkpoint with a pickle that runs `touch` dropped in as `a_model_states.pt`
    (not in the marker's list; DeepSpeed's own ZeRO-3 reader globs every *_model_states.pt):
    export, eval, generate and a resume all work from the listed files and never open it."""
    run_dir = tmp_path / "z3"
    args = [*tiny_args, "train.steps=2", "checkpoint.every=2", "parallel.zero_stage=3"]
    run(1, [*args, f"run.dir={run_dir}"], tmp_path / "logs0")
    (run_dir / "export").rename(tmp_path / "old-export")  # make them read the checkpoint
    ckpt = run_dir / "checkpoints" / tag_for_step(2)
    marker_file = tmp_path / "pwned"
    torch.save({"module": {"x": _Payload(marker_file)}}, ckpt / "a_model_states.pt")
    torch.save({"x": _Payload(marker_file)}, ckpt / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert json.loads((ckpt / COMPLETE_MARKER).read_text())["zero_stage"] == 3
    for args_ in (
        ("export", ckpt, "--out", tmp_path / "exp"),
        ("generate", run_dir, "--max-bytes", "4", "--seed", "0"),
        ("eval", run_dir, REPO / "README.md", "--max-bytes", "200", "--mode", "basic",
         "-o", tmp_path / "e.json"),
    ):  # fmt: skip
        out = cli(*args_)
        assert out.returncode == 0, (args_, out.stderr)
        assert not marker_file.exists(), f"{args_[0]} ran the dropped file's code"
    run(1, [*args, f"run.dir={run_dir}", "train.steps=3"], tmp_path / "logs1")
    assert f"resumed from {ckpt} at step 2" in read_logs(tmp_path / "logs1")
    assert not marker_file.exists()


def test_non_finite_weights_are_never_published(tiny_args, tmp_path):
    """Finite settings that blow the weights up in one update (decoupled weight decay of
    lr x wd = 1e59, which a resume must apply, not keep the checkpoint's): the next save finds them non-finite on every rank, refuses, and names the
    last complete checkpoint; `latest` never points at the diverged model."""
    run_dir = tmp_path / "run"
    args = [*tiny_args, f"run.dir={run_dir}", "train.steps=4", "checkpoint.every=2",
            "optim.warmup_steps=0"]  # fmt: skip
    run(1, [*args, "train.steps=2"], tmp_path / "good")
    log_dir = tmp_path / "diverged"
    # Step 3's forward is still finite; its update makes the weights infinite, and the run's
    # final save (step 3) must find that out before anything is published.
    run(1, [*args, "optim.lr=1e30", "optim.weight_decay=1e30", "train.steps=3"], log_dir,
        expect=1)  # fmt: skip
    log = read_logs(log_dir)
    assert "resume: optim.weight_decay 0.1 -> 1e+30" in log, log
    assert "checkpoint of step 3 not written: the weights are not finite" in log, log
    assert f"the last complete checkpoint is {run_dir / 'checkpoints' / tag_for_step(2)}" in log
    root = run_dir / "checkpoints"
    assert (root / LATEST).read_text().strip() == tag_for_step(2)
    assert not (root / tag_for_step(3) / COMPLETE_MARKER).exists()
