"""Data pipeline throughput: prepare (1 and 2 workers) vs the `zstd` CLI, and loader MB/s.

Not a test. Usage: `.venv/bin/python benchmarks/bench_data.py [--out-md benchmarks/results_data.md]`.
Input: the Python standard library sources (data_prep/corpora/pystdlib.yaml), read as raw
bytes. The zstd baseline compresses the same bytes (concatenated) at level 3, streaming's
default for "zstd"; prepare's target is >= 0.7x of it per worker.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from mbtrain.data import DataConfig, PrepareConfig, build_loader, prepare
from mbtrain.data.cli import load_corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-md", default="benchmarks/results_data.md")
    ap.add_argument("--seq-len", type=int, default=8192)
    args = ap.parse_args()
    corpus = load_corpus("data_prep/corpora/pystdlib.yaml")
    tmp = tempfile.mkdtemp(prefix="bench-data-")
    rows = []
    try:
        res = {}
        for workers in (1, 2):
            out = os.path.join(tmp, f"w{workers}")
            cfg = PrepareConfig(
                inputs=corpus["inputs"], exclude=corpus["exclude"], out=out,
                seq_len=args.seq_len, workers=workers, progress=False,
            )  # fmt: skip
            t = time.perf_counter()
            r = prepare(cfg)
            dt = time.perf_counter() - t
            nbytes = sum(r.stats["bytes"].values())
            res[workers] = (nbytes / dt / 1e6, out, nbytes)
            rows.append(
                f"| prepare, {workers} worker(s) | {nbytes / 1e6:.1f} MB | {dt:.2f} s | {nbytes / dt / 1e6:.1f} MB/s |"
            )
        # zstd CLI on the same bytes, concatenated into one file.
        from mbtrain.data.loader import iter_val_bytes  # noqa: F401  (documents API)
        from mbtrain.data.sources import expand_inputs

        cat = os.path.join(tmp, "all.bin")
        with open(cat, "wb") as f:
            for s in expand_inputs(corpus["inputs"], "auto", lambda *a: None, corpus["exclude"]):
                with open(s.path, "rb") as g:
                    f.write(g.read())
        n = os.path.getsize(cat)
        t = time.perf_counter()
        subprocess.run(["zstd", "-3", "-q", "-f", "-T1", cat, "-o", cat + ".zst"], check=True)
        dt = time.perf_counter() - t
        zstd_mbs = n / dt / 1e6
        rows.append(
            f"| zstd -3 -T1 CLI, same bytes | {n / 1e6:.1f} MB | {dt:.2f} s | {zstd_mbs:.1f} MB/s |"
        )
        # Loader: one epoch of the train split, one rank, no DataLoader workers.
        loader = build_loader(
            DataConfig(train=os.path.join(res[1][1], "train"), num_workers=0), "train",
            args.seq_len, 8, 0, 1, 0,
        )  # fmt: skip
        t, nb = time.perf_counter(), 0
        for b in loader:
            nb += int(b["mask"].sum())
        dt = time.perf_counter() - t
        rows.append(
            f"| loader, 1 rank, num_workers=0, B=8 | {nb / 1e6:.1f} MB | {dt:.2f} s | {nb / dt / 1e6:.1f} MB/s |"
        )
        ratio = res[1][0] / zstd_mbs
        ratio2 = res[2][0] / 2 / zstd_mbs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = "\n".join(
        [
            "# Data pipeline benchmark",
            "",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
            f"- command: `{sys.executable} benchmarks/bench_data.py`",
            f"- corpus: pystdlib (raw .py files), seq_len {args.seq_len}, zstd shards",
            "",
            "| what | bytes | time | throughput |",
            "|---|---|---|---|",
            *rows,
            "",
            f"prepare / zstd CLI: {ratio:.2f}x with 1 worker, {ratio2:.2f}x per worker with 2 (target >= 0.7x).",
            "",
        ]
    )
    with open(args.out_md, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
