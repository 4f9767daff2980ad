"""Config of the run itself (`run.*`): its name and the directory that holds everything."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunSection:
    name: str = "mbtrain"
    """Run name (wandb name, Slurm job name); any text, quoted wherever it is used."""
    dir: str = "runs/${run.name}"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, logs/, slurm/."""

    def validate(self) -> list[str]:
        errors = []
        if not self.name.strip():
            errors.append("run.name: must not be empty")
        if "\n" in self.name or "\x00" in self.name:
            errors.append("run.name: must be one line of text")
        if not self.dir.strip():
            errors.append("run.dir: must not be empty")
        return errors
