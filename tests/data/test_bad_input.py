"""Bad input is reported with file and line/row; good data is written in full; exit code 3."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from mbtrain.data import PrepareConfig, prepare
from mbtrain.errors import DataError


def _bad_corpus(root: str) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    good = {}
    # Big and incompressible enough that the cut leaves many whole compressed blocks.
    lines = [json.dumps({"text": f"good {i} {os.urandom(24).hex()}"}) + "\n" for i in range(12000)]
    blob = "".join(lines).encode()
    with gzip.open(f"{root}/trunc.jsonl.gz", "wb") as f:
        f.write(blob)
    gz = Path(f"{root}/trunc.jsonl.gz")
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size * 2 // 3])
    z = zstandard.ZstdCompressor().compress(blob)
    Path(f"{root}/trunc.jsonl.zst").write_bytes(z[: len(z) * 2 // 3])
    with open(f"{root}/mixed.jsonl", "wb") as f:
        f.write(b'{"text": "ok one"}\n')  # line 1
        f.write(b'{"text": "broken\n')  # line 2: invalid JSON
        f.write(b'{"body": "no text"}\n')  # line 3: missing field
        f.write(b'{"text": "bad \xff\xfe utf8"}\n')  # line 4: invalid UTF-8
        f.write(b'{"text": 42}\n')  # line 5: wrong type
        f.write(b'{"text": "ok six"}\n')  # line 6
    good["mixed.jsonl:1"], good["mixed.jsonl:6"] = b"ok one", b"ok six"
    Path(f"{root}/empty.txt").write_bytes(b"")
    Path(f"{root}/fine.bin").write_bytes(b"\x00\x01fine")
    good["fine.bin"] = b"\x00\x01fine"
    pq.write_table(pa.table({"text": [1, 2, 3]}), f"{root}/ints.parquet")
    os.makedirs(f"{root}/loop")
    os.symlink("..", f"{root}/loop/up")  # directory symlink loop
    os.symlink("self", f"{root}/self")  # symlink pointing at itself
    Path(f"{root}/.lines").write_text("".join(lines))  # hidden: not an input
    return good


def lines_of(root):
    return Path(f"{root}/.lines").read_text().splitlines()


@pytest.fixture
def bad(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    return str(root), _bad_corpus(str(root))


def test_bad_inputs_reported_good_data_kept(bad, tmp_path, docs_of):
    root, good = bad
    r = prepare(
        PrepareConfig(
            inputs=[root],
            out=str(tmp_path / "o"),
            seq_len=32,
            val_fraction=0,
            utf8_errors="skip",
            progress=False,
        )
    )
    assert r.exit_code == 3
    reasons = {
        (s["where"].replace(root + "/", ""), s["reason"].split(" (")[0]) for s in r.stats["skipped"]
    }
    expect = {
        ("mixed.jsonl:2", "invalid JSON"),
        ("mixed.jsonl:3", "missing field 'text'"),
        ("mixed.jsonl:4", "invalid UTF-8 at byte 14"),
        ("mixed.jsonl:5", "field 'text' is int, expected a string"),
        ("ints.parquet", "column 'text' has type int64, expected string or binary"),
        ("loop/up", "symlink loop"),
        ("self", "symlink loop"),
    }
    assert expect <= reasons, reasons
    assert any(w.startswith("trunc.jsonl.gz:") and "truncated" in why for w, why in reasons)
    assert any(w.startswith("trunc.jsonl.zst:") and "truncated" in why for w, why in reasons)
    assert [os.path.basename(e) for e in r.stats["empty"]] == ["empty.txt"]
    docs = docs_of(str(tmp_path / "o"))
    for k, v in good.items():
        assert docs[k] == v
    # every line before the truncation point survives, in full, in order
    for name in ("trunc.jsonl.gz", "trunc.jsonl.zst"):
        got = [
            docs[k]
            for k in sorted(
                (k for k in docs if k.startswith(name)), key=lambda k: int(k.split(":")[1])
            )
        ]
        assert 1000 < len(got) < 12000
        assert got == [json.loads(x)["text"].encode() for x in lines_of(root)[: len(got)]]
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert len(stats["skipped"]) == len(r.stats["skipped"])


def test_utf8_policies(bad, tmp_path, docs_of):
    root, _ = bad
    f = os.path.join(root, "mixed.jsonl")
    with pytest.raises(DataError, match=r"mixed.jsonl:4: invalid UTF-8"):
        prepare(PrepareConfig(inputs=[f], out=str(tmp_path / "f"), seq_len=32, progress=False))
    r = prepare(
        PrepareConfig(
            inputs=[f],
            out=str(tmp_path / "r"),
            seq_len=32,
            val_fraction=0,
            utf8_errors="replace",
            progress=False,
        )
    )
    assert r.stats["utf8_replaced"] == 1
    assert docs_of(str(tmp_path / "r"))["mixed.jsonl:4"] == "bad \ufffd\ufffd utf8".encode()


@pytest.mark.skipif(os.getuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_reported(tmp_path):
    (tmp_path / "in").mkdir()
    p = tmp_path / "in" / "secret.txt"
    p.write_bytes(b"x")
    (tmp_path / "in" / "ok.txt").write_bytes(b"ok")
    p.chmod(0)
    r = prepare(
        PrepareConfig(
            inputs=[str(tmp_path / "in")], out=str(tmp_path / "o"), seq_len=8, progress=False
        )
    )
    assert r.exit_code == 3 and "permission denied" in r.stats["skipped"][0]["reason"]


def test_missing_input_fails_fast(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        prepare(
            PrepareConfig(inputs=[str(tmp_path / "nope")], out=str(tmp_path / "o"), progress=False)
        )
