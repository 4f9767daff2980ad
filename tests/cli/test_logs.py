"""The console: rank 0's info lines, other ranks' warnings only, `--verbose` every rank's
lines with the rank, `--quiet` warnings only; DeepSpeed's and torch's start-up noise only
with `--verbose`. Run in fresh interpreters (logging is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SNIPPET = """
import logging, sys
from mbtrain.cli.logs import setup_logging
setup_logging(verbose={verbose}, quiet={quiet})
logging.getLogger("mbtrain.train.loop").info("hello")
logging.getLogger("mbtrain.train.loop").warning("careful")
logging.getLogger("DeepSpeed").warning("untested optimizer")
logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found")
"""


def _run(rank: int, verbose: bool = False, quiet: bool = False) -> str:
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET.format(verbose=verbose, quiet=quiet)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert out.stdout == ""  # stdout stays free for a command's output
    return out.stderr


@pytest.mark.parametrize(
    "rank, verbose, quiet, shown",
    [
        (0, False, False, ["[mbtrain] hello", "[mbtrain] careful"]),
        (1, False, False, ["[mbtrain] careful"]),
        (0, False, True, ["[mbtrain] careful"]),
        (1, True, False, ["[mbtrain r1] hello", "[mbtrain r1] careful", "untested optimizer",
                          "No CUDA runtime"]),
    ],
)  # fmt: skip
def test_what_reaches_the_console(rank, verbose, quiet, shown):
    err = _run(rank, verbose, quiet)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    for text in shown:
        assert any(text in ln for ln in lines), (text, err)
    if not verbose:
        assert "untested optimizer" not in err and "No CUDA runtime" not in err
        assert len(lines) == len(shown), err
