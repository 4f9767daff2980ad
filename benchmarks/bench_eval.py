"""Eval bytes/s against training bytes/s of the same model (run_all's section "eval").

The model is bench_model's MegaByte (~3.6M parameters, fp32) at T = `--seq-len`; the data are
real Python sources (the stdlib's email/ and json/ packages), ~`--kb` KB as separate documents,
scored as `mbtrain eval` scores them (`mbtrain.model.scoring.score_documents`: windows of all
the documents packed into batches of `--batch-size` windows' worth of bytes). Training is the
model's own step (forward, backward, AdamW) on micro-batches of `--train-batch` x T bytes.

Forward-only scoring costs about a third of a training step per byte; sliding windows (the
eval default) score each byte once but run every byte of context twice (stride T/2), so eval
should read about 1.5x the training rate, basic windows about 3x. Every number is the best of
`--rounds` (the cores are shared; other jobs only ever slow a run down). Training and the
first two eval rows run with `--threads`; the last row picks its threads as `mbtrain eval` does.

    .venv/bin/python -m benchmarks.bench_eval [--seq-len 2048] [--kb 50] [--threads 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import time
from pathlib import Path

import torch

from benchmarks.bench_model import MEGABYTE
from mbtrain.inference.evaluate import ThreadChooser
from mbtrain.model import ModelConfig, build_model, count_parameters
from mbtrain.model.scoring import score_documents


def corpus(kb: int) -> list[bytes]:
    """~kb KB of real source files, whole documents (the last one cut to fit)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted([*(stdlib / "email").glob("*.py"), *(stdlib / "json").glob("*.py")]):
        data = path.read_bytes()[: kb * 1000 - total]
        if data:
            docs.append(data)
            total += len(data)
    return docs


def train_rate(model: torch.nn.Module, seq_len: int, batch: int, steps: int) -> float:
    """Training bytes/s: best step of `steps` after one warm-up step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, seq_len))
    model.train()
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        opt.step()
        if i:  # the first step allocates the optimizer state
            best = min(best, time.perf_counter() - t0)
    return batch * seq_len / best


def eval_rate(
    model: torch.nn.Module, docs: list[bytes], seq_len: int, mode: str, batch: int, choose: bool
):
    """(bytes/s, bits per byte) of scoring every document in `mode`; `choose`: the thread
    count picked batch by batch as `mbtrain eval` does (`ThreadChooser`), else the current."""
    threads = torch.get_num_threads()
    chooser = ThreadChooser() if choose else None
    t0 = time.perf_counter()
    try:
        scores = score_documents(
            model, docs, seq_len, mode, None, batch,
            (lambda scored, computed: chooser.after_batch(computed)) if chooser else None,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    nats, count = sum(s.nats for s in scores), sum(s.count for s in scores)
    return count / seconds, nats / count / 0.6931471805599453


def run(
    seq_len: int = 2048,
    kb: int = 50,
    threads: int | None = None,
    rounds: int = 2,
    batch_size: int = 8,
    train_batch: int = 2,
    train_steps: int = 3,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig(**MEGABYTE, seq_len=seq_len)
    model = build_model(cfg)
    docs = corpus(kb)
    train = max(train_rate(model, seq_len, train_batch, train_steps) for _ in range(rounds))
    rows = []
    for mode, choose in (("sliding", False), ("basic", False), ("sliding", True)):
        runs = [eval_rate(model, docs, seq_len, mode, batch_size, choose) for _ in range(rounds)]
        rate = max(r[0] for r in runs)
        rows.append(
            {
                "mode": mode,
                "threads_chosen": choose,
                "bytes_per_s": rate,
                "vs_training": rate / train,
            }
        )
    return {
        "model": {**MEGABYTE, "seq_len": seq_len},
        "params": count_parameters(cfg),
        "bytes": sum(map(len, docs)),
        "documents": len(docs),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "train_batch": train_batch,
        "train_bytes_per_s": train,
        "rows": rows,
    }


def report(res: dict) -> list[str]:
    """Markdown lines for results.md."""
    lines = [
        f"MegaByte of {res['params'] / 1e6:.1f}M parameters at T = {res['model']['seq_len']:,}, "
        f"{res['threads']} torch threads; eval on {res['bytes']:,} bytes of Python source in "
        f"{res['documents']} documents (batches of {res['batch_size']} windows' worth of bytes), "
        f"training on micro-batches of {res['train_batch']} x T (forward, backward, AdamW).",
        "",
        "| | bytes/s | vs training |",
        "|---|---:|---:|",
        f"| training | {res['train_bytes_per_s']:,.0f} | 1.00 |",
    ]
    for r in res["rows"]:
        how = f"{r['mode']} windows" + (" (the default)" if r["mode"] == "sliding" else "")
        if r.get("threads_chosen"):
            how = "`mbtrain eval` (sliding; 1 or all threads, chosen per batch)"
        lines.append(f"| eval, {how} | {r['bytes_per_s']:,.0f} | {r['vs_training']:.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=2048, help="context T (default: 2048)")
    ap.add_argument("--kb", type=int, default=50, help="KB of documents to score (default: 50)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--rounds", type=int, default=2, help="best of this many (default: 2)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    a = ap.parse_args()
    res = run(a.seq_len, a.kb, a.threads, a.rounds)
    print("\n".join(report(res)))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
