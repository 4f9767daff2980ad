"""The training micro-batches at the window `train.seq_len_schedule` gives each step.

Long-context training learns faster when it starts short and grows (sequence-length warmup):
one dataset, prepared at the longest window, serves every length (the loader cuts windows
from its samples), and the model needs no rebuild (RoPE positions, patches independent of
T). When the schedule changes the window, the loader is built again for the new length and
continues from the old one's position, translated: the windows handed out of the current
batch of samples become as many bytes of the new length (`ByteLoader.load_state_dict`). A
resume builds the loader at the resumed step's window and loads the saved position through
the same translation, so a run resumed across a change of window is bit-exact with the run
that went through it without stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from mbtrain.train.config import TrainConfig

log = logging.getLogger(__name__)


class TrainStream:
    """The training loader of the current window; `state_dict`/`load_state_dict` as a
    loader's (what a checkpoint saves)."""

    def __init__(
        self, build: Callable[[int], Any], cfg: TrainConfig, seq_len: int, step: int
    ) -> None:
        self.build, self.cfg, self.seq_len = build, cfg, seq_len
        self.window = cfg.window_at(step, seq_len)
        self.loader = build(self.window)
        self._it: Iterator[dict] | None = None

    def batches(self, step: int) -> Iterator[dict]:
        """The micro-batches of optimizer step `step` (0-based) onwards, at its window."""
        window = self.cfg.window_at(step, self.seq_len)
        if window != self.window:
            log.info(
                f"step {step + 1}: training windows of {window} bytes (train.seq_len_schedule)"
            )
            state = self.loader.state_dict()
            self.window, self.loader = window, self.build(window)
            self.loader.load_state_dict(state)
            self._it = None
        if self._it is None:
            self._it = self.loader.iter_forever()
        return self._it

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
        self._it = None
