"""data_prep/corpora/fetch: two fetches of one corpus never build it at once; the pins load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data_prep.corpora.fetch import audio, code, exe, image, text
from data_prep.corpora.fetch import corpus as fc
from data_prep.corpora.fetch.apt import Ctx
from data_prep.corpora.fetch.pins import PILLOW_VERSION, PINS
from tests.conftest import REPO


def test_second_fetch_of_a_corpus_waits_for_the_first(tmp_path: Path, monkeypatch):
    # A benchmark that fetches a missing corpus beside a manual fetch of it used to delete the
    # first one's files mid-build (FileNotFoundError while compressing).
    spans: list[tuple[float, float]] = []

    def slow_build(ctx, name):
        start = time.monotonic()
        time.sleep(0.5)
        spans.append((start, time.monotonic()))

    monkeypatch.setattr(fc, "_build_locked", slow_build)
    ctx = Ctx(out=tmp_path, cache=tmp_path / ".cache", jobs=1, allow_newer=False, force=False)
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


def test_pins_table_is_complete():
    # Every package a builder asks for is pinned, with a full sha256.
    wanted = {"dict-gcide", "dict-jargon", "dict-foldoc", "dict-devil", "fortunes"}
    wanted |= {p for p, _, _ in text.SWORD_MODULES} | {p for p, _ in image.PHOTOS}
    wanted |= {"linux-source-6.1", "wesnoth-1.16-music", *exe.EXE_PACKAGES}
    assert code.LINUX_DIRS and audio.AUDIO_RATE  # the builders import
    assert wanted == set(PINS)
    assert all(len(sha) == 64 for _, sha in PINS.values())
    assert PILLOW_VERSION


def test_documented_entry_point_runs(tmp_path: Path):
    # `python data_prep/corpora/fetch_corpora.py` (the path the corpus YAMLs and SOURCE.md give).
    script = REPO / "data_prep" / "corpora" / "fetch_corpora.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Fetch real corpora" in r.stdout and "--allow-newer" in r.stdout


def test_image_decoder_runs_as_the_image_step_runs_it(tmp_path: Path):
    # build_image runs the decoder under <out>/.venv's Python as a module from the repo root.
    pil = pytest.importorskip("PIL.Image")
    pil.new("RGB", (40, 20), (200, 10, 30)).save(tmp_path / "a.jpg")
    manifest = tmp_path / "images.json"
    manifest.write_text(
        json.dumps([{"src": str(tmp_path / "a.jpg"), "dst_stem": str(tmp_path / "a")}])
    )
    cmd = [sys.executable, "-m", "data_prep.corpora.fetch.decode_images", str(manifest), "16"]
    subprocess.run(cmd, cwd=image.REPO, check=True, capture_output=True)
    assert (tmp_path / "a_16x8.rgb").stat().st_size == 16 * 8 * 3
