"""Time to beat a compressor: held-out bits per byte against minutes of CPU training.

For each corpus (`data_prep/corpora/<name>.yaml`, made by `data_prep/corpora/fetch_corpora.py`
from pinned Debian packages: English text, C source, photographs as raw RGB pixels, music as
16-bit PCM) and each candidate (`recipes/cpu.yaml` plus overrides, `CANDIDATES`), one real
training run (`mbtrain train`, DeepSpeed, fp32, this machine's cores) for a fixed wall-clock
budget of training time, then the held-out score:

* steps: a short calibration run measures the candidate's bytes/s on this corpus; the run
  gets the steps that fill the budget (the learning-rate schedule needs its length up front);
* curve: the validation bpb the loop logs every ~1/8 of the run (basic windows of the
  held-out documents, the loop's own `val_bpb`) against training minutes (`elapsed_s`);
* score: the held-out documents (whole files, in stored order, up to `--eval-bytes`), every
  byte scored with sliding windows (`mbtrain eval`'s default for inputs longer than the
  context), beside gzip -9, bzip2 -9 and xz -9e on exactly the same bytes, each document
  compressed on its own (as the model scores it) and, the stronger yardstick, all of them as
  one stream.

    .venv/bin/python -m benchmarks.bench_quality [--minutes 30] [--corpora text,code,image,audio]
        [--candidates cpu,t2k,...|all] [--jobs 2] [--out benchmarks/results_quality.md]

`--jobs 2` runs two candidates side by side, each on `cores / jobs` threads (every run of one
invocation gets the same share, so their curves compare; a run on 1 of the 2 cores sees fewer
bytes than the same minutes on both). Results accumulate in the JSON beside the report (a
rerun of the same corpus, candidate and minutes replaces its row), so a short screen of all
candidates on one corpus and the recommended recipe's full-length runs on every corpus land in
one table and one plot.

Datasets go to `data/quality/<corpus>-<seq_len>` (prepared once per sequence length), runs to
`runs/quality/`. The corpora are fetched into `$MBTRAIN_CORPORA` (default `data/corpora`).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cpu.yaml"
CORPORA = ("text", "code", "image", "audio")

# recipes/cpu.yaml and one change each: what the recipe's choices were measured against.
CANDIDATES: dict[str, list[str]] = {
    "cpu": [],  # recipes/cpu.yaml as it is
    # sequence length (bytes per sample kept near 4 KiB per step where the batch allows)
    "t2k": ["model.seq_len=2048", "train.micro_batch_size=2"],
    "t8k": ["model.seq_len=8192", "train.micro_batch_size=1"],
    "t64k": ["model.seq_len=65536", "train.micro_batch_size=1"],
    # patch size at the same global width (patch x global_dim = 256)
    "p4": ["model.patch_size=4", "model.global_dim=64"],
    "p8": ["model.patch_size=8", "model.global_dim=32"],
    # width and depth
    "wide": ["model.global_dim=48", "model.local_dim=192"],
    "deep": ["model.global_layers=3", "model.local_layers=3"],
    # batch size and learning rate
    "b16": ["train.micro_batch_size=16"],
    "lr4e-3": ["optim.lr=4.0e-3"],
    # document masking and the paper's two options, each flipped
    "no-doc-mask": ["model.doc_mask=false"],
    "local-ctx": ["model.local_context=8"],
    "tied": ["model.tie_local_embedding=true"],
    # windows that grow in the run (train.seq_len_schedule), against the fixed windows above
    "grow2k": ["model.seq_len=2048", "train.micro_batch_size=2"],
    "grow8k": ["model.seq_len=8192", "train.micro_batch_size=1"],
}
# The schedules of the growing candidates, in fractions of the run's steps (the step count is
# known only once the candidate's speed is measured): [fraction, window].
SCHEDULES: dict[str, list[tuple[float, int]]] = {
    "grow2k": [(0.0, 512), (0.5, 2048)],
    "grow8k": [(0.0, 512), (0.3, 2048), (0.6, 8192)],
}


def schedule_overrides(name: str, steps: int) -> list[str]:
    """`train.seq_len_schedule=[[step, window], ...]` for a growing candidate of `steps`."""
    if name not in SCHEDULES:
        return []
    pairs = ",".join(f"[{int(f * steps)},{w}]" for f, w in SCHEDULES[name])
    return [f"train.seq_len_schedule=[{pairs}]"]


def bytes_per_step(name: str, cfg) -> float:
    """Mean training bytes per step (a growing candidate's short windows carry fewer)."""
    t = cfg.train
    per_window = t.micro_batch_size * t.grad_accum
    spans = SCHEDULES.get(name, [(0.0, cfg.model.seq_len)])
    ends = [f for f, _ in spans[1:]] + [1.0]
    return sum((end - f) * w * per_window for (f, w), end in zip(spans, ends, strict=True))


def summary(cfg) -> str:
    """The resolved choices of a run in one short string (rows stay readable when cpu.yaml moves)."""
    m, t = cfg.model, cfg.train
    return (
        f"T{m.seq_len} P{m.patch_size} g{m.patch_size * m.global_dim}x{m.global_layers} "
        f"l{m.local_dim}x{m.local_layers} b{t.micro_batch_size * t.grad_accum} lr{cfg.optim.lr:g}"
        f"{'' if m.tie_local_embedding else ' untied'}{'' if m.doc_mask else ' no-mask'}"
        f"{f' ctx{m.local_context}' if m.local_context else ''}"
        f"{' grow ' + '>'.join(str(w) for _, w in t.seq_len_schedule) if t.seq_len_schedule else ''}"
    )


def corpora_root() -> Path:
    return Path(os.environ.get("MBTRAIN_CORPORA", REPO / "data" / "corpora"))


def ensure_corpus(name: str) -> None:
    """Fetch the corpus (pinned Debian packages) unless it is there. A pin that Debian has
    replaced meanwhile takes the current version (recorded in the corpus's SOURCE.md): the
    benchmark needs a corpus of this kind, not that exact byte stream."""
    if (corpora_root() / name / ".complete").exists():
        return
    script = REPO / "data_prep" / "corpora" / "fetch_corpora.py"
    cmd = [sys.executable, str(script), "--out", str(corpora_root()), "--allow-newer", name]
    subprocess.run(cmd, check=True)


def ensure_dataset(corpus: str, seq_len: int) -> Path:
    """The corpus prepared at `seq_len` (its YAML's split), under data/quality/."""
    from mbtrain.data import PrepareConfig, prepare
    from mbtrain.data.corpus import load_corpus

    out = REPO / "data" / "quality" / f"{corpus}-{seq_len}"
    if (out / "val" / "mbtrain.json").exists():
        return out
    ensure_corpus(corpus)
    spec = load_corpus(str(REPO / "data_prep" / "corpora" / f"{corpus}.yaml"))
    spec.update(out=str(out), seq_len=seq_len, workers=1, progress=False)
    prepare(PrepareConfig(**spec))
    return out


def _env(threads: int) -> dict:
    return {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(threads),
    }


def _train(run_dir: Path, overrides: list[str], threads: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "mbtrain.cli.main",
        "train",
        str(RECIPE),
        f"run.dir={run_dir}",
        *overrides,
    ]
    p = subprocess.run(cmd, cwd=REPO, env=_env(threads), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def config_of(overrides: list[str]):
    from mbtrain.train.run_config import load_config

    return load_config(RECIPE, overrides)


def calibrate(
    data: Path, overrides: list[str], run_dir: Path, threads: int, steps: int = 16
) -> float:
    """Training bytes/s of this candidate on this corpus (steps after the first quarter)."""
    subprocess.run(["rm", "-rf", str(run_dir)])
    _train(run_dir, [*overrides, f"data.train={data}/train", f"data.val={data}/val",
                     f"train.steps={steps}", "train.eval_every=0", "train.eval_batches=1",
                     "checkpoint.every=0", "train.log_every=1", "train.sample_bytes=0",
                     "logging.wandb=disabled"], threads)  # fmt: skip
    rows = [r for r in _rows(run_dir) if "bytes_per_s" in r and r["step"] > steps // 4]
    subprocess.run(["rm", "-rf", str(run_dir)])
    return sorted(r["bytes_per_s"] for r in rows)[len(rows) // 2]


def score(run_dir: Path, data: Path, eval_bytes: int) -> dict:
    """Held-out bpb (sliding windows) and compressors on the same whole documents."""
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.data import iter_documents
    from mbtrain.inference.compressors import compressor_bpb
    from mbtrain.model import score_bytes

    docs, total = [], 0
    for _, body in iter_documents(str(data / "val")):
        docs.append(body)
        total += len(body)
        if total >= eval_bytes:
            break
    model = load_model(run_dir)
    context = model.cfg.seq_len
    nats = count = 0.0
    t0 = time.perf_counter()
    for body in docs:
        r = score_bytes(model, body, context=context, mode="sliding", batch_size=32)
        nats, count = nats + r.nats, count + r.count
    per_doc: dict[str, float] = {}
    for body in docs:
        for name, bpb in compressor_bpb(body).items():
            per_doc[name] = per_doc.get(name, 0.0) + bpb * len(body)
    return {
        "bpb": nats / count / math.log(2),
        "bytes": total,
        "documents": len(docs),
        "eval_s": time.perf_counter() - t0,
        "per_document": {k: v / total for k, v in per_doc.items()},
        "stream": compressor_bpb(b"".join(docs)),
    }


def run_one(corpus: str, name: str, minutes: float, eval_bytes: int, threads: int) -> dict:
    overrides = CANDIDATES[name]
    cfg = config_of(overrides)
    data = ensure_dataset(corpus, cfg.model.seq_len)
    work = REPO / "runs" / "quality"
    tag = _tag(corpus, name, minutes)
    bps = calibrate(data, overrides, work / f"{tag}.calibrate", threads)
    # A growing candidate is calibrated at its longest window; its short windows' speed
    # differs, so its wall clock is what `train_minutes` reports, not exactly `minutes`.
    steps = max(20, int(minutes * 60 * bps / bytes_per_step(name, cfg)))
    overrides = [*overrides, *schedule_overrides(name, steps)]
    run_dir = work / tag
    subprocess.run(["rm", "-rf", str(run_dir)])
    t0 = time.perf_counter()
    _train(run_dir, [*overrides, f"data.train={data}/train", f"data.val={data}/val",
                     f"train.steps={steps}", f"train.eval_every={max(1, steps // 8)}",
                     "checkpoint.every=0", "train.sample_bytes=0", "logging.wandb=disabled"],
           threads)  # fmt: skip
    wall = time.perf_counter() - t0
    rows = _rows(run_dir)
    curve = _curve(rows)
    last = [r for r in rows if "bytes_seen" in r][-1]
    result_file = work / f"{tag}.score.json"
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_quality", "--score", str(run_dir), str(data),
         str(eval_bytes), str(result_file)],
        cwd=REPO, env=_env(threads), capture_output=True, text=True,
    )  # fmt: skip
    if p.returncode:
        raise RuntimeError(f"scoring {run_dir}:\n{p.stderr[-3000:]}")
    res = {
        "corpus": corpus,
        "candidate": name,
        "overrides": overrides,
        "model": summary(config_of(overrides)),
        "minutes": minutes,
        "threads": threads,
        "steps": steps,
        "bytes_per_s": bps,
        "train_minutes": last["elapsed_s"] / 60,
        "wall_minutes": wall / 60,
        "bytes_seen": last["bytes_seen"],
        "curve": curve,
        "score": json.loads(result_file.read_text()),
        "command": " ".join(["python -m benchmarks.bench_quality", *sys.argv[1:]]),
    }
    s = res["score"]
    print(f"[quality] {corpus} {name}: {s['bpb']:.3f} bpb (gzip -9 per document "
          f"{s['per_document']['gzip -9']:.3f}, stream {s['stream']['gzip -9']:.3f}) after "
          f"{res['train_minutes']:.1f} min, {res['bytes_seen'] / 1e6:.1f} MB", flush=True)  # fmt: skip
    return res


def _curve(rows: list[dict]) -> list[tuple[float | None, float]]:
    """(training seconds, validation bpb) per evaluation; the time is that of the last logged
    step at or before it (evaluations need not fall on logging steps)."""
    logged = sorted((r["step"], r["elapsed_s"]) for r in rows if "elapsed_s" in r)
    steps = [step for step, _ in logged]
    curve = []
    for r in rows:
        if "val_bpb" in r:
            i = bisect.bisect_right(steps, r["step"])
            curve.append((logged[i - 1][1] if i else None, r["val_bpb"]))
    return curve


def _tag(corpus: str, candidate: str, minutes: float) -> str:
    """A run's directory name under runs/quality/."""
    return f"{corpus}-{candidate}-{minutes:g}min"


def _write(results: list[dict], out: Path) -> None:
    # results_quality.md -> bench_quality.png; another report (results_schedule.md) gets its own
    png = "bench_quality.png" if out.stem == "results_quality" else f"bench_{out.stem[8:]}.png"
    plot(results, out.parent / png)
    out.write_text(report(results, png))


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted(
        {r["corpus"] for r in results}, key=lambda c: CORPORA.index(c) if c in CORPORA else 99
    )
    fig, axes = plt.subplots(1, len(corpora), figsize=(5 * len(corpora), 4), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        rows = [r for r in results if r["corpus"] == corpus]
        for r in rows:
            pts = [(t / 60, v) for t, v in r["curve"] if t is not None]
            if pts:
                label = f"{r['candidate']} {r['minutes']:g}min (held-out {r['score']['bpb']:.2f})"
                ax.plot(*zip(*pts), marker=".", label=label)
        styles = {"gzip -9": "--", "bzip2 -9": ":", "xz -9e": "-."}
        for name, style in styles.items():
            ax.axhline(rows[0]["score"]["stream"][name], color="gray", linestyle=style, label=name)
        ax.set_title(corpus)
        ax.set_xlabel("training minutes")
        ax.set_ylabel("bits per byte (validation)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def report(results: list[dict], png: str) -> str:
    import torch

    commands = list(dict.fromkeys(r["command"] for r in results))
    lines = [
        "# Quality on real data: held-out bits per byte after minutes of CPU training",
        "",
        *[f"- command: `{c}`" for c in commands],
        f"- written: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, fp32",
        "- corpora: data_prep/corpora/*.yaml (made by fetch_corpora.py from pinned Debian "
        "packages; their SOURCE.md files list sources, sizes and licences); held-out documents as "
        "the YAML splits them",
        "- score: whole held-out documents in stored order up to the eval cap, every byte scored "
        "with sliding windows (stride context/2); compressors on exactly the same bytes, each "
        "document on its own (as the model scores it) and as one stream (the stronger yardstick, "
        "in bold)",
        "- `min x cores`: the training budget and the cores the run had (runs of one invocation "
        "share the machine evenly, so they compare with each other)",
        f"- plot: [{png}]({png}) (validation bpb logged by the loop against training minutes; "
        "gray lines: compressors on the held-out stream)",
        "",
        "| corpus | candidate | resolved | min x cores | MB seen | held-out bpb | gzip -9 (doc / **stream**) "
        "| bzip2 -9 (doc / **stream**) | xz -9e (doc / **stream**) | eval bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {c: i for i, c in enumerate(CORPORA)}
    rows = sorted(
        results, key=lambda r: (order.get(r["corpus"], 99), -r["minutes"], r["score"]["bpb"])
    )
    for r in rows:
        s = r["score"]
        cmp = " | ".join(
            f"{s['per_document'][n]:.3f} / **{s['stream'][n]:.3f}**"
            for n in ("gzip -9", "bzip2 -9", "xz -9e")
        )
        gz = s["per_document"]["gzip -9"], s["stream"]["gzip -9"]
        win = (
            " (below both gzip)"
            if s["bpb"] < min(gz)
            else " (below gzip per doc)"
            if s["bpb"] < gz[0]
            else ""
        )
        lines.append(
            f"| {r['corpus']} | {r['candidate']} | {r.get('model', '')} | "
            f"{r['minutes']:g} x {r['threads']} | "
            f"{r['bytes_seen'] / 1e6:.1f} | **{s['bpb']:.3f}**{win} | {cmp} | {s['bytes']:,} |"
        )
    lines += ["", "## Candidates", ""]
    for name, over in dict.fromkeys((r["candidate"], " ".join(r["overrides"])) for r in rows):
        lines.append(f"- `{name}`: recipes/cpu.yaml {over or '(as it is)'}")
    lines += [
        "",
        "`resolved` is what the run actually trained (sequence length, patch, global width x "
        "layers, local width x layers, batch, peak learning rate, and any change from the "
        "paper's defaults): the overrides are relative to recipes/cpu.yaml as it was when the row "
        "was made (the recipe took the screen's winners: patch 16, untied head).",
    ]
    return "\n".join(lines) + "\n"


def _key(r: dict) -> tuple:
    return (r["corpus"], r["candidate"], r["minutes"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training time per run")
    ap.add_argument("--corpora", default=",".join(CORPORA))
    ap.add_argument("--candidates", default="cpu", help="names from CANDIDATES, or all")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (cores shared evenly)")
    ap.add_argument("--eval-bytes", type=int, default=1_000_000, help="held-out bytes scored")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results_quality.md"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results_quality.json"))
    ap.add_argument(
        "--score", nargs=4, metavar=("RUN", "DATA", "BYTES", "OUT"), help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--replot",
        action="store_true",
        help="rebuild the curves from the runs still under runs/quality, rewrite report and plot",
    )
    args = ap.parse_args()
    if args.replot:
        out_json = Path(args.json)
        results = json.loads(out_json.read_text())
        for r in results:
            run_dir = REPO / "runs" / "quality" / _tag(r["corpus"], r["candidate"], r["minutes"])
            if (run_dir / "metrics.jsonl").exists():
                r["curve"] = _curve(_rows(run_dir))
        out_json.write_text(json.dumps(results, indent=1))
        _write(results, Path(args.out))
        return
    if args.score:
        run_dir, data, eval_bytes, out = args.score
        Path(out).write_text(json.dumps(score(Path(run_dir), Path(data), int(eval_bytes))))
        return
    names = list(CANDIDATES) if args.candidates == "all" else args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; valid: {', '.join(CANDIDATES)} or all")
    corpora = args.corpora.split(",")
    # datasets first, one at a time (two jobs must not prepare the same one)
    for corpus in corpora:
        for name in names:
            ensure_dataset(corpus, config_of(CANDIDATES[name]).model.seq_len)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    out_json = Path(args.json)
    results = json.loads(out_json.read_text()) if out_json.exists() else []
    lock = threading.Lock()

    def one(job: tuple[str, str]) -> None:
        r = run_one(job[0], job[1], args.minutes, args.eval_bytes, threads)
        with lock:
            results[:] = [x for x in results if _key(x) != _key(r)] + [r]
            out_json.write_text(json.dumps(results, indent=1))

    jobs = [(c, n) for c in corpora for n in names]
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(one, j) for j in jobs]:
            f.result()
    _write(results, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
