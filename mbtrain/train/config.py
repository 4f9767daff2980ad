"""Configs of the training loop (`train.*`) and of the optimizer and schedule (`optim.*`).

Batch sizes live here and only here: the DeepSpeed config is generated from these fields
(`mbtrain.train.ds_config`), so there is no second place where a batch size could disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def global_batch(self, data_parallel: int) -> int:
        """Sequences per optimizer step with `data_parallel` replicas."""
        return self.micro_batch_size * self.grad_accum * data_parallel

    def validate(self) -> list[str]:
        errors = []
        for name in ("steps", "micro_batch_size", "grad_accum", "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                errors.append(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("global_batch_size", "eval_every", "sample_bytes", "max_nonfinite_skips"):
            if getattr(self, name) < 0:
                errors.append(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        _choice(errors, "train.precision", self.precision, PRECISIONS)
        _choice(errors, "train.device", self.device, DEVICES)
        _choice(errors, "train.on_nonfinite", self.on_nonfinite, NONFINITE_POLICIES)
        if self.watchdog_factor <= 1:
            errors.append(f"train.watchdog_factor: must be > 1, got {self.watchdog_factor}")
        if self.watchdog_exit_s < 0:
            errors.append(f"train.watchdog_exit_s: must be >= 0, got {self.watchdog_exit_s}")
        return errors


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
        errors = []
        if self.lr <= 0:
            errors.append(f"optim.lr: must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            errors.append(f"optim.betas: must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            errors.append(f"optim.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            errors.append(f"optim.grad_clip: must be >= 0, got {self.grad_clip}")
        _choice(errors, "optim.schedule", self.schedule, SCHEDULES)
        if self.warmup_steps < 0 or self.decay_steps < 0:
            errors.append("optim.warmup_steps / optim.decay_steps: must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            errors.append(f"optim.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.power <= 0:
            errors.append(f"optim.power: must be > 0, got {self.power}")
        return errors


def _choice(errors: list[str], key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"{key}: must be one of {', '.join(choices)}; got {value!r}")
