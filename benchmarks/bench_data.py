"""Data pipeline throughput: prepare (1 and 2 workers) vs the `zstd` CLI, and loader MB/s.

Not a test. Usage:

    .venv/bin/python benchmarks/bench_data.py [--repeat 3] [--baseline DIR] [--out-md FILE]

Input: the Python standard library sources (data_prep/corpora/pystdlib.yaml), read as raw
bytes. The zstd baseline compresses the same bytes (concatenated into one file) with
`zstd -3 -T1`: level 3 is what `compression: zstd` means in streaming (and in mbtrain's fast
writer), and -T1 is one thread, i.e. one worker. prepare's target is >= 0.7x of it per worker.

Every prepare and loader run is a fresh child process (so each pays its own imports, as
`mbtrain prepare` does), interleaved with the zstd runs; the best of `--repeat` rounds is
reported (the machine is shared: compare ratios within one run). `--baseline DIR` adds the
same runs with the `mbtrain` package found in DIR (e.g. an older commit:
`git archive <commit> mbtrain | tar -x -C DIR`) for before/after in one table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_prepare(out: str, workers: int, seq_len: int, size_limit: int) -> dict:
    t0 = time.perf_counter()
    from mbtrain.data import PrepareConfig, prepare
    from mbtrain.data.cli import load_corpus

    t1 = time.perf_counter()
    corpus = load_corpus(os.path.join(ROOT, "data_prep/corpora/pystdlib.yaml"))
    cfg = PrepareConfig(
        inputs=corpus["inputs"], exclude=corpus["exclude"], out=out, seq_len=seq_len,
        workers=workers, progress=False, **({"size_limit": size_limit} if size_limit else {}),
    )  # fmt: skip
    r = prepare(cfg)  # includes the walk, every lazy import, the workers and the merge
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "prepare_s": t2 - t1, "bytes": sum(r.stats["bytes"].values())}


def child_loader(train: str, seq_len: int, batch: int) -> dict:
    import numpy as np

    from mbtrain.data import DataConfig, build_loader
    from mbtrain.data.loader import collate

    loader = build_loader(
        DataConfig(train=train, num_workers=0), "train", seq_len, batch, 0, 1, 0
    )  # fmt: skip
    t, nb = time.perf_counter(), 0
    for b in loader:  # count with numpy: torch's bool .sum() spins threads on a loaded box
        nb += int(np.count_nonzero(b["mask"].numpy()))
    loader_s = time.perf_counter() - t
    ds = loader.dataset
    samples = [ds.get_item(i) for i in range(min(ds.num_samples, 64 * batch))]
    cb = sum(len(s["data"]) for s in samples)
    t = time.perf_counter()
    for i in range(0, len(samples) - batch + 1, batch):
        collate(samples[i : i + batch], seq_len)
    collate_s = time.perf_counter() - t
    return {"loader_bytes": nb, "loader_s": loader_s, "collate_bytes": cb, "collate_s": collate_s}


def run_child(pythonpath: str, *args: str) -> tuple[dict, float]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def concat_inputs(path: str) -> int:
    from mbtrain.data.cli import load_corpus
    from mbtrain.data.sources import expand_inputs

    corpus = load_corpus(os.path.join(ROOT, "data_prep/corpora/pystdlib.yaml"))
    with open(path, "wb") as f:
        for s in expand_inputs(corpus["inputs"], "auto", lambda *a: None, corpus["exclude"]):
            with open(s.path, "rb") as g:
                f.write(g.read())
    return os.path.getsize(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-md", default="benchmarks/results_data.md")
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--size-limit", type=int, default=0, help="shard size limit (0: the config default, 64 MiB)"
    )
    ap.add_argument("--baseline", help="PYTHONPATH root of an older mbtrain to compare with")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            res = child_prepare(rest[0], int(rest[1]), args.seq_len, args.size_limit)
        else:
            res = child_loader(rest[0], args.seq_len, args.batch)
        print(json.dumps(res))
        return

    variants = {"after": ROOT}
    if args.baseline:
        variants = {"before": os.path.abspath(args.baseline), "after": ROOT}
    tmp = tempfile.mkdtemp(prefix="bench-data-")
    best: dict[tuple, dict] = {}

    def keep(key, res, wall):
        res = dict(res, wall_s=wall)
        if key not in best or res.get("prepare_s", res.get("loader_s")) < best[key].get(
            "prepare_s", best[key].get("loader_s")
        ):
            best[key] = res

    try:
        cat = os.path.join(tmp, "all.bin")
        n = concat_inputs(cat)
        for rnd in range(args.repeat):
            for name, path in variants.items():
                for w in (1, 2):
                    out = os.path.join(tmp, f"{name}-w{w}-{rnd}")
                    keep((name, w), *run_child(path, "prepare", out, str(w)))
                    if rnd < args.repeat - 1 or w == 2:
                        shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                subprocess.run(
                    ["zstd", "-3", "-q", "-f", "-T1", cat, "-o", cat + ".zst"], check=True
                )
                keep(("zstd", name, rnd), {"prepare_s": time.perf_counter() - t}, 0.0)
        zstd_s = min(v["prepare_s"] for k, v in best.items() if k[0] == "zstd")
        zstd_mbs = n / zstd_s / 1e6
        train = os.path.join(tmp, f"after-w1-{args.repeat - 1}", "train")
        for _ in range(args.repeat):
            for name, path in variants.items():
                keep(("loader", name), *run_child(path, "loader", train))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for name in variants:
        for w in (1, 2):
            r = best[(name, w)]
            mbs = r["bytes"] / r["prepare_s"] / 1e6
            rows.append(
                f"| {name}: prepare, {w} worker(s) | {r['bytes'] / 1e6:.1f} MB "
                f"| {r['prepare_s']:.2f} s (process {r['wall_s']:.2f} s) | {mbs:.1f} MB/s "
                f"| {mbs / w:.1f} MB/s | **{mbs / w / zstd_mbs:.2f}x** |"
            )
    rows.append(
        f"| zstd -3 -T1 CLI, same bytes (best of {len(variants) * args.repeat}) | {n / 1e6:.1f} MB "
        f"| {zstd_s:.2f} s | {zstd_mbs:.1f} MB/s | {zstd_mbs:.1f} MB/s | 1.00x |"
    )
    lrows = []
    for name in variants:
        r = best[("loader", name)]
        lrows.append(
            f"| {name} | {r['loader_bytes'] / r['loader_s'] / 1e6:.1f} MB/s "
            f"| {r['collate_bytes'] / r['collate_s'] / 1e6:.1f} MB/s |"
        )
    md = "\n".join(
        [
            "# Data pipeline benchmark",
            "",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs (shared, "
            f"load avg {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}",
            f"- command: `{' '.join([os.path.relpath(sys.executable, ROOT), *sys.argv])}`",
            f"- corpus: pystdlib (raw .py files), seq_len {args.seq_len}, shards `zstd` = level 3; "
            f"best of {args.repeat} rounds, each run a fresh process; shard size_limit "
            f"{args.size_limit or 'default (64 MiB: one shard per split and part here)'}",
            "- prepare time = the `prepare()` call: input walk, lazy imports, workers, merge; "
            "process = the whole child incl. interpreter start",
            "",
            "| what | bytes | time | throughput | per worker | per worker / zstd CLI |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Loader, 1 rank, num_workers=0, B={args.batch}, seq_len {args.seq_len} (one epoch of "
            "the train split; bytes = real bytes, mask True). A training step of the tiny CPU "
            "recipe consumes about 20 kB/s.",
            "",
            "| code | loader MB/s per rank | collate alone MB/s |",
            "|---|---|---|",
            *lrows,
            "",
        ]
    )
    with open(os.path.join(ROOT, args.out_md), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
