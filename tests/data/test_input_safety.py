"""Inputs as users really have them: special files, names that are not UTF-8, the output
inside the inputs, compressed text, a wrong --format, a bad --out, and corpora of only a few
documents, which must still get a validation split."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.data import PrepareConfig, iter_documents, prepare
from mbtrain.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def cfg(inputs, out, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", 64)
    kw.setdefault("val_fraction", 0.0)
    return PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), progress=False, **kw)


def docs(split: Path) -> dict[str, bytes]:
    return dict(iter_documents(str(split)))


def test_fifo_is_passed_over_not_waited_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha " * 50)
    os.mkfifo(src / "pipe")
    # A subprocess, so that a regression hangs only it, not the test session.
    code = (
        "from mbtrain.data import PrepareConfig, prepare;"
        f"r = prepare(PrepareConfig(inputs=[{str(src)!r}], out={str(tmp_path / 'out')!r},"
        " seq_len=64, val_fraction=0.0, progress=False)); print(r.exit_code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [x["where"] for x in stats["skipped"]] == [str(src / "pipe")]
    assert "FIFO" in stats["skipped"][0]["reason"]
    assert docs(tmp_path / "out" / "train") == {"a.txt": b"alpha " * 50}


def test_file_names_that_are_not_utf8(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9-\xff.txt")  # Latin-1 bytes, as old archives have
    (src / name).write_bytes(b"latin one " * 20)
    (src / "plain.txt").write_bytes(b"plain text " * 20)
    result = prepare(cfg([src], tmp_path / "out", val_fraction=0.5))
    assert result.exit_code == 0
    got = {**docs(tmp_path / "out" / "train"), **docs(tmp_path / "out" / "val")}
    assert got == {"caf\\xe9-\\xff.txt": b"latin one " * 20, "plain.txt": b"plain text " * 20}
    assert not list((tmp_path / "out").rglob(".*.tmp"))  # no half-written part left


def test_output_inside_the_inputs_is_never_read_back(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one " * 40)
    (src / "b.txt").write_bytes(b"two " * 40)
    out = src / "prepared"
    prepare(cfg([src], out))
    # Another dataset dropped into the tree (e.g. a copy of an earlier output) is skipped too.
    prepare(cfg([src], src / "second"))
    stats = json.loads((src / "second" / "stats.json").read_text())
    assert stats["documents"]["train"] == 2
    assert any("prepared dataset" in x["reason"] for x in stats["excluded"]), stats["excluded"]
    assert not stats["skipped"]
    prepare(cfg([src], tmp_path / "third"))
    assert set(docs(tmp_path / "third" / "train")) == {"a.txt", "b.txt"}


def test_wrong_format_publishes_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("just text\nmore text\n")
    with pytest.raises(DataError, match=r"not published: no document was read.*invalid JSON"):
        prepare(cfg([src], tmp_path / "out", format="jsonl"))
    for sp in ("train", "val"):
        assert not (tmp_path / "out" / sp / "mbtrain.json").exists()


def test_out_that_is_a_file_or_under_one(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"x" * 100)
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(ConfigError, match="file"):
            prepare(cfg([src], out))
    assert blocker.read_text() == "mine"
    cli = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "prepare", str(src), "--out", str(blocker / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and str(blocker) in cli.stderr


def test_compressed_raw_files_are_decompressed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    text = b"The quick brown fox. " * 200
    (src / "story.txt.gz").write_bytes(gzip.compress(text))
    (src / "broken.txt.gz").write_bytes(gzip.compress(text)[:50])
    result = prepare(cfg([src], tmp_path / "out"))
    assert docs(tmp_path / "out" / "train") == {"story.txt.gz": text}
    assert result.stats["decompressed"] == 1
    assert "corrupt gzip" in result.stats["skipped"][0]["reason"]
    kept = prepare(cfg([src / "story.txt.gz"], tmp_path / "raw", decompress=False))
    assert docs(tmp_path / "raw" / "train") == {"story.txt.gz": (src / "story.txt.gz").read_bytes()}
    assert kept.stats["decompressed"] == 0


@pytest.mark.parametrize(
    "n, fraction, want_val", [(4, 0.25, 1), (4, 0.05, 1), (2, 0.9, 1), (40, 0.1, 4), (1, 0.5, 0)]
)
def test_few_documents_still_get_a_validation_split(tmp_path, n, fraction, want_val):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        (src / f"book{i}.txt").write_bytes(os.urandom(200))
    result = prepare(cfg([src], tmp_path / "out", val_fraction=fraction))
    assert result.stats["documents"]["val"] == want_val
    assert result.stats["documents"]["train"] == n - want_val
    if want_val != round(fraction * n) or n == 1:
        assert "split:" in result.summary()
    # Deterministic: the same files again (and with 2 workers) give the same split.
    prepare(cfg([src], tmp_path / "again", val_fraction=fraction, workers=2))
    assert set(docs(tmp_path / "again" / "val")) == set(docs(tmp_path / "out" / "val"))


def test_a_small_jsonl_corpus_gets_one_validation_document(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i} " * 30}) + "\n" for i in range(5)))
    result = prepare(cfg([src], tmp_path / "out", val_fraction=0.01))
    assert result.stats["documents"]["val"] >= 1 and result.stats["documents"]["train"] >= 1
