"""`mbtrain eval` people can wait for: sliding windows only unless --mode asks, the result in
./eval.json (where it went printed), progress on stderr as plain lines when stderr is not a
terminal; the windows of many documents share batches without changing any document's score."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.inference.evaluate import EvalProgress
from tests.support.launch import REPO


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny untrained MegaByte export (seq_len 64, patch 4)."""
    from mbtrain.checkpoint.export import strip_prefix, write_export
    from mbtrain.model import ModelConfig, build_model

    cfg = ModelConfig.tiny()
    out = tmp_path_factory.mktemp("export") / "exp"
    return write_export(strip_prefix(build_model(cfg).state_dict()), cfg, out)


def mbtrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_sliding_only_result_in_the_current_directory_plain_progress(export, tmp_path):
    (tmp_path / "a.py").write_bytes(b"def f(x):\n    return x + 1\n" * 40)
    proc = mbtrain("eval", str(export), "a.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert list(result["modes"]) == ["sliding"]  # one pass, not three
    assert f"result written to {tmp_path / 'eval.json'}" in proc.stdout
    assert result["bytes_per_s"] > 0 and "scored at" in proc.stdout
    # stderr is a pipe here: a plain progress line, no carriage returns or cursor moves.
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("eval: ")]
    assert lines and "(100%)" in lines[-1] and "/s, ETA " in lines[-1], proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    # --mode still selects the others, in the order given; -o anywhere (its folder made).
    proc = mbtrain(
        "eval", str(export), "a.py", "--mode", "strided", "--mode", "basic", "-o", "out/e.json",
        "--threads", "1", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads((tmp_path / "out" / "e.json").read_text())["modes"]) == [
        "strided", "basic",
    ]  # fmt: skip
    assert "eval: " not in proc.stderr  # --quiet: no progress


def test_progress_lines_every_interval_with_rate_and_eta():
    stream = io.StringIO()  # not a terminal
    progress = EvalProgress(4000, stream=stream, interval=0.0)
    assert progress.bar is None
    progress.advance(1000)
    progress.advance(3000)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("eval: 1.0 kB of 4.0 kB (25%), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("eval: 4.0 kB of 4.0 kB (100%)")
    quiet = io.StringIO()
    EvalProgress(10, enabled=False, stream=quiet, interval=0.0).advance(5)
    assert quiet.getvalue() == ""


def test_progress_is_a_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = EvalProgress(4000, stream=stream, interval=0.0)
    assert progress.bar is not None
    progress.advance(4000)
    progress.close()
    assert "\r" in stream.getvalue() and "%|" in stream.getvalue()  # tqdm's, not plain lines
    assert "(100%)," not in stream.getvalue()


def test_windows_of_many_documents_share_batches_without_changing_any_score():
    """Short documents, each shorter than a window: packed and right-padded into shared
    batches, each scores what it scores alone (the model is causal)."""
    import torch

    from mbtrain.model import ModelConfig, build_model, score_bytes
    from mbtrain.model.scoring import score_documents

    torch.manual_seed(0)
    rng = random.Random(0)
    docs = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 30, 64, 100, 200])))
            for _ in range(30)]  # fmt: skip
    for arch in ("megabyte", "transformer"):
        model = build_model(ModelConfig.tiny(arch=arch)).eval()
        for mode in ("basic", "sliding", "strided"):
            seen: list[tuple[int, int]] = []
            together = score_documents(
                model, docs, 32, mode, None, 4, lambda *a, seen=seen: seen.append(a)
            )
            assert sum(s for s, _ in seen) == sum(map(len, docs))  # each byte scored once
            # Packed: every batch but the last nearly full (batch_size windows' worth of bytes),
            # however short its windows.
            assert all(3 * 32 < c <= 4 * 32 for _, c in seen[:-1]), seen
            for doc, got in zip(docs, together):
                alone = score_bytes(model, doc, context=32, mode=mode, batch_size=1)
                assert got.count == alone.count == len(doc)
                assert got.nats == pytest.approx(alone.nats, rel=1e-5), (arch, mode)


@pytest.mark.parametrize(("one", "two", "most"), [(1.0, 5.0, 1), (1.0, 0.6, 2)])
def test_threads_follow_the_faster_count(monkeypatch, one, two, most):
    """Batches take `one` s on 1 thread and `two` s on 2 (a busy second core makes 2 threads
    slower; idle, they share the work): most batches run with the faster count, the other
    is tried again rarely."""
    import torch

    from mbtrain.inference import evaluate

    before = torch.get_num_threads()
    clock = [0.0]
    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: clock[0])
    try:
        torch.set_num_threads(2)
        chooser = evaluate.ThreadChooser()
        runs = {1: 0, 2: 0}
        for _ in range(200):
            n = torch.get_num_threads()
            runs[n] += 1
            clock[0] += one if n == 1 else two
            chooser.after_batch(4096)
    finally:
        torch.set_num_threads(before)
    other = 3 - most
    assert runs[most] >= 180, runs
    assert 1 <= runs[other] <= 200 / evaluate.ThreadChooser.EXPLORE + 2, runs
