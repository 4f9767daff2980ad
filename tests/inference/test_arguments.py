"""`mbtrain eval | generate` refuse arguments out of range, as one error line with the range.

The flags are checked by argparse (exit 2, before any model is loaded); what depends on the
model (a context beyond learned positions, a prompt longer than seq_len) by the library,
which Python callers see as a ValueError naming the argument. The models are tiny untrained
exports, written directly (no training run needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.launch import REPO


def mbtrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny untrained MegaByte export (seq_len 64, learned positions)."""
    from mbtrain.checkpoint.export import strip_prefix, write_export
    from mbtrain.model import ModelConfig, build_model

    cfg = ModelConfig.tiny()
    out = tmp_path_factory.mktemp("export") / "exp"
    return write_export(strip_prefix(build_model(cfg).state_dict()), cfg, out)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "a.txt"
    path.write_bytes(b"def f(x):\n    return x + 1\n" * 8)
    return path


FLAG_CASES = [
    (["generate", "--top-p", "-1"], "--top-p", "(0, 1]"),
    (["generate", "--top-p", "1.5"], "--top-p", "(0, 1]"),
    (["generate", "--top-p", "nan"], "--top-p", "(0, 1]"),
    (["generate", "--top-p", "0"], "--top-p", "(0, 1]"),
    (["generate", "--top-k", "-3"], "--top-k", ">= 1"),
    (["generate", "--top-k", "0"], "--top-k", ">= 1"),
    (["generate", "--temperature", "nan"], "--temperature", ">= 0"),
    (["generate", "--temperature", "-0.5"], "--temperature", ">= 0"),
    (["generate", "--temperature", "inf"], "--temperature", ">= 0"),
    (["generate", "--max-bytes", "-1"], "--max-bytes", ">= 0"),
    (["generate", "--step", "-2"], "--step", ">= 0"),
    (["eval", "DATA", "--context", "0"], "--context", ">= 1"),
    (["eval", "DATA", "--context", "-5"], "--context", ">= 1"),
    (["eval", "DATA", "--stride", "0"], "--stride", ">= 1"),
    (["eval", "DATA", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["eval", "DATA", "--max-bytes", "-1"], "--max-bytes", ">= 1"),
    (["eval", "DATA", "--max-bytes", "ten"], "--max-bytes", ">= 1"),
]


@pytest.mark.parametrize(
    "argv, flag, valid", FLAG_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_flag_out_of_range_is_an_argparse_error_with_the_range(export, data, argv, flag, valid):
    command, *rest = argv
    rest = [str(data) if a == "DATA" else a for a in rest]
    proc = mbtrain(command, str(export), *rest)
    assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and not proc.stdout, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    # argparse prints its usage, then the one error line naming the flag and the range.
    assert last.startswith(f"mbtrain {command}: error: argument {flag}: must be"), last
    assert valid in last, last


def one_line_error(proc: subprocess.CompletedProcess, code: int, *expect: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expect:
        assert text in err, err
    return err


def test_model_dependent_ranges_are_one_line(export, data, tmp_path):
    # Learned positions end at seq_len (64): a longer context has no position to use.
    one_line_error(
        mbtrain("eval", str(export), str(data), "--context", "65"),
        2,
        "mbtrain eval: error: context: must be an integer in [1, model.seq_len (64)], got 65",
    )
    one_line_error(
        mbtrain("eval", str(export), str(data), "--context", "16", "--stride", "17"),
        2,
        "stride: must be an integer in [1, context (16)], got 17",
    )
    one_line_error(
        mbtrain("generate", str(export), "--prompt", "x" * 64), 2, "leaves no room in model.seq_len"
    )
    missing = tmp_path / "missing.txt"
    one_line_error(
        mbtrain("generate", str(export), "--prompt-file", str(missing)),
        1,
        f"mbtrain generate: error: {missing}: cannot read the prompt file (No such file",
    )


def test_valid_edges_are_accepted(export, data, tmp_path):
    proc = mbtrain(
        "generate", str(export), "--top-p", "1", "--top-k", "1", "--temperature", "0",
        "--max-bytes", "0",
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    out = tmp_path / "e.json"
    proc = mbtrain(
        "eval", str(export), str(data), "--context", "1", "--mode", "sliding",
        "--max-bytes", "40", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"context": 1' in out.read_text()


def test_library_callers_get_a_value_error_naming_the_argument(export, data):
    from mbtrain.checkpoint.export import load_exported
    from mbtrain.inference.evaluate import evaluate_model
    from mbtrain.model import generate, score_bytes

    model = load_exported(export)
    nan = float("nan")
    for kwargs, name in [
        ({"max_bytes": -1}, "max_bytes"),
        ({"temperature": nan}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": -1.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": nan}, "top_p"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: must be"):
            generate(model, b"ab", **kwargs)
    assert len(bytes(generate(model, b"ab", max_bytes=3, top_p=1.0, top_k=1, seed=0))) == 3

    for kwargs, name in [
        ({"context": 0}, "context"),
        ({"context": -5}, "context"),
        ({"context": 65}, "context"),
        ({"stride": 0}, "stride"),
        ({"context": 8, "stride": 9}, "stride"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"modes": ("fast",)}, "modes"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: must be|^{name}: each must be"):
            evaluate_model(model, [str(data)], progress=False, **kwargs)
    for kwargs, name in [({"context": 0}, "context"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=f"^{name} must be an integer >= 1"):
            score_bytes(model, b"abcdef", **{"context": 4, **kwargs})
