"""Reusable value checks for a section's `validate()`: one message format everywhere.

    c = Checks("train")
    c.at_least("steps", self.steps, 1)      # "train.steps: must be >= 1, got 0"
    c.one_of("precision", self.precision, PRECISIONS)
    return c.errors

Every check names the dotted key, says what would be valid and what was given, and returns
whether the value passed (so a later check that needs it can be skipped).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Checks:
    """Collects the problems of one config section (`section` prefixes every key)."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.errors: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def fail(self, name: str, message: str) -> bool:
        self.errors.append(f"{self.key(name)}: {message}")
        return False

    def require(self, ok: bool, name: str, message: str) -> bool:
        """A problem of its own kind: `message` says what is valid."""
        return True if ok else self.fail(name, message)

    def integer(self, name: str, value: Any) -> bool:
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        return self.fail(name, f"must be an integer, got {value!r}")

    def at_least(self, name: str, value: Any, low: float) -> bool:
        """value >= low."""
        return self.require(value >= low, name, f"must be >= {low}, got {value!r}")

    def above(self, name: str, value: Any, low: float) -> bool:
        """value > low."""
        return self.require(value > low, name, f"must be > {low}, got {value!r}")

    def in_range(
        self, name: str, value: Any, low: float, high: float, *, high_open: bool = False
    ) -> bool:
        """low <= value <= high (`high_open`: value < high)."""
        ok = low <= value < high if high_open else low <= value <= high
        bracket = ")" if high_open else "]"
        return self.require(ok, name, f"must be in [{low}, {high}{bracket}, got {value!r}")

    def one_of(self, name: str, value: Any, choices: Iterable[Any]) -> bool:
        choices = tuple(choices)
        text = ", ".join(map(str, choices))
        return self.require(value in choices, name, f"must be one of {text}, got {value!r}")
