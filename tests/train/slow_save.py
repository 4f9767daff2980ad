"""`mbtrain train` whose save of one step pauses half-way, so a test can SIGKILL it there.

The pause sits after DeepSpeed wrote its shards and before completion is published: the
most dangerous moment, when a naive "latest" file would already point at a partial save.
"""

import os
import sys
import time
from pathlib import Path

from mbtrain.checkpoint import manager

_orig = manager.write_marker


def slow_marker(ckpt_dir, info):
    if info["step"] == int(os.environ["SLOW_SAVE_STEP"]):
        Path(os.environ["SLOW_SAVE_GATE"]).touch()
        time.sleep(600)
    _orig(ckpt_dir, info)


manager.write_marker = slow_marker

from mbtrain.cli.main import main  # noqa: E402

sys.exit(main(["train", *sys.argv[1:]]))
