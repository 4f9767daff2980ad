"""TensorBoard, optional (`logging.tensorboard`): event files under <run_dir>/tensorboard/.

Every number of every metrics row is a scalar under the row's own key (`loss`, `bpb`,
`val_bpb`, ...), and each evaluation sample is text (`sample`), all on the training-step
axis metrics.jsonl uses. A resumed run writes with `purge_step` = its step + 1: TensorBoard
then hides what the interrupted run logged after the checkpoint, as metrics.jsonl drops it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mbtrain.monitor.config import LoggingConfig


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric values (not `step`; None, booleans and text are not scalars)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def as_markdown(text: str) -> str:
    """`text` as a fenced code block: TensorBoard renders text as Markdown, which would eat the
    sample's newlines, indentation and `#`s. The fence is longer than any run of backticks in it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


class TensorBoardLogger:
    def __init__(self, cfg: LoggingConfig, run_dir: Path, resume_step: int) -> None:
        self.writer = None
        if not cfg.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when on

        self.writer = SummaryWriter(
            log_dir=str(run_dir / "tensorboard"), purge_step=resume_step + 1, flush_secs=30
        )

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, step)  # NaN and inf too: a diverged loss is news

    def log_sample(self, sample: str, prompt: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text("sample", as_markdown(prompt + sample), step)

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
