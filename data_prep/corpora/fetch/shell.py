"""Running the Debian and compression tools: logging, subprocesses at low priority, hashing."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def nice(cmd: list[str]) -> list[str]:
    return (["nice", "-n", "10"] if shutil.which("nice") else []) + cmd


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
