"""The training loop: one code path for 1 CPU process and for many GPU nodes.

`Trainer(cfg)` sets the run up (`setup.py`: lock, checks, engine, loaders, resume,
monitoring); `run()` is the story of a run: step, log, evaluate, save, until `train.steps`,
then a last evaluation, a checkpoint and the export. Each component decides its own timing
(`log.record`, `evaluator.maybe_evaluate`, `checkpointer.maybe_save`); the special cases live
in their own modules: the pipeline's step (`pipeline_step.py`), the non-finite policy
(`nonfinite.py`), stop requests (`signals.py`), reading data in step (`batches.py`).

Two ways out besides the end: a stop request (Slurm's signal, Ctrl-C) saves the current step
and exits with the code the caller expects; data that can no longer be read (a dataset
deleted mid-run) saves the last completed step and stops with the path named.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mbtrain.checkpoint.export import export_from_engine
from mbtrain.errors import DataError
from mbtrain.train import pipeline_step, step
from mbtrain.train.run_config import RunConfig
from mbtrain.train.setup import setup_run
from mbtrain.train.signals import StopExit, resume_hint
from mbtrain.train.step import StepResult

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    loss: float | None
    val_bpb: float | None
    run_dir: Path
    checkpoint: Path | None


class Trainer:
    """One training run: `Trainer(cfg).run()`, then `close()` (all ranks)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_ = setup_run(cfg)

    def run(self) -> TrainResult:
        r, total = self.run_, self.cfg.train.steps
        state, te = r.state, r.te
        if state.step < total:
            r.log.say(
                f"training {self.cfg.model.arch} for {total} steps on {r.env.world_size} "
                f"{r.env.device} process(es) ({r.layout.describe()}), run dir {r.run_dir}"
            )
        r.stop.install_interrupt(quiet=r.env.rank != 0)
        started, elapsed_before = time.perf_counter(), state.elapsed_s
        last_loss = None
        try:
            while state.step < total:
                t0 = time.perf_counter()
                out = self.train_step()
                state.step += 1
                r.watchdog.beat(state.step)
                state.elapsed_s = elapsed_before + time.perf_counter() - started
                # A skipped step is neither logged nor counted; evaluation, checkpoints and stop
                # requests still happen: a preempted run must not die without its checkpoint.
                if not out.skipped:
                    state.bytes_seen += int(out.bytes)
                    last_loss = out.loss
                    lr = float(te.engine.get_lr()[0])
                    r.log.record(
                        state.step, out.loss, out.bytes, out.grad_norm, time.perf_counter() - t0,
                        lr, state.bytes_seen, state.elapsed_s,
                    )  # fmt: skip
                r.log.tick()
                if (row := r.evaluator.maybe_evaluate(state.step)) is not None:
                    r.log.evaluation(row)
                r.checkpointer.maybe_save(state.step, total)
                if state.step < total and self._stop_requested():
                    self._save_and_stop()
            final = r.evaluator.final(state.step)
            if final is not None:
                r.log.evaluation(final)
            checkpoint = r.checkpointer.save_unless_saved("end")
            self.export()
        except DataError:
            # Every rank raised here together (batches.py): keep the completed steps' work.
            r.checkpointer.save_unless_saved("data error")
            raise
        finally:
            r.stop.uninstall_interrupt()
        val_bpb = final["val_bpb"] if final else None
        return TrainResult(state.step, last_loss, val_bpb, r.run_dir, checkpoint)

    def train_step(self) -> StepResult:
        """One optimizer step over `train.grad_accum` micro-batches."""
        r, tr = self.run_, self.cfg.train
        batches = r.train_loader.batches(r.state.step)  # at the step's window
        if r.te.pipeline:
            return pipeline_step.train_step(r.te, batches, tr.grad_accum, r.policy)
        return step.train_step(
            r.te, batches, tr.grad_accum, r.policy, self.cfg.model.doc_mask, tr.precision
        )

    def _stop_requested(self) -> bool:
        """Whether any rank was asked to stop (every rank learns it at the same step)."""
        return self.run_.te.all_reduce_max([1.0 if self.run_.stop.requested else 0.0])[0] > 0

    def _save_and_stop(self) -> None:
        r = self.run_
        why = r.stop.describe()
        path = r.checkpointer.save_unless_saved(f"signal {why}")
        r.log.say(
            f"stopped at step {r.state.step} ({why}); checkpoint {path}; "
            f"{resume_hint(r.run_dir, r.env.world_size, r.stop.exit_code)}"
        )
        raise StopExit(r.stop.exit_code)

    def export(self) -> Path | None:
        r = self.run_
        return export_from_engine(
            r.te.engine, self.cfg.model, r.layout, r.te.groups, r.run_dir / "export", r.state.step
        )

    def close(self) -> None:
        r = getattr(self, "run_", None)
        if r is None:
            return
        r.watchdog.stop()
        r.log.close()
        if r.lock is not None:
            r.lock.release()


def train(cfg: RunConfig) -> TrainResult:
    """Train (or resume) the run described by `cfg`; all ranks call this."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.close()
