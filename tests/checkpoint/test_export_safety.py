"""Exports: file modes under the umask, a full disk while writing one (one process and two
ranks), and a model.json that does not describe its weights."""

from __future__ import annotations

import json
import os
import resource
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.checkpoint.export import load_exported, strip_prefix, write_export
from mbtrain.errors import CheckpointError
from mbtrain.model import ModelConfig, build_model
from tests.support.launch import REPO, launch, read_logs, wait

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def mbtrain_in_shell(prelude: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """`mbtrain ARGS` run by bash after `prelude` (a umask, a ulimit), as a user's shell would."""
    cmd = shlex.join([sys.executable, "-m", "mbtrain.cli.main", *args])
    return subprocess.run(
        ["bash", "-c", f"{prelude} && exec {cmd}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=300,
        **kw,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_error(proc: subprocess.CompletedProcess, *expect: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expect:
        assert text in err, err
    return err


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp" in p.name or ".old" in p.name)


@pytest.mark.slow
def test_export_files_follow_the_umask(trained_run, tmp_path):
    run_dir, _ = trained_run
    # The trainer's own export at the end of the run (export_from_engine), under this umask.
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("model.safetensors", "model.json"):
        assert mode(run_dir / "export" / name) == 0o666 & ~mask, name
    for umask, file_mode, dir_mode in (("022", 0o644, 0o755), ("027", 0o640, 0o750)):
        out = tmp_path / f"exp{umask}"
        proc = mbtrain_in_shell(f"umask {umask}", "export", str(run_dir), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert mode(out / "model.safetensors") == file_mode, oct(mode(out / "model.safetensors"))
        assert mode(out / "model.json") == file_mode
        assert mode(out) == dir_mode


@pytest.mark.slow
def test_disk_full_during_export_is_one_line_and_keeps_the_earlier_export(trained_run, tmp_path):
    run_dir, _ = trained_run
    out = tmp_path / "exp"
    assert mbtrain_in_shell("true", "export", str(run_dir), "--out", str(out)).returncode == 0
    before = (out / "model.safetensors").read_bytes()
    assert len(before) > 64 * 1024
    # `ulimit -f 64`: no file may grow past 64 KiB; the write fails with EFBIG (File too large),
    # which safetensors raises as a SafetensorError, not an OSError.
    for target in (out, tmp_path / "fresh"):
        proc = mbtrain_in_shell("ulimit -f 64", "export", str(run_dir), "--out", str(target))
        one_line_error(
            proc, f"mbtrain export: error: {target}: writing the export failed", "File too large"
        )
        assert leftovers(tmp_path) == []  # no .exp.tmpPID left behind
    assert not (tmp_path / "fresh").exists()
    assert (out / "model.safetensors").read_bytes() == before
    load_exported(out)


@pytest.mark.dist
def test_disk_full_on_rank_0_is_a_checkpoint_error_on_both_ranks(tmp_path):
    out = tmp_path / "run" / "export"
    out.parent.mkdir()
    log_dir = tmp_path / "logs"
    procs = launch(
        2,
        [str(out)],
        log_dir,
        script=[sys.executable, str(HERE / "export_worker.py")],
        # PYTHONPATH: the script's own directory comes first on sys.path, not the tree's root.
        extra_env={"FSIZE_LIMIT": str(64 * 1024), "PYTHONPATH": str(REPO)},
    )
    codes = wait(procs, log_dir, timeout=180, ok=(0,))
    logs = read_logs(log_dir)
    assert codes == [0, 0], logs  # neither rank died, neither hung in a collective
    for rank in (0, 1):
        log = (log_dir / f"rank{rank}.log").read_text()
        assert "OUTCOME CheckpointError: export failed on rank 0:" in log, logs
        assert "File too large" in log and "BARRIER passed" in log, logs
    assert "Traceback" not in logs, logs
    assert not out.exists() and leftovers(out.parent) == []


# -- model.json against the weights ---------------------------------------------------------


@pytest.fixture
def export(tmp_path) -> Path:
    """A tiny untrained MegaByte export: global_layers 2, local_dim 32, seq_len 64."""
    cfg = ModelConfig.tiny()
    return write_export(strip_prefix(build_model(cfg).state_dict()), cfg, tmp_path / "exp")


def edit_model_json(export: Path, **changes) -> None:
    meta = json.loads((export / "model.json").read_text())
    meta["model"].update(changes)
    (export / "model.json").write_text(json.dumps(meta))


def limit_memory() -> None:
    # Far above what a tiny model needs (torch's import reserves ~3 GB of address space), far
    # below the 13-40 GB that the absurd sizes would allocate before the weights are read.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


@pytest.mark.parametrize(
    "changes, expect",
    [
        ({"global_layers": 100000}, "model.json says global_layers=100000, the weights hold 2"),
        ({"local_dim": 100000}, "model.json says local_dim=100000, the weights hold 32"),
    ],
)
def test_absurd_sizes_fail_from_the_header_before_any_allocation(export, tmp_path, changes, expect):
    edit_model_json(export, **changes)
    data = tmp_path / "data.txt"
    data.write_bytes(b"hello world\n" * 10)
    for args in (["generate", str(export)], ["eval", str(export), str(data)]):
        proc = subprocess.run(
            [sys.executable, "-m", "mbtrain.cli.main", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=ENV,
            timeout=120,
            preexec_fn=limit_memory,
        )
        one_line_error(proc, "weights do not match the model config", expect)


@pytest.mark.parametrize(
    "changes, expect",
    [
        (
            {"arch": "transformer"},
            "model.json says arch='transformer', the weights hold 'megabyte'",
        ),
        ({"patch_size": 8, "seq_len": 64}, "model.json says patch_size=8, the weights hold 4"),
        ({"pos": "rope"}, "model.json says pos='rope', the weights hold 'learned'"),
        ({"seq_len": 32}, "model.json says seq_len=32, the weights hold 64"),
        ({"mlp_ratio": 2.0}, "model.json gives"),
        ({"activation": "swiglu"}, "check mlp_ratio, activation and norm"),
        ({"global_layerz": 3}, "model.global_layerz: unknown key; did you mean 'global_layers'?"),
        ({"global_heads": 5}, "model.global_heads: must divide"),
        ({"dropout": "lots"}, "model.dropout: expected float, got 'lots'"),
    ],
)
def test_model_json_that_does_not_describe_the_weights_is_one_error(export, changes, expect):
    edit_model_json(export, **changes)
    with pytest.raises(CheckpointError) as info:
        load_exported(export)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg, msg


def test_unreadable_export_files_are_one_error(export):
    (export / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json: cannot be read as JSON"):
        load_exported(export)
    (export / "model.json").write_text(json.dumps({"format": "mbtrain-export-1"}))
    with pytest.raises(CheckpointError, match='has no "model" object'):
        load_exported(export)
    cfg = ModelConfig.tiny()
    meta = {"format": "mbtrain-export-1", "model": {"seq_len": cfg.seq_len}}
    (export / "model.json").write_text(json.dumps(meta))
    (export / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_exported(export)
    (export / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_exported(export)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"arch": "transformer"},
        {"pos": "rope", "tie_local_embedding": False, "activation": "swiglu"},
        {"arch": "transformer", "pos": "rope", "norm": "rmsnorm"},
    ],
)
def test_matching_exports_of_every_kind_still_load(tmp_path, overrides):
    cfg = ModelConfig.tiny(**overrides)
    out = write_export(strip_prefix(build_model(cfg).state_dict()), cfg, tmp_path / "exp")
    assert load_exported(out).cfg == cfg


def test_export_through_a_symlink_keeps_the_link_and_leaves_nothing(tmp_path):
    """`--out` a symlink to an earlier export: the export is written where it points, the
    link stays a link, and no `.link.old<pid>` or tmp entry is left beside it."""
    from mbtrain.checkpoint.export import read_export_meta, write_export
    from mbtrain.model import ModelConfig, build_model

    cfg = ModelConfig.tiny()
    state = {k: v.float() for k, v in build_model(cfg).state_dict().items()}
    target = tmp_path / "exports" / "v1"
    write_export(state, cfg, target, {"step": 1})
    link = tmp_path / "link"
    link.symlink_to(target)
    write_export(state, cfg, link, {"step": 2})
    assert link.is_symlink() and read_export_meta(link)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "link"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1"]
