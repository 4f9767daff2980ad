"""A stand-in for `mbtrain train` in the preemption tests: no torch, starts in milliseconds.

It behaves as the real trainer must: resume from `checkpoints/latest`, write metrics.jsonl,
and on SIGUSR1 or SIGTERM finish the current step, save a checkpoint, make it "latest"
only once complete, and exit 75 ("checkpoint saved, requeue me").

With HANG_ONCE as 4th argument, the first job (restart 0) leaves after 3 steps with exit code
76, as a rank does when the watchdog finds its step hung.

Usage: python standin_trainer.py RUN_DIR STEPS STEP_SECONDS [HANG_ONCE]
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

from mbtrain.checkpoint.paths import COMPLETE_MARKER, step_of_tag, tag_for_step  # no torch

run_dir, steps, step_s = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
hang_once = len(sys.argv) > 4 and sys.argv[4] == "HANG_ONCE"
ckpt = run_dir / "checkpoints"
requested = []
signal.signal(signal.SIGUSR1, lambda s, f: requested.append(s))
signal.signal(signal.SIGTERM, lambda s, f: requested.append(s))

start = 0
if (ckpt / "latest").is_file():
    start = step_of_tag((ckpt / "latest").read_text().strip())
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
print(
    f"standin: start at step {start}, restart {restart}, RANK={os.environ.get('RANK')}", flush=True
)
t0 = time.time()
for step in range(start + 1, steps + 1):
    time.sleep(step_s)
    with open(run_dir / "metrics.jsonl", "a") as f:
        rec = {
            "step": step,
            "loss": 1.0 / step,
            "bpb": 1.5 / step,
            "bytes_per_s": 1000.0 * step,
            "eta_s": (steps - step) * step_s,
            "restart": restart,
            "time": time.time(),
        }
        f.write(json.dumps(rec) + "\n")
        if step % 5 == 0:
            f.write(json.dumps({"step": step, "val_bpb": 2.0 / step}) + "\n")
    if hang_once and restart == 0 and step == start + 3:
        print("standin: step hung, exit 76", flush=True)
        sys.exit(76)
    if requested:
        tag = tag_for_step(step)
        (ckpt / tag).mkdir(parents=True, exist_ok=True)
        (ckpt / tag / "state.json").write_text(json.dumps({"step": step}))
        (ckpt / tag / COMPLETE_MARKER).write_text(json.dumps({"step": step}))  # last, as mbtrain
        (ckpt / "latest.tmp").write_text(tag)
        os.replace(ckpt / "latest.tmp", ckpt / "latest")
        print(f"standin: signal {requested[0]} -> saved {tag}, exit 75", flush=True)
        sys.exit(75)
(run_dir / "finished").write_text(str(steps))
print("standin: finished", flush=True)
