"""Where a training run's numbers go: metrics.jsonl (always), wandb and TensorBoard (optional),
the console. Evaluation samples go to samples.jsonl (always), the console, wandb and TensorBoard.

Rank 0 writes; every rank calls the same methods (the numbers are already reduced over the
ranks). Each component decides its own timing: `record(step, ...)` takes every completed
step and writes a row at `train.log_every` steps and at the last one; throughput counts
training steps only (not evaluation or checkpoint time), over the steps since the last row.
"""

from __future__ import annotations

import logging
import math
import resource
from collections import deque
from pathlib import Path

import torch

from mbtrain.monitor.config import LoggingConfig
from mbtrain.monitor.console import format_train_line
from mbtrain.monitor.metrics import MetricsWriter
from mbtrain.monitor.samples import SampleWriter, format_sample, split_prompt
from mbtrain.monitor.tensorboard_logger import TensorBoardLogger
from mbtrain.monitor.wandb_logger import WandbLogger

LN2 = math.log(2)
log = logging.getLogger(__name__)


def peak_memory_bytes(device: str) -> int:
    """Peak memory of this process: the device's allocator on GPUs, max RSS on CPUs."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class TrainLog:
    def __init__(
        self,
        rank: int,
        run_dir: Path,
        cfg: LoggingConfig,
        run_name: str,
        config: dict,
        resume_step: int,
        wandb_id: str,
        total_steps: int,
        log_every: int,
        flops_per_byte: float,
        total_peak: float,
        device: str,
        sample_prompt: str = "",
    ) -> None:
        self.rank, self.total_steps, self.log_every = rank, total_steps, log_every
        self.flops_per_byte, self.total_peak, self.device = flops_per_byte, total_peak, device
        self.sample_prompt = sample_prompt
        self.metrics = self.wandb = self.tensorboard = self.samples = None
        if rank == 0:
            self.metrics = MetricsWriter(run_dir / "metrics.jsonl", resume_step)
            self.samples = SampleWriter(run_dir / "samples.jsonl", resume_step)
            self.wandb = WandbLogger(cfg, run_dir, run_name, config, wandb_id)
            self.tensorboard = TensorBoardLogger(cfg, run_dir, resume_step)
        self._window_time = self._window_bytes = 0.0
        self._recent: deque[float] = deque(maxlen=20)  # recent step times, for the ETA
        self.bar = None
        if rank == 0 and cfg.progress_bar and resume_step < total_steps:
            from tqdm import tqdm  # only with the bar: tqdm's import is not free

            self.bar = tqdm(total=total_steps, initial=resume_step, unit="step", dynamic_ncols=True)

    def record(
        self,
        step: int,
        loss: float,
        nbytes: float,
        grad_norm: float | None,
        seconds: float,
        lr: float,
        bytes_seen: int,
        elapsed_s: float,
    ) -> None:
        """One completed (not skipped) training step; a row when one is due."""
        self._recent.append(seconds)
        self._window_time += seconds
        self._window_bytes += nbytes
        if step % self.log_every and step != self.total_steps:
            return
        bps = self._window_bytes / max(self._window_time, 1e-9)
        row = {
            "step": step,
            "loss": loss,
            "bpb": loss / LN2,
            "lr": lr,
            "grad_norm": grad_norm,
            "bytes_per_s": bps,
            "bytes_seen": bytes_seen,
            "mfu": bps * self.flops_per_byte / self.total_peak if self.total_peak else None,
            "mem_bytes": peak_memory_bytes(self.device),
            "elapsed_s": elapsed_s,
            "eta_s": (self.total_steps - step) * sum(self._recent) / len(self._recent),
        }
        self._window_time = self._window_bytes = 0.0
        self._write(row)
        self.say(format_train_line(row, self.total_steps))

    def tick(self) -> None:
        """A step ended (logged or not): the progress bar moves."""
        if self.bar is not None:
            self.bar.update(1)

    def evaluation(self, row: dict) -> None:
        """An evaluation row (`step`, `val_loss`, `val_bpb`, optionally `sample`: the prompt
        and the text generated after it)."""
        text, step = row.get("sample"), row["step"]
        self._write({k: v for k, v in row.items() if k != "sample"})
        self.say(f"step {step}: val_bpb {row['val_bpb']:.4f}")
        if text is None or self.rank != 0:
            return
        sample = split_prompt(text, self.sample_prompt)
        self.say(format_sample(step, sample, self.sample_prompt))
        self.samples.write(step, sample, self.sample_prompt)
        self.wandb.log_sample(text, step)
        self.tensorboard.log_sample(sample, self.sample_prompt, step)

    def say(self, text: str) -> None:
        if self.bar is not None and self.rank == 0:
            self.bar.write(f"[mbtrain] {text}")
        else:
            log.info(text)

    def _write(self, row: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(row)
            self.wandb.log(row, row["step"])
            self.tensorboard.log(row, row["step"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.metrics is not None:
            self.metrics.close()
            self.samples.close()
            self.wandb.finish()
            self.tensorboard.finish()
            self.metrics = None
