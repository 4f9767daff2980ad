"""What `prepare` leaves on disk when things go wrong or are shared: a failed run does not
block the corrected command, a full disk is one line naming the file, the files of a dataset
honour the umask, and an `--out` inside the inputs is listed as excluded."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.data import PrepareConfig, iter_documents, prepare
from mbtrain.data.output import mark_incomplete
from mbtrain.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def cfg(inputs, out, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", 64)
    kw.setdefault("val_fraction", 0.0)
    return PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), progress=False, **kw)


def jsonl_corpus(root: Path) -> Path:
    root.mkdir()
    lines = "".join(json.dumps({"body": f"record {i} " * 20}) + "\n" for i in range(6))
    (root / "a.jsonl").write_text(lines)
    return root


def test_failed_prepare_does_not_block_the_corrected_command(tmp_path, caplog):
    src, out = jsonl_corpus(tmp_path / "in"), tmp_path / "out"
    with pytest.raises(DataError, match="not published"):
        prepare(cfg([src], out))  # the records hold `body`, not the default `text`
    # Corrected, and with another layout (2 parts instead of 1): the leftovers are replaced.
    with caplog.at_level(logging.WARNING, logger="mbtrain.data.preparation"):
        result = prepare(cfg([src], out, text_field="body", workers=2))
    assert result.merged and result.stats["documents"]["train"] == 6
    said = [r.getMessage() for r in caplog.records if "replacing the unpublished" in r.getMessage()]
    assert len(said) == 1 and "text_field: 'text' -> 'body'" in said[0], said
    left = sorted(p.name for p in (out / "train").iterdir())
    assert left == ["index.json", "mbtrain.json", "part-00000-of-00002", "part-00001-of-00002"]
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "part-00000-of-00002.json",
        "part-00001-of-00002.json",
    ]
    assert len(dict(iter_documents(str(out / "train")))) == 6


def test_published_dataset_of_another_config_is_still_protected(tmp_path):
    src, out = jsonl_corpus(tmp_path / "in"), tmp_path / "out"
    prepare(cfg([src], out, text_field="body"))
    mark_incomplete(str(out))  # as an interrupted re-run leaves it: published once, kept
    with pytest.raises(DataError, match=r"another config.*seq_len: 64 -> 32"):
        prepare(cfg([src], out, text_field="body", seq_len=32))
    assert (out / "train" / "part-00000-of-00001").is_dir()


def test_dataset_files_honour_the_umask(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_bytes(b"some text " * (50 + i))
    old = os.umask(0o022)
    try:
        prepare(cfg([src], tmp_path / "out", workers=2, val_fraction=0.3))
    finally:
        os.umask(old)
    modes = {}
    for root, dirs, files in os.walk(tmp_path / "out"):
        for name in dirs + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, tmp_path / "out")] = stat.S_IMODE(os.stat(path).st_mode)
    assert "train/index.json" in modes and "parts/part-00001-of-00002.json" in modes
    assert any(n.endswith(".mds.zstd") for n in modes)
    wrong = {
        p: oct(m)
        for p, m in modes.items()
        if m != (0o755 if os.path.isdir(tmp_path / "out" / p) else 0o644)
    }
    assert not wrong, wrong


def test_disk_full_is_one_line_naming_the_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = random.Random(0)  # incompressible: the shard is as big as its input
    (src / "noise.bin").write_bytes(bytes(rng.randrange(256) for _ in range(300_000)))
    out = tmp_path / "out"
    # A file-size limit makes the shard's write fail with EFBIG as a full disk fails it with
    # ENOSPC (Python ignores SIGXFSZ); the JSON files stay far below it.
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000));"
        "from mbtrain.cli.main import main;"
        f"sys.exit(main(['prepare', {str(src)!r}, '--out', {str(out)!r}, '--seq-len', '512',"
        " '--val-fraction', '0', '--no-progress']))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    shard = out / "train" / ".part-00000-of-00001.tmp" / "shard.00000.mds.zstd"
    assert lines[0].startswith(f"mbtrain prepare: error: {shard}: File too large; "), lines
    assert f"{out} is not published" in lines[0]
    assert not (out / "train" / "mbtrain.json").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written


def test_out_inside_the_inputs_is_listed_as_excluded_on_the_first_run(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one " * 40)
    out = src / "prepared"
    result = prepare(cfg([src], out))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["excluded"] == [
        {"where": str(out), "reason": "the output directory of this prepare"}
    ]
    assert f"{out}: the output directory of this prepare" in result.summary()


def test_nothing_found_leaves_no_out_behind(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(DataError, match="no input files"):
        prepare(cfg([tmp_path / "in"], tmp_path / "new" / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_refused_symlink_out_leaves_nothing_behind(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"x" * 100)
    (tmp_path / "target").write_text("mine")
    (tmp_path / "linkout").symlink_to(tmp_path / "target")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in ("linkout", "dangling", "linkout/sub"):
        with pytest.raises(ConfigError, match="--out"):
            prepare(cfg([src], tmp_path / out))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "target").read_text() == "mine"


def test_atomic_json_write_that_fails_names_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text('{"old": 1}')
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        "from mbtrain.data import storage\n"
        "try:\n"
        f"    storage.write_json({str(target)!r}, {{'k': 'v' * 100}})\n"
        "except OSError as e:\n"
        "    print(e.errno, e.filename)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert p.stdout.split() == [str(errno.EFBIG), str(target)], p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["stats.json"]
    assert target.read_text() == '{"old": 1}'  # the old file stays whole
