"""wandb, optional: online, offline (files under the run directory) or disabled.

The run id is created once and saved in every checkpoint, so a resumed or requeued job
continues the same wandb run instead of starting a new one.
"""

from __future__ import annotations

import html
import os
import secrets
import string
from pathlib import Path
from typing import Any

from mbtrain.monitor.config import LoggingConfig


def new_run_id() -> str:
    # `secrets`, not `random`: drawing the id must not move the run's seeded generators.
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbLogger:
    def __init__(self, cfg: LoggingConfig, run_dir: Path, name: str, config: dict, run_id: str):
        self.run = None
        if cfg.wandb == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity or None,
            name=name,
            id=run_id,
            resume="allow",
            mode=cfg.wandb,
            dir=str(run_dir),
            config=config,
            settings=wandb.Settings(x_disable_stats=True, console="off", silent=True),
        )

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def log_sample(self, text: str, step: int) -> None:
        if self.run is not None:
            import wandb

            self.run.log({"sample": wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
