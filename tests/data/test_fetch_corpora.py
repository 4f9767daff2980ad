"""data_prep/corpora/fetch_corpora.py: two fetches of one corpus never build it at once."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO


def _load_fetch():
    path = REPO / "data_prep" / "corpora" / "fetch_corpora.py"
    spec = importlib.util.spec_from_file_location("fetch_corpora", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_second_fetch_of_a_corpus_waits_for_the_first(tmp_path: Path, monkeypatch):
    # A benchmark that fetches a missing corpus beside a manual fetch of it used to delete the
    # first one's files mid-build (FileNotFoundError while compressing).
    fc = _load_fetch()
    spans: list[tuple[float, float]] = []

    def slow_build(ctx, name):
        start = time.monotonic()
        time.sleep(0.5)
        spans.append((start, time.monotonic()))

    monkeypatch.setattr(fc, "_build_locked", slow_build)
    ctx = fc.Ctx(out=tmp_path, cache=tmp_path / ".cache", jobs=1, allow_newer=False, force=False)
    threads = [threading.Thread(target=fc.build, args=(ctx, "code")) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (_, a1), (b0, _) = sorted(spans)
    assert a1 <= b0, f"the builds overlapped: {spans}"
    # another corpus is not held up by it
    spans.clear()
    threads = [threading.Thread(target=fc.build, args=(ctx, n)) for n in ("code", "text")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (_, a1), (b0, _) = sorted(spans)
    assert b0 < a1, f"different corpora waited for each other: {spans}"
