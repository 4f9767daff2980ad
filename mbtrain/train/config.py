"""Configs of the training loop (`train.*`) and of the optimizer and schedule (`optim.*`).

Batch sizes live here and only here: the DeepSpeed config is generated from these fields
(`mbtrain.train.ds_config`), so there is no second place where a batch size could disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbtrain.config.checks import Checks

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
NONFINITE_POLICIES = ("skip", "stop")
SCHEDULES = ("cosine", "linear", "polynomial", "constant")


@dataclass
class TrainConfig:
    steps: int = 1000
    """Optimizer steps to train for (the run ends at this step)."""
    seed: int = 0
    """Run seed: fixes initialisation, data order and dropout."""
    micro_batch_size: int = 1
    """Sequences per data-parallel rank per forward/backward."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (owned by DeepSpeed)."""
    global_batch_size: int = 0
    """Sequences per optimizer step; 0 derives it (micro x accum x data-parallel), else checked."""
    precision: str = "fp32"
    """Numeric precision: fp32 (CPU) or bf16 (GPU)."""
    device: str = "auto"
    """Device: auto (cuda if available), cpu or cuda."""
    compile: bool = False
    """torch.compile every transformer block (inductor). Off by default: on the CPUs measured
    it gained nothing and costs ~40 s of compilation per process (benchmarks/NOTES.md)."""
    keep_host_memory: bool = True
    """Keep freed host memory in the process (glibc malloc thresholds, see
    mbtrain.train.host_memory) instead of page-faulting every step's activations in again."""
    eval_every: int = 0
    """Validate every N steps (0: only at the end)."""
    eval_batches: int = 8
    """Validation micro-batches per evaluation (per data-parallel rank)."""
    log_every: int = 10
    """Write a metrics line and a console line every N steps."""
    on_nonfinite: str = "stop"
    """On a NaN/inf loss or gradient: skip the step or stop the run."""
    max_nonfinite_skips: int = 10
    """With on_nonfinite=skip: stop after this many skipped steps in a row."""
    watchdog_factor: float = 20.0
    """A step slower than factor x the median step time dumps every rank's stacks."""
    watchdog_min_s: float = 300.0
    """The watchdog never fires before a step has run this many seconds."""
    watchdog_exit_s: float = 1800.0
    """A step still stuck this long after the stack dump makes the rank exit with code 76, which
    the Slurm script requeues (resume from the last checkpoint); 0: dump only, never exit."""
    sample_bytes: int = 200
    """Bytes generated at each evaluation as a sample (0: none)."""
    sample_prompt: str = ""
    """Prompt for the evaluation sample (UTF-8 text)."""
    seq_len_schedule: list[list[int]] = field(default_factory=list)
    """Windows that grow during the run: `[[0, 512], [2000, 2048], [6000, 8192]]` trains
    windows of 512 bytes from step 0, 2048 from step 2000, ...; each at most model.seq_len
    (the model and its dataset are built for the longest), cut from the same prepared samples.
    Empty: model.seq_len throughout."""

    def global_batch(self, data_parallel: int) -> int:
        """Sequences per optimizer step with `data_parallel` replicas."""
        return self.micro_batch_size * self.grad_accum * data_parallel

    def validate(self) -> list[str]:
        c = Checks("train")
        for name in ("steps", "micro_batch_size", "grad_accum", "log_every", "eval_batches"):
            c.at_least(name, getattr(self, name), 1)
        for name in ("global_batch_size", "eval_every", "sample_bytes", "max_nonfinite_skips"):
            c.at_least(name, getattr(self, name), 0)
        c.one_of("precision", self.precision, PRECISIONS)
        c.one_of("device", self.device, DEVICES)
        c.one_of("on_nonfinite", self.on_nonfinite, NONFINITE_POLICIES)
        c.above("watchdog_factor", self.watchdog_factor, 1)
        c.at_least("watchdog_min_s", self.watchdog_min_s, 0)
        c.at_least("watchdog_exit_s", self.watchdog_exit_s, 0)
        sched = self.seq_len_schedule
        pairs_ok = all(isinstance(p, list) and len(p) == 2 for p in sched)
        if c.require(
            pairs_ok, "seq_len_schedule", f"must be a list of [step, seq_len] pairs, got {sched!r}"
        ):
            steps = [p[0] for p in sched]
            c.require(
                not sched or (steps[0] == 0 and steps == sorted(set(steps))),
                "seq_len_schedule",
                f"steps must start at 0 and increase, got {steps}",
            )
            c.require(
                all(p[1] >= 1 for p in sched),
                "seq_len_schedule",
                f"window lengths must be >= 1, got {[p[1] for p in sched]}",
            )
        return c.errors

    def window_at(self, step: int, seq_len: int) -> int:
        """The training window of optimizer step `step` (0-based): the schedule's last entry
        at or before it, or `seq_len` (the model's) without a schedule."""
        window = seq_len
        for start, length in self.seq_len_schedule:
            if start <= step:
                window = length
        return window


@dataclass
class OptimConfig:
    lr: float = 3e-4
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """Adam betas (the paper's 0.9, 0.98)."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay; never applied to norms, biases or embeddings."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    schedule: str = "cosine"
    """Decay after warmup: cosine, linear, polynomial or constant."""
    warmup_steps: int = 100
    """Linear warmup from 0 to lr over this many steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine, linear, polynomial)."""
    power: float = 1.0
    """Exponent of the polynomial decay."""
    decay_steps: int = 0
    """Steps over which lr decays (0: train.steps)."""

    def validate(self) -> list[str]:
        c = Checks("optim")
        c.above("lr", self.lr, 0)
        c.require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        c.above("eps", self.eps, 0)
        c.at_least("weight_decay", self.weight_decay, 0)
        c.at_least("grad_clip", self.grad_clip, 0)
        c.one_of("schedule", self.schedule, SCHEDULES)
        c.at_least("warmup_steps", self.warmup_steps, 0)
        c.at_least("decay_steps", self.decay_steps, 0)
        c.in_range("min_lr_ratio", self.min_lr_ratio, 0, 1)
        c.above("power", self.power, 0)
        return c.errors
