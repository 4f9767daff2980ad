"""`make demo` end to end, shortened: the real corpus, a real DeepSpeed run, the real report."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_OVERRIDES


@pytest.mark.slow
def test_demo_runs_and_reports_whole_held_out_files(tmp_path):
    data = tmp_path / "data"
    overrides = [
        *[o for o in TINY_OVERRIDES if not o.startswith("train.eval_every")],
        "train.steps=4",
        "train.eval_every=4",
        "checkpoint.every=4",
        "logging.wandb=disabled",
        f"run.dir={tmp_path / 'run'}",
        f"data.train={data}/train",
        f"data.val={data}/val",
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(
        [sys.executable, "-m", "mbtrain.demo", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    m = re.search(r"bits per byte on ([\d,]+) held-out bytes \((\d+) whole files\)", out)
    assert m, out
    held_out = int(m.group(1).replace(",", ""))
    # every byte of the validation split is scored, not a prefix
    from mbtrain.data import iter_documents

    assert held_out == sum(len(body) for _, body in iter_documents(str(data / "val")))
    lines = ["MegaByte (this run, sliding windows)"]
    for name in ("gzip -9", "bzip2 -9", "xz -9e"):  # every compressor, both ways
        lines += [f"{name}, each file on its own", f"{name}, all files as one stream"]
    for line in lines:
        assert re.search(re.escape(line) + r"\s+\d+\.\d{3}", out), line
    assert "the model is" in out and "a generated sample" in out
    # the trainer's own lines reach the console (they go through logging, to stderr)
    assert re.search(r"\[mbtrain\] step 4/4 \| loss \d", p.stderr), p.stderr[-3000:]


def test_the_verdict_names_what_the_model_does_not_beat():
    from mbtrain.demo import verdict

    per_file = {"gzip -9": 2.2, "bzip2 -9": 1.751, "xz -9e": 1.735}
    stream = {"gzip -9": 1.8, "bzip2 -9": 1.7, "xz -9e": 1.6}
    said = verdict(1.814, per_file, stream)
    assert said.startswith("below gzip -9 per file, NOT below bzip2 -9, xz -9e per file"), said
    assert said.endswith("below none as one stream")
    assert "below none of the compressors" in verdict(3.0, per_file, stream)
    assert "NOT" not in verdict(1.5, per_file, stream)
