"""The README's "Using it" walk-through, every command in order, as written.

The block is read from README.md itself and run by bash in a fresh directory that holds what
a user's checkout holds (recipes/, data_prep/, docs/, the .venv) plus the user's own corpus
(`corpus/**/*.jsonl.zst`, real text). What the block needs from the world is provided as a
user would have it: an S3-compatible server with the bucket it names (moto, on 127.0.0.1),
and the local Slurm cluster. Then the outputs each command promises are checked, including
the Slurm job the walk-through submits, which must finish its training.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
import zstandard

from mbtrain.checkpoint.paths import LATEST, tag_for_step
from mbtrain.cluster.status import slurm_job
from mbtrain.cluster.submit import read_jobs
from tests.cluster.conftest import TERMINAL, slurm_cluster  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.dist]


def readme_block(heading: str = "## Using it") -> str:
    """The first ```bash block after `heading` in README.md, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block under {heading!r}"
    return block.group(1)


def write_corpus(root: Path) -> int:
    """The user's corpus: JSON Lines (zstd) of real text, a record per file, in two folders."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("email/*.py")) + sorted(stdlib.glob("json/*.py"))
    files += sorted(stdlib.glob("asyncio/*.py")) + sorted(stdlib.glob("http/*.py"))
    total = 0
    for i, chunk in enumerate((files[::2], files[1::2])):
        out = root / "corpus" / f"shelf{i}" / "records.jsonl.zst"
        out.parent.mkdir(parents=True)
        lines = [json.dumps({"text": f.read_text(errors="replace"), "id": f.name}) for f in chunk]
        out.write_bytes(zstandard.ZstdCompressor().compress("\n".join(lines).encode()))
        total += sum(len(ln) for ln in lines)
    return total


@pytest.fixture
def s3_bucket(monkeypatch):
    """An S3-compatible endpoint with the bucket the README writes to."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": url}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="bucket")
    yield client
    server.stop()


def test_readme_walk_through_as_written(tmp_path, slurm_cluster, s3_bucket):  # noqa: F811
    ws = tmp_path / "checkout"
    ws.mkdir()
    for name in (".venv", "recipes", "data_prep", "docs"):
        (ws / name).symlink_to(REPO / name)
    assert write_corpus(ws) > 1_000_000
    script = ws / "walkthrough.sh"
    script.write_text("set -euo pipefail\nset -x\n" + readme_block())
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_"))
    }
    env.update(DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        ["bash", str(script)], cwd=ws, env=env, capture_output=True, text=True, timeout=3000
    )
    log = f"{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-12000:]}"
    assert proc.returncode == 0, log
    assert "Traceback" not in proc.stderr, log

    # 1. Data: three datasets, one of them in the bucket.
    for d in ("data/mycorpus", "data/pystdlib-1m"):
        for split in ("train", "val"):
            assert json.loads((ws / d / split / "mbtrain.json").read_text())["complete"]
    keys = [o["Key"] for o in s3_bucket.list_objects_v2(Bucket="bucket")["Contents"]]
    assert "docs/train/mbtrain.json" in keys and "docs/val/mbtrain.json" in keys
    # 2. Train: the two local runs finished their steps (cut from 8,192-byte samples).
    for run, steps in (("mycorpus", 300), ("mycorpus-zero2", 100)):
        latest = (ws / "runs" / run / "checkpoints" / LATEST).read_text().strip()
        assert latest == tag_for_step(steps), (run, latest)
    assert "# start: a new run" in proc.stdout and "fits in" in proc.stdout
    # ... and the Slurm job, which starts in its run directory, trains to its last step.
    (job,) = read_jobs(ws / "runs" / "mycorpus-slurm")
    deadline = time.time() + 600
    while (slurm_job(job["job_id"]) or {}).get("JobState") not in TERMINAL:
        assert time.time() < deadline, "the submitted job did not finish"
        time.sleep(2)
    assert (slurm_job(job["job_id"]) or {}).get("JobState") == "COMPLETED"
    slurm_run = ws / "runs" / "mycorpus-slurm"
    assert (slurm_run / "checkpoints" / LATEST).read_text().strip() == tag_for_step(100)
    # 3. Watch, 4. Use.
    assert (ws / "curves.png").stat().st_size > 10_000
    evaluation = json.loads((ws / "runs" / "mycorpus" / "eval.json").read_text())
    assert evaluation and "gzip" in json.dumps(evaluation)
    assert (ws / "exported" / "model.safetensors").is_file()
    assert (ws / "exported" / "model.json").is_file()
