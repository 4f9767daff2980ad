"""`samples.jsonl`: the text generated at each evaluation, where people look for it.

One JSON object per line, `{"step", "prompt", "sample"}`, `sample` being the generated text
after the prompt (`train.sample_prompt`). As in metrics.jsonl, a resumed run first drops the
samples written after its checkpoint's step. The console shows each sample as one line
(`one_line`): control characters escaped, long text cut, so a log stays one line per event.
"""

from __future__ import annotations

from pathlib import Path

from mbtrain.monitor.metrics import MetricsWriter, read_last_metrics

CONSOLE_CHARS = 240
"""The console line shows this many characters of a sample (samples.jsonl keeps all)."""

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def one_line(text: str, limit: int = CONSOLE_CHARS) -> str:
    """`text` double-quoted on one line: newlines, tabs and other control characters escaped
    (printable Unicode kept as is), cut after `limit` characters with the count left out."""
    cut, rest = text[:limit], len(text) - limit
    out = []
    for ch in cut:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:  # other control characters: a terminal would act on them
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"' + (f"... (+{rest} chars)" if rest > 0 else "")


def split_prompt(text: str, prompt: str) -> str:
    """The generated part of an evaluation sample (the evaluator returns prompt + output)."""
    return text[len(prompt) :] if prompt and text.startswith(prompt) else text


def format_sample(step: int, sample: str, prompt: str) -> str:
    """The console line of one sample."""
    if prompt:
        return f"step {step}: sample {one_line(prompt, 60)} -> {one_line(sample)}"
    return f"step {step}: sample {one_line(sample)}"


class SampleWriter:
    """Appends samples to `path`. The file is created at the first sample (a run that never
    samples has none), but a resumed run's leftovers are dropped at once."""

    def __init__(self, path: str | Path, resume_step: int = 0) -> None:
        self.path, self.resume_step = Path(path), resume_step
        self._writer = MetricsWriter(self.path, resume_step) if self.path.exists() else None

    def write(self, step: int, sample: str, prompt: str) -> None:
        if self._writer is None:
            self._writer = MetricsWriter(self.path, self.resume_step)
        self._writer.write({"step": step, "sample": sample, "prompt": prompt})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_last_sample(path: str | Path) -> dict | None:
    """The last complete sample of a samples file ({"step", "sample", "prompt"}), or None."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    # A sample line can be long (train.sample_bytes): read more of the tail until one is whole.
    tail = 1 << 16
    while True:
        rows = [r for r in read_last_metrics(path, tail) if "sample" in r]
        if rows or tail >= size:
            return rows[-1] if rows else None
        tail = min(tail * 8, size)
