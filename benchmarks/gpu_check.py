"""The GPU half of issue 9, for one NVIDIA GPU (sized for an H200 and < 8 minutes); run by gpu.sh.

Sections, each under its own time limit, each writing what it got even if a later one fails:

1. scaling: MegaByte vs the byte-level baseline at ~113M parameters each, bf16 autocast,
   T = 4K, 16K, 64K (MegaByte also 256K); 65,536 bytes per step (B = 65,536 / T); training
   bytes/s (forward + backward + AdamW) and peak allocated memory.
2. generation at 8,192 bytes of context: KV cache vs a full forward per byte.
3. context_1m: the long_context_1m.yaml model (~830M parameters, P = 16, rope, activation
   checkpointing) at T = 1,048,576 bytes in bf16: one forward + backward, peak memory, and the
   memory the optimizer state would add (fp32 master + Adam moments, 12 bytes/parameter).
4. loop: the real training loop (`mbtrain train`, DeepSpeed, 1 process, bf16) on
   recipes/paper_text.yaml and recipes/long_context_1m.yaml with parallel.tensor=1, a few steps
   on the pystdlib corpus prepared here at the recipe's seq_len; bytes/s, the loop's `mfu`
   (against the H200's dense bf16 peak, 989 TFLOP/s) and peak memory from metrics.jsonl.

Sections 1-3 need only torch and this repository; section 4 needs the wheels in .whl/.
Without a GPU (`--dry-run`, or automatically) every section runs at toy sizes on the CPU to
check the code paths.

    python benchmarks/gpu_check.py --out DIR [--only scaling,generation,context_1m,loop]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbtrain.model import ModelConfig, build_model, count_parameters, flops_per_byte  # noqa: E402

# Most important first: each section gets what is left of the time budget.
SECTIONS = ("context_1m", "loop", "scaling", "generation")
# ~113M parameters each; the baseline's width equals MegaByte's global width.
MEGABYTE = dict(
    arch="megabyte", pos="rope", patch_size=8, global_dim=128, global_layers=8, global_heads=16,
    local_dim=512, local_layers=4, local_heads=8, dropout=0.0,
)  # fmt: skip
BASELINE = dict(arch="transformer", pos="rope", dim=1024, layers=9, heads=16, dropout=0.0)
# recipes/long_context_1m.yaml's model (kept here so sections 1-3 need no omegaconf).
LONG_1M = dict(
    arch="megabyte", seq_len=1048576, patch_size=16, global_dim=128, global_layers=16,
    global_heads=16, local_dim=512, local_layers=8, local_heads=8, pos="rope", dropout=0.0,
    activation_checkpointing=True, loss_chunk_size=65536,
)  # fmt: skip
# Wall-clock deadline of the whole check (set in main); long sections stop adding cases past it.
DEADLINE = float("inf")


def out_of_time(margin: float = 20.0) -> bool:
    return time.perf_counter() > DEADLINE - margin


TINY = dict(global_dim=16, global_layers=1, local_dim=32, local_layers=1, dim=32, layers=1)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Box:
    """Device, dtype and sizes of this run: the GPU, or toy sizes on the CPU (dry run)."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.dtype = torch.bfloat16

    def sync(self) -> None:
        if not self.dry:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if not self.dry:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return None if self.dry else torch.cuda.max_memory_allocated() / 2**30

    def cfg(self, kw: dict, **over) -> ModelConfig:
        kw = {**kw, **over}
        if self.dry:  # toy widths and lengths, same code paths
            kw.update({k: v for k, v in TINY.items() if k in kw})
            for h in ("global_heads", "local_heads", "heads"):
                if h in kw:
                    kw[h] = 2
        return ModelConfig(**kw)


def train_speed(box: Box, cfg: ModelConfig, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    box.reset_peak()
    with torch.device(box.device):  # initialise on the device: no slow CPU init of big models
        model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=not box.dry)
    x = torch.randint(0, 256, (batch, cfg.seq_len), device=box.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(box.device, dtype=box.dtype):
            loss = model.loss(x)
        loss.backward()
        opt.step()

    step()  # warm-up: kernels, allocator, optimizer state
    box.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    box.sync()
    dt = (time.perf_counter() - t0) / steps
    nbytes = batch * cfg.seq_len
    out = {
        "arch": cfg.arch,
        "seq_len": cfg.seq_len,
        "batch": batch,
        "params": count_parameters(cfg),
        "step_s": dt,
        "bytes_per_s": nbytes / dt,
        "tflops_per_s": flops_per_byte(cfg) * nbytes / dt / 1e12,
        "peak_gib": box.peak_gib(),
    }
    return out  # model and optimizer are freed with this frame


def scaling(box: Box) -> dict:
    ts = [256, 1024] if box.dry else [4096, 16384, 65536, 262144]
    per_step = ts[-2] if box.dry else 65536
    rows = []
    for t in ts:
        for arch, kw in (("megabyte", MEGABYTE), ("transformer", BASELINE)):
            if arch == "transformer" and t == ts[-1]:
                continue  # MegaByte only at the longest T
            if out_of_time():
                rows.append({"arch": arch, "seq_len": t, "oom": True, "skipped": "time budget"})
                continue
            cfg = box.cfg(kw, seq_len=t)
            try:
                rows.append(train_speed(box, cfg, max(1, per_step // t), 1 if box.dry else 3))
            except torch.OutOfMemoryError:
                rows.append({"arch": arch, "seq_len": t, "oom": True})
            log(f"scaling {rows[-1]}")
    return {"rows": rows, "megabyte": MEGABYTE, "baseline": BASELINE}


def generation(box: Box) -> dict:
    from mbtrain.model import generate

    ctx = 512 if box.dry else 8192
    rows = []
    for arch, kw in (("megabyte", MEGABYTE), ("transformer", BASELINE)):
        if out_of_time():
            break
        cfg = box.cfg(kw, seq_len=ctx)
        with torch.device(box.device):
            model = build_model(cfg).to(box.dtype).eval()
        n_cached, n_re = (16, 2) if box.dry else (256, 8)
        prompt = torch.randint(0, 256, (ctx - n_cached - 1,))
        it = generate(model, prompt, max_bytes=n_cached + 1, seed=0)
        next(it)  # prefill + first byte
        box.sync()
        t0 = time.perf_counter()
        n = sum(1 for _ in it)
        box.sync()
        cached = n / (time.perf_counter() - t0)
        x = torch.randint(0, 256, (1, ctx), device=box.device)
        with torch.no_grad():
            model(x)
            box.sync()
            t0 = time.perf_counter()
            for _ in range(n_re):
                nxt = model(x)[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x[:, 1:], nxt], dim=1)
            box.sync()
        recompute = n_re / (time.perf_counter() - t0)
        rows.append({"arch": arch, "context": ctx, "cached_bytes_per_s": cached,
                     "recompute_bytes_per_s": recompute, "speedup": cached / recompute})  # fmt: skip
        log(f"generation {rows[-1]}")
        del model
    return {"rows": rows}


def context_1m(box: Box) -> dict:
    cfg = box.cfg(LONG_1M, **({"seq_len": 4096, "loss_chunk_size": 1024} if box.dry else {}))
    params = count_parameters(cfg)
    box.reset_peak()
    torch.manual_seed(0)
    with torch.device(box.device):
        model = build_model(cfg).to(box.dtype)
    weights = box.peak_gib()
    x = torch.randint(0, 256, (1, cfg.seq_len), device=box.device)
    box.sync()
    t0 = time.perf_counter()
    loss = model.loss(x)
    loss.backward()
    box.sync()
    dt = time.perf_counter() - t0
    peak = box.peak_gib()
    out = {
        "seq_len": cfg.seq_len,
        "params": params,
        "activation_checkpointing": cfg.activation_checkpointing,
        "loss": float(loss),
        "fwd_bwd_s": dt,
        "weights_gib": weights,
        "peak_gib": peak,
        "optimizer_state_gib": params * 12 / 2**30,
        "bytes_per_s": cfg.seq_len / dt,
        "tflops_per_s": flops_per_byte(cfg) * cfg.seq_len / dt / 1e12,
    }
    log(f"context_1m {out}")
    del model, loss
    return out


def prepare_data(seq_len: int, root: Path) -> Path:
    """The pystdlib corpus prepared at seq_len (tiny, real bytes) under root."""
    out = root / f"pystdlib-{seq_len}"
    if not (out / "train" / "index.json").exists():
        from mbtrain.data import PrepareConfig, prepare
        from mbtrain.data.corpus import load_corpus

        corpus = load_corpus(str(REPO / "data_prep/corpora/pystdlib.yaml"))
        prepare(PrepareConfig(inputs=corpus["inputs"], exclude=corpus["exclude"], out=str(out),
                              seq_len=seq_len, val_fraction=0.05, workers=1, progress=False))  # fmt: skip
    return out / "train"


def loop(box: Box, outdir: Path, limit_s: float) -> dict:
    runs = [("paper_text", "recipes/paper_text.yaml", 8, []), (
        "long_context_1m", "recipes/long_context_1m.yaml", 3, ["train.grad_accum=1"])]  # fmt: skip
    rows = []
    for name, recipe, steps, extra in runs:
        over = [
            "parallel.tensor=1",
            f"train.steps={steps}",
            "train.log_every=1",
            "train.eval_every=0",
            "train.sample_bytes=0",
            "checkpoint.every=0",
            "logging.wandb=disabled",
            "data.num_workers=0",
            "data.val=null",
            *extra,
        ]
        seq = {"paper_text": 8192, "long_context_1m": 1048576}[name]
        if box.dry:
            recipe = "recipes/tiny_cpu.yaml"
            seq = 512
            over = [o for o in over if not o.startswith("train.grad_accum")]
            over += ["train.steps=2", "train.device=cpu", "train.precision=fp32"]
        run_dir = outdir / "runs" / name
        train = prepare_data(seq, outdir / "data")
        cmd = [sys.executable, "-m", "mbtrain.cli.main", "train", recipe, f"run.dir={run_dir}",
               f"data.train={train}", *over]  # fmt: skip
        log(" ".join(cmd))
        t0 = time.perf_counter()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        try:
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=max(60, limit_s / len(runs)))  # fmt: skip
            rc, tail = p.returncode, (p.stdout + p.stderr)[-4000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = "timeout", str(e.stdout or "")[-2000:] + str(e.stderr or "")[-2000:]
        wall = time.perf_counter() - t0
        (outdir / f"loop_{name}.log").write_text(tail)
        metrics = run_dir / "metrics.jsonl"
        rs = [json.loads(s) for s in metrics.read_text().splitlines()] if metrics.exists() else []
        rs = [r for r in rs if "bytes_per_s" in r]
        later = rs[1:] or rs  # step 1 is warm-up
        row = {"name": name, "rc": rc, "wall_s": wall, "steps_logged": len(rs)}
        if later:
            row.update(
                bytes_per_s=max(r["bytes_per_s"] for r in later),
                mfu=max(r["mfu"] or 0 for r in later),
                mem_gib=max(r["mem_bytes"] for r in rs) / 2**30,
                loss=rs[-1]["loss"],
            )
        rows.append(row)
        log(f"loop {row}")
    return {"rows": rows}


def report(res: dict, box: Box, args: argparse.Namespace) -> str:
    dev = "CPU dry run (toy sizes)" if box.dry else torch.cuda.get_device_name()
    lines = [
        "# GPU benchmarks (issue 9)"
        + (" — CPU DRY RUN, toy sizes, not results" if box.dry else ""),
        "",
        f"- command: `bash benchmarks/gpu.sh` (`python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`)",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- device: {dev}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python "
        f"{platform.python_version()}",
        "",
    ]
    s = res.get("scaling")
    if s:
        lines += ["## 1. Training: MegaByte vs baseline (bf16 autocast, AdamW, 65,536 bytes/step)",
                  "", f"- MegaByte `{s['megabyte']}`", f"- baseline `{s['baseline']}`", "",
                  "| arch | T | batch | params | step (s) | bytes/s | model TFLOP/s | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in s["rows"]:
            if r.get("oom"):
                why = r.get("skipped", "OOM")
                lines.append(f"| {r['arch']} | {r['seq_len']:,} | {why} | | | | | |")
                continue
            lines.append(
                f"| {r['arch']} | {r['seq_len']:,} | {r['batch']} | {r['params'] / 1e6:.1f}M | "
                f"{r['step_s']:.3f} | {r['bytes_per_s']:,.0f} | {r['tflops_per_s']:.1f} | "
                f"{r['peak_gib'] or 0:.2f} |"
            )
        by = {(r["arch"], r["seq_len"]): r for r in s["rows"] if not r.get("oom")}
        lines += [
            "",
            "| T | MegaByte/baseline bytes/s | MegaByte/baseline memory |",
            "|---|---|---|",
        ]
        for (arch, t), a in sorted(by.items(), key=lambda kv: kv[0][1]):
            b = by.get(("transformer", t))
            if arch == "megabyte" and b:
                mem = (a["peak_gib"] / b["peak_gib"]) if b["peak_gib"] else float("nan")
                lines.append(f"| {t:,} | {a['bytes_per_s'] / b['bytes_per_s']:.1f}x | {mem:.2f} |")
        lines.append("")
    g = res.get("generation")
    if g:
        lines += ["## 2. Generation (bf16 weights)", "",
                  "| arch | context | KV cache bytes/s | recompute bytes/s | speed-up |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in g["rows"]:
            lines.append(f"| {r['arch']} | {r['context']:,} | {r['cached_bytes_per_s']:,.1f} | "
                         f"{r['recompute_bytes_per_s']:.2f} | {r['speedup']:,.0f}x |")  # fmt: skip
        lines.append("")
    c = res.get("context_1m")
    if c:
        total = (c["peak_gib"] or 0) + c["optimizer_state_gib"]
        lines += ["## 3. Longest context: one training step at T = "
                  f"{c['seq_len']:,} bytes", "",
                  f"- model: recipes/long_context_1m.yaml's, {c['params'] / 1e6:.0f}M parameters, "
                  f"bf16 weights, activation checkpointing {c['activation_checkpointing']}",
                  f"- forward + backward: {c['fwd_bwd_s']:.1f} s ({c['bytes_per_s']:,.0f} bytes/s, "
                  f"{c['tflops_per_s']:.0f} model TFLOP/s), loss {c['loss']:.3f}",
                  f"- peak allocated: {c['peak_gib'] or 0:.1f} GiB (weights {c['weights_gib'] or 0:.1f} "
                  f"GiB); + fp32 master and Adam state ({c['optimizer_state_gib']:.1f} GiB, 12 B/param)"
                  f" = {total:.1f} GiB on one GPU without ZeRO sharding", ""]  # fmt: skip
    lp = res.get("loop")
    if lp:
        lines += ["## 4. Training loop (`mbtrain train`, DeepSpeed, 1 process, bf16, parallel.tensor=1)",
                  "", "| recipe | rc | steps | bytes/s (best after step 1) | loop mfu | peak GiB | loss |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in lp["rows"]:
            lines.append(f"| {r['name']} | {r['rc']} | {r['steps_logged']} | "
                         f"{r.get('bytes_per_s', 0):,.0f} | {r.get('mfu', 0):.3f} | "
                         f"{r.get('mem_gib', 0):.1f} | {r.get('loss', float('nan')):.3f} |")  # fmt: skip
        lines += ["", "Targets: paper_text MFU >= 0.45 of bf16 peak; 1,048,576-byte context with "
                  ">= 100M parameters on one H200 (section 3).", ""]  # fmt: skip
    for name, err in res.get("errors", {}).items():
        lines += [f"<details><summary>error in {name}</summary>", "", "```", err[-3000:], "```",
                  "</details>", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "benchmarks"))
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole check")
    args = ap.parse_args()
    box = Box(args.dry_run or not torch.cuda.is_available())
    if not box.dry:
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    global DEADLINE
    DEADLINE = t_start + args.budget
    res: dict = {"errors": {}, "dry_run": box.dry}
    only = args.only.split(",")
    for name in SECTIONS:
        if name not in only:
            continue
        left = args.budget - (time.perf_counter() - t_start)
        if left < 30:
            res["errors"][name] = f"skipped: {left:.0f} s of the budget left"
            continue
        log(f"section {name} ({left:.0f} s left)")
        try:
            res[name] = loop(box, out, left) if name == "loop" else globals()[name](box)
        except Exception:
            res["errors"][name] = traceback.format_exc()
            log(res["errors"][name])
        if not box.dry:
            torch.cuda.empty_cache()
        (out / "results_gpu.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "results_gpu.md").write_text(report(res, box, args))
    (out / "results_gpu.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "results_gpu.md").write_text(report(res, box, args))
    log(f"done in {time.perf_counter() - t_start:.0f} s: {out / 'results_gpu.md'}")


if __name__ == "__main__":
    main()
