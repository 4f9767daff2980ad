"""The PNGs beside benchmarks/results.md: scaling (bytes/s, memory, analytic attention cost
against T) and generation / MFU bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the benchmarks run headless
import matplotlib.pyplot as plt


def attention_flops(arch_kw: dict, t: int) -> dict:
    """Training attention FLOPs per sequence (scores + weighted sum, 3x forward)."""
    if arch_kw["arch"] == "transformer":
        return {"baseline": 3 * arch_kw["layers"] * 4 * t * t * arch_kw["dim"]}
    p, w = arch_kw["patch_size"], arch_kw["patch_size"] * arch_kw["global_dim"]
    k = t // p
    return {
        "global": 3 * arch_kw["global_layers"] * 4 * k * k * w,  # ~T^2/P^2
        "local": 3 * arch_kw["local_layers"] * 4 * t * p * arch_kw["local_dim"],  # ~T*P
    }


def _measured_panels(ax, rows: list[dict]) -> None:
    """Training bytes/s (ax[0]) and memory above the idle process (ax[1]) against T; estimated
    baseline rows as open circles."""
    for arch, color in (("megabyte", "C0"), ("transformer", "C3")):
        rs = [r for r in rows if r["arch"] == arch]
        for key, a in (("bytes_per_s", ax[0]), ("mem", ax[1])):

            def val(r, key=key):
                return r["bytes_per_s"] if key == "bytes_per_s" else (
                    r["peak_rss_mib"] - r["rss_model_mib"]
                )  # fmt: skip

            a.plot([r["seq_len"] for r in rs], [val(r) for r in rs], "-", color=color, label=arch)
            est = [r for r in rs if r.get("estimated")]
            meas = [r for r in rs if not r.get("estimated")]
            a.plot([r["seq_len"] for r in meas], [val(r) for r in meas], "o", color=color)
            if est:
                a.plot([r["seq_len"] for r in est], [val(r) for r in est], "o", color=color,
                       mfc="none", label=f"{arch} (estimated)")  # fmt: skip
    ax[0].set(xscale="log", yscale="log", xlabel="T (bytes)", ylabel="training bytes/s",
              title="training throughput (fp32, batch 1)")  # fmt: skip
    ax[1].set(xscale="log", yscale="log", xlabel="T (bytes)",
              ylabel="peak RSS above idle process (MiB)", title="peak memory")  # fmt: skip


def _attention_panel(a, m: dict) -> None:
    """The analytic attention FLOPs of both benchmark models against T."""
    ts = [2**i for i in range(10, 21)]
    base = [attention_flops(m["baseline"], t)["baseline"] for t in ts]
    mb = [attention_flops(m["megabyte"], t) for t in ts]
    a.plot(ts, base, color="C3", label="baseline ~T^2")
    a.plot(ts, [f["global"] for f in mb], "--", color="C0", label="MegaByte global ~T^2/P^2")
    a.plot(ts, [f["local"] for f in mb], ":", color="C0", label="MegaByte local ~T*P")
    a.plot(ts, [f["global"] + f["local"] for f in mb], color="C0", label="MegaByte total")
    a.set(xscale="log", yscale="log", xlabel="T (bytes)",
          ylabel="attention FLOPs per training sequence",
          title="attention cost vs T (analytic, benchmark models)")  # fmt: skip


def plot_scaling(m: dict, path: Path) -> None:
    """bench_scaling.png: section 1's throughput, memory and attention cost against T."""
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    _measured_panels(ax, m["rows"])
    _attention_panel(ax[2], m)
    for a in ax:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _generation_panel(a, g: dict) -> None:
    names = [r["arch"] for r in g["rows"]]
    x = range(len(names))
    a.bar([i - 0.2 for i in x], [r["cached_bytes_per_s"] for r in g["rows"]], 0.4,
          label="KV cache")  # fmt: skip
    a.bar([i + 0.2 for i in x], [r["recompute_bytes_per_s"] for r in g["rows"]], 0.4,
          label="full recompute")  # fmt: skip
    a.set(xticks=list(x), xticklabels=names, yscale="log", ylabel="bytes/s",
          title="generation at 8,192 bytes of context")  # fmt: skip
    a.legend()


def _mfu_panel(a, f: dict) -> None:
    labels, loop, meas = [], [], []
    for name, v in f["variants"].items():
        labels.append(name)
        loop.append(v["loop_mfu_best"] or 0)
        meas.append(v["mfu_vs_measured_peak"])
    x = range(len(labels))
    a.bar([i - 0.2 for i in x], loop, 0.4, label="as the loop reports it")
    a.bar([i + 0.2 for i in x], meas, 0.4, label="vs matmul peak measured here")
    a.axhline(0.5, color="k", ls="--", lw=1, label="target 0.5")
    a.set(xticks=list(x), xticklabels=labels, ylabel="MFU",
          title=f"training loop MFU, {f['recipe']}")  # fmt: skip
    a.legend(fontsize=8)


def plot_generation_mfu(g: dict | None, f: dict | None, path: Path) -> None:
    """bench_generation_mfu.png: section 2's generation bars beside section 5's MFU bars (a
    panel stays empty when its section has no results)."""
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    if g:
        _generation_panel(ax[0], g)
    if f:
        _mfu_panel(ax[1], f)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results: dict, out_dir: Path) -> list[str]:
    """Write the plots that the results have sections for into out_dir; returns their names."""
    files = []
    m = results.get("model")
    if m:
        plot_scaling(m, out_dir / "bench_scaling.png")
        files.append("bench_scaling.png")
    g, f = results.get("gen"), results.get("mfu")
    if g or f:
        plot_generation_mfu(g, f, out_dir / "bench_generation_mfu.png")
        files.append("bench_generation_mfu.png")
    return files
