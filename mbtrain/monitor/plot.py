"""`mbtrain plot`: training curves of one or several runs, overlaid, from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from mbtrain.errors import MbtrainError
from mbtrain.monitor.metrics import read_metrics

PANELS = (
    ("bpb", "train bits/byte", "step"),
    ("val_bpb", "validation bits/byte", "step"),
    ("bytes_per_s", "throughput (bytes/s)", "step"),
    ("lr", "learning rate", "step"),
    ("val_bpb", "validation bits/byte vs bytes seen", "bytes_seen"),
    ("mfu", "model FLOPs utilisation", "step"),
)


def _series(rows: list[dict], key: str, x: str) -> tuple[list, list]:
    xs, ys = [], []
    bytes_at = {r["step"]: r["bytes_seen"] for r in rows if "bytes_seen" in r}
    for r in rows:
        y = r.get(key)
        if not isinstance(y, (int, float)):
            continue
        xv = r["step"] if x == "step" else r.get("bytes_seen", bytes_at.get(r["step"]))
        if xv is None:
            continue
        xs.append(xv)
        ys.append(y)
    return xs, ys


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> dict[str, int]:
    """Write a PNG; return the number of series drawn per panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for d in run_dirs:
        rows = read_metrics(Path(d) / "metrics.jsonl")
        if not rows:
            raise MbtrainError(f"{d}: no metrics.jsonl with any step (is it a run directory?)")
        runs.append((Path(d).name, rows))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    counts = {}
    for ax, (key, title, x) in zip(axes.flat, PANELS):
        n = 0
        for name, rows in runs:
            xs, ys = _series(rows, key, x)
            if xs:
                ax.plot(xs, ys, label=name, marker="o" if len(xs) < 20 else None, markersize=3)
                n += 1
        counts[title] = n
        ax.set_title(title)
        ax.set_xlabel("bytes seen" if x == "bytes_seen" else "step")
        ax.grid(alpha=0.3)
        if key in ("lr",):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if n:
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray"
            )
    fig.suptitle(", ".join(name for name, _ in runs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return counts
