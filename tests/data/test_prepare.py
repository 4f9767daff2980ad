"""prepare/merge: exact reconstruction, deterministic split, parts + merge, resume, atomicity."""

from __future__ import annotations

import json
import os

import pytest

from mbtrain.data import PrepareConfig, merge, prepare
from mbtrain.data.splits import check_split
from mbtrain.errors import DataError


def cfg(inputs, out, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", 64)
    kw.setdefault("val_fraction", 0.25)
    kw.setdefault("size_limit", 4096)
    return PrepareConfig(inputs=inputs, out=str(out), progress=False, **kw)


@pytest.mark.parametrize("pack", [True, False])
def test_every_document_reconstructed_exactly(corpus, docs_of, ids_of, tmp_path, pack):
    root, expected = corpus
    r = prepare(cfg([root], tmp_path / "ds", pack=pack))
    assert r.exit_code == 0, r.stats["skipped"]
    assert docs_of(str(tmp_path / "ds")) == expected
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert sum(stats["documents"].values()) == len(expected)
    assert sum(stats["bytes"].values()) == sum(map(len, expected.values()))
    assert check_split(str(tmp_path / "ds" / "train"), 64)["pack"] is pack


def test_read_file_reads_to_the_end_whatever_the_size_hint(tmp_path):
    from mbtrain.data.readers import _read_file

    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # 1.28 MB: several reads past a stale size hint
    p.write_bytes(data)
    for hint in (0, 3, len(data), len(data) + 10):
        assert _read_file(str(p), hint) == data
    assert isinstance(_read_file(str(tmp_path), 0), OSError)  # a directory
    assert isinstance(_read_file(str(tmp_path / "missing"), 0), OSError)


def test_split_is_deterministic_by_document(corpus, docs_of, ids_of, tmp_path):
    root, expected = corpus
    prepare(cfg([root], tmp_path / "a"))
    prepare(cfg([root], tmp_path / "b", workers=2))
    val_a, val_b = ids_of(tmp_path / "a", "val"), ids_of(tmp_path / "b", "val")
    assert val_a == val_b and 0 < len(val_a) < len(expected)
    assert not val_a & ids_of(tmp_path / "a", "train")
    explicit = ["a.txt", "c.jsonl:3"]
    prepare(cfg([root], tmp_path / "c", val_docs=explicit))
    assert ids_of(tmp_path / "c", "val") == set(explicit)


def test_two_workers_and_merge_equal_one_worker(corpus, docs_of, ids_of, tmp_path):
    root, expected = corpus
    for i in range(2):  # two independent "Slurm array" jobs
        r = prepare(cfg([root], tmp_path / "n", worker_index=i, worker_count=2))
        assert not r.merged
    merged = merge(str(tmp_path / "n"))
    assert merged.merged and merged.exit_code == 0
    assert docs_of(str(tmp_path / "n")) == expected


def test_resume_skips_finished_parts_and_incomplete_is_invisible(
    corpus, docs_of, ids_of, tmp_path, monkeypatch
):
    root, expected = corpus
    out = tmp_path / "r"
    prepare(cfg([root], out, worker_index=0, worker_count=2))
    with pytest.raises(DataError, match=r"parts \[1\] of 2 are not finished"):
        merge(str(out))
    with pytest.raises(DataError, match=r"no prepared dataset|incomplete"):
        check_split(str(out / "train"), 64)
    marker = out / "parts" / "part-00000-of-00002.json"
    mtime = os.stat(marker).st_mtime_ns
    # The same layout run locally as 2 workers: part 0 is finished and must be skipped.
    r = prepare(cfg([root], out, workers=2))
    assert os.stat(marker).st_mtime_ns == mtime
    assert r.merged and docs_of(str(out)) == expected


def test_interrupted_prepare_is_never_complete(corpus, docs_of, ids_of, tmp_path, monkeypatch):
    root, expected = corpus
    out = tmp_path / "i"
    prepare(cfg([root], out))
    import mbtrain.data.preparation as prep

    real = prep.read_documents

    def dying(src, *a):
        yield from real(src, *a)
        raise KeyboardInterrupt  # killed mid-way through the first file

    # A re-run (e.g. after adding data) that dies must leave the dataset marked incomplete.
    (out / "parts" / "part-00000-of-00001.json").unlink()
    monkeypatch.setattr(prep, "read_documents", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg([root], out))
    with pytest.raises(DataError, match="incomplete"):
        check_split(str(out / "train"), 64)
    assert not (out / "train" / "part-00000-of-00001").exists()  # only the .tmp dir
    monkeypatch.setattr(prep, "read_documents", real)
    assert prepare(cfg([root], out)).exit_code == 0
    assert docs_of(str(out)) == expected


def test_different_config_into_same_out_is_refused(corpus, docs_of, ids_of, tmp_path):
    root, _ = corpus
    prepare(cfg([root], tmp_path / "x"))
    with pytest.raises(DataError, match="seq_len: 64 -> 32"):
        prepare(cfg([root], tmp_path / "x", seq_len=32))


def test_cli_entry_point_with_corpus_yaml(corpus, docs_of, ids_of, tmp_path):
    import subprocess
    import sys

    root, expected = corpus
    y = tmp_path / "c.yaml"
    y.write_text(f"name: t\ninputs: ['{root}/*.jsonl']\nseq_len: 32\nval_fraction: 0\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbtrain.cli.main",
            "prepare",
            "--corpus",
            str(y),
            "--out",
            str(tmp_path / "o"),
            "--pad",
        ],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert p.returncode == 0, p.stderr
    assert docs_of(str(tmp_path / "o")) == {
        k: v for k, v in expected.items() if k.startswith("c.jsonl")
    }
    assert check_split(str(tmp_path / "o" / "train"), 32)["pack"] is False


def test_config_refuses_compressions_streaming_cannot_read(tmp_path):
    """A level streaming refuses would be written into index.json and fail every reader."""
    from mbtrain.data import PrepareConfig

    def errors(compression):
        c = PrepareConfig(inputs=["x"], out=str(tmp_path), compression=compression)
        return [e for e in c.validate() if e.startswith("prepare.compression")]

    for good in ("zstd", "zstd:1", "zstd:22", "gz:0", "br:11", "bz2", "snappy", ""):
        assert errors(good) == [], good
    for bad in ("zstd:0", "zstd:23", "zstd:-1", "zstd:abc", "gz:10", "snappy:1", "lz4"):
        (msg,) = errors(bad)
        assert repr(bad) in msg and "zstd[:1-22]" in msg, bad


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("**/*.py", ["a.py", "dir.py/inner.py", "pkg/x.py", "q1.py", "q22.py"]),
        ("*.py", ["a.py", "q1.py", "q22.py"]),
        ("q?.py", ["q1.py"]),
        ("[!a]*.py", ["link.py", "q1.py", "q22.py"]),
        ("pkg/**", ["__pycache__/x.pyc", "x.py", "y.pyc"]),  # ids relative to the glob root
    ],
)
def test_globs_select_by_name_and_depth(tmp_path, pattern, expected):
    """Globs match relative paths (`**/` any depth, `*` and `?` within a name, `[!...]`);
    files whose name cannot match are passed over during the walk, directories never are
    (`dir.py/` is entered, `site-packages/` is pruned by the exclude); a symlink to a file
    already taken is the same document."""
    from mbtrain.data.inputs import expand_inputs

    root = tmp_path / "r"
    for rel in ["a.py", "a.pyc", "b.txt", "pkg/x.py", "pkg/y.pyc", "pkg/__pycache__/x.pyc",
                "dir.py/inner.py", "site-packages/z.py", "q1.py", "q22.py", ".hidden.py"]:  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    os.symlink(root / "a.py", root / "link.py")
    skipped = []
    got = expand_inputs(
        [f"{root}/{pattern}"], "auto", lambda w, r: skipped.append(w), ["site-packages/**"]
    )
    assert [s.file_id for s in got] == expected and not skipped
