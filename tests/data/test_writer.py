"""The fast local writer and merge produce exactly what streaming's MDSWriter / merge_index do."""

from __future__ import annotations

import json
import os
import random

import pytest

from mbtrain.data import PrepareConfig, prepare
from mbtrain.data.fast_writer import FastMDSWriter, fast_supported
from mbtrain.data.mds import COLUMNS, RowEncoder
from mbtrain.data.windows import Windower, make_sample


def _windows(seed: int, seq_len: int, pack: bool) -> list[tuple[bytes, list]]:
    rng = random.Random(seed)
    got: list[tuple[bytes, list]] = []
    w = Windower(seq_len, pack, lambda c, p: got.append((b"".join(c), list(p))))
    for i in range(300):
        n = rng.choice([1, 2, 3, rng.randrange(1, 5 * seq_len)])
        w.add(f"dir/ü{i}.txt:{i}", rng.randbytes(n))
    for i in range(600):  # a run of 1-byte documents: >= 256 pieces per window if seq_len allows
        w.add(f"tiny:{i}", b"x")
    w.flush()
    return got


def _index(d) -> dict:
    return json.loads((d / "index.json").read_text())


def _raw(path) -> bytes:
    """A shard's MDS bytes, decoded as streaming decodes them (python-zstd)."""
    import zstd

    data = path.read_bytes()
    return zstd.decompress(data) if path.name.endswith(".zstd") else data


def _hashes(d, info: dict, algos: list[str]) -> dict:
    from streaming.base.hashing import get_hash

    data = (d / info["basename"]).read_bytes()
    assert len(data) == info["bytes"]
    return {a: get_hash(a, data) for a in algos}


@pytest.mark.parametrize(
    "compression,hashes,size_limit,seq_len",
    [
        ("zstd", ["xxh64"], 4096, 64),
        ("zstd:7", ["sha1", "xxh3_64"], 1 << 20, 300),
        ("", [], 70, 64),  # rows larger than the limit: a (streaming-style) flush per row
        ("zstd", [], 70, 64),  # the same compressed: an empty first shard, one row per shard
        ("zstd", ["xxh64"], 1 << 20, 1024),
    ],
)
@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
def test_fast_writer_is_byte_identical_to_mdswriter(
    tmp_path, compression, hashes, size_limit, seq_len, threaded
):
    from streaming import MDSWriter, StreamingDataset

    wins = _windows(seq_len, seq_len, pack=True) + _windows(1, seq_len, pack=False)
    if seq_len >= 256:
        assert max(len(p) for _, p in wins) >= 256  # exercises the uint16 shape header
    assert fast_supported(compression, hashes)
    ref = MDSWriter(
        out=str(tmp_path / "ref"),
        columns=COLUMNS,
        compression=compression or None,
        hashes=hashes,
        size_limit=size_limit,
    )
    # Batches of a fifth of a shard: each shard is compressed in several calls, as in prepare.
    fast = FastMDSWriter(
        str(tmp_path / "fast"),
        compression,
        hashes,
        size_limit,
        batch=size_limit // 5,
        threaded=threaded,
    )
    enc = RowEncoder()  # one encoder: its id cache is exercised by multi-window documents
    for data, pieces in wins:
        ref.write(make_sample(data, pieces))
        fast.write(enc.encode([data[:3], data[3:]], pieces))
    ref.finish()
    fast.finish()
    names = sorted(os.listdir(tmp_path / "ref"))
    assert names == sorted(os.listdir(tmp_path / "fast")) and len(names) > 1
    ref_index, fast_index = (_index(tmp_path / d) for d in ("ref", "fast"))
    for a, b in zip(ref_index["shards"], fast_index["shards"], strict=True):
        # Compressed as the shard fills, so the zstd bytes differ; everything else is equal.
        if compression:
            assert b["zip_data"]["basename"] == a["zip_data"]["basename"]
            assert _hashes(tmp_path / "fast", b["zip_data"], hashes) == b["zip_data"]["hashes"]
            a["zip_data"] = b["zip_data"] = None
        assert a == b
    for n in names:
        if n != "index.json":
            assert _raw(tmp_path / "ref" / n) == _raw(tmp_path / "fast" / n), n
    hash_check = {"validate_hash": hashes[0]} if hashes else {}
    ds = StreamingDataset(local=str(tmp_path / "fast"), shuffle=False, batch_size=1, **hash_check)
    for i in (0, len(wins) // 2, len(wins) - 1):
        s = ds.get_item(i)
        data, pieces = wins[i]
        assert s["data"] == data and s["doc_ids"] == [p[0] for p in pieces]
        assert s["offsets"].tolist() == [p[1] for p in pieces]
        assert s["lengths"].tolist() == [p[2] for p in pieces]
        assert s["doc_sizes"].tolist() == [p[3] for p in pieces]


def test_large_shards_decode_with_streamings_zstd(tmp_path):
    """Shards of many MB, mixing incompressible and very compressible rows and ending in a
    tiny row, decode with python-zstd's `decompress` (what streaming reads shards with): a
    shard written as several zstd frames can fail there, one frame cannot."""

    rng = random.Random(5)
    fast = FastMDSWriter(str(tmp_path / "big"), "zstd", ["xxh64"], 12 << 20)
    enc = RowEncoder()
    # A shard of incompressible MBs, then compressible MBs, then a 3 KB tail: written as
    # frames of 4 MiB this exact shape made python-zstd fail ("Destination buffer is too
    # small"). Twice: two shards.
    shape = [rng.randbytes(1 << 20) for _ in range(4)] + [b"abc" * 350_000] * 4 + [b"t" * 3000]
    rows = [*shape, b"x" * 4_000_000, *shape]
    for i, data in enumerate(rows):
        fast.write(enc.encode([data], [(f"d{i}", 0, len(data), len(data))]))
    fast.finish()
    index = _index(tmp_path / "big")
    assert len(index["shards"]) == 2 and index["shards"][0]["raw_data"]["bytes"] > 8 << 20
    import xxhash

    for sh in index["shards"]:
        raw = _raw(tmp_path / "big" / sh["zip_data"]["basename"])
        assert len(raw) == sh["raw_data"]["bytes"]
        assert xxhash.xxh64(raw).hexdigest() == sh["raw_data"]["hashes"]["xxh64"]


@pytest.mark.parametrize("prefix_size", [0, 1, 5000, (1 << 17) + 1, 300_000])
@pytest.mark.parametrize("body_size", [0, 1, 70_000, 3_000_000])
def test_frame_with_prefix_is_one_frame_every_decoder_reads(prefix_size, body_size):
    """A shard's header put in front of its compressed rows as raw blocks: one zstd frame
    that python-zstd (streaming's reader), zstandard and the zstd command line decode to
    header + rows, also when the header spans several raw blocks or there are no rows (zstd
    then writes a single-segment frame, whose window is its content size)."""
    import shutil
    import subprocess

    import zstandard
    import zstd

    from mbtrain.data.fast_writer import _frame_with_prefix

    rng = random.Random(prefix_size + body_size)
    prefix = rng.randbytes(prefix_size)
    words = [rng.randbytes(rng.randrange(1, 12)) for _ in range(300)]
    body = b"".join(rng.choice(words) for _ in range(body_size // 2 + 1))[:body_size]
    assert len(body) == body_size
    cobj = zstandard.ZstdCompressor(level=3, write_checksum=False).compressobj()
    frame = b"".join(
        [cobj.compress(body[: body_size // 2]), cobj.compress(body[body_size // 2 :]), cobj.flush()]
    )
    spliced = b"".join(_frame_with_prefix(prefix, frame, body_size))
    want = prefix + body
    assert zstd.decompress(spliced) == want
    assert zstandard.ZstdDecompressor().decompress(spliced) == want
    assert zstandard.frame_content_size(spliced) == len(want)
    assert len(spliced) < len(frame) + prefix_size + 32  # the rows stay compressed
    if shutil.which("zstd"):
        cli = subprocess.run(["zstd", "-d", "-c"], input=spliced, capture_output=True)
        assert cli.returncode == 0 and cli.stdout == want, cli.stderr


def test_header_of_many_rows_spans_raw_blocks(tmp_path):
    """40,000 rows in a shard: a 160 KB header, more than one zstd block, decodes intact."""

    fast = FastMDSWriter(str(tmp_path / "w"), "zstd", ["xxh64"], 4 << 20, batch=100_000)
    enc = RowEncoder()
    rows = [bytes([i % 251]) * (i % 40 + 1) for i in range(40_000)]
    for i, data in enumerate(rows):
        fast.write(enc.encode([data], [(f"d{i}", 0, len(data), len(data))]))
    fast.finish()
    (shard,) = _index(tmp_path / "w")["shards"]
    assert shard["samples"] == len(rows) and 4 * len(rows) > 1 << 17
    raw = _raw(tmp_path / "w" / shard["zip_data"]["basename"])
    assert len(raw) == shard["raw_data"]["bytes"]
    from streaming import StreamingDataset

    ds = StreamingDataset(
        local=str(tmp_path / "w"), shuffle=False, batch_size=1, validate_hash="xxh64"
    )
    for i in (0, 1, 12_345, len(rows) - 1):
        assert ds.get_item(i)["data"] == rows[i]


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
def test_background_error_is_raised_and_nothing_published(tmp_path, threaded):
    """A failing shard write (here: the part directory vanished) surfaces on the caller."""
    out = tmp_path / "w"
    fast = FastMDSWriter(str(out), "zstd", ["xxh64"], 4096, threaded=threaded)
    enc = RowEncoder()
    os.rmdir(out)
    with pytest.raises(FileNotFoundError):
        for i in range(200):
            fast.write(enc.encode([b"y" * 100], [(f"d{i}", 0, 100, 100)]))
        fast.finish()
    assert fast._thread is None or not fast._thread.is_alive()
    assert not out.exists()


def test_unsupported_configs_fall_back_to_mdswriter():
    assert not fast_supported("gz", [])
    assert not fast_supported("zstd", ["no-such-hash"])
    assert fast_supported("", ["md5"])


def test_local_merge_index_lists_every_part_shard(corpus, tmp_path):
    """What streaming's merge_index writes: the parts' shards, in part order, names prefixed."""
    root, _ = corpus
    out = tmp_path / "m"
    prepare(
        PrepareConfig(
            inputs=[root], out=str(out), seq_len=64, size_limit=4096, workers=2, progress=False
        )
    )
    expect = []
    for n in [f"part-0000{k}-of-00002" for k in range(2)]:
        for sh in json.loads((out / "train" / n / "index.json").read_text())["shards"]:
            for key in ("raw_data", "zip_data"):
                if sh.get(key):
                    sh[key]["basename"] = f"{n}/{sh[key]['basename']}"
                    assert (out / "train" / sh[key]["basename"]).exists() or key == "raw_data"
            expect.append(sh)
    mine = json.loads((out / "train" / "index.json").read_text())
    assert mine == {"version": 2, "shards": expect} and len(expect) > 2


@pytest.mark.parametrize("compression", ["zstd", ""])
@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
def test_misdeclared_row_or_write_after_close_is_refused(tmp_path, compression, threaded):
    """A row whose declared size is not its bytes would give a header whose offsets point
    elsewhere: refused, no index written. Rows handed over after `close()` would never reach
    the stopped thread (and the index would silently miss them): refused too."""
    enc = RowEncoder()
    bad = FastMDSWriter(str(tmp_path / "bad"), compression, ["xxh64"], 1 << 20, threaded=threaded)
    parts, size = enc.encode([b"z" * 50], [("d", 0, 50, 50)])
    bad.write((parts, size + 1))
    with pytest.raises(RuntimeError, match="the header says"):
        bad.finish()
    assert not (tmp_path / "bad" / "index.json").exists()

    closed = FastMDSWriter(str(tmp_path / "c"), compression, [], 20_000, threaded=threaded)
    with pytest.raises(RuntimeError, match="already closed"):
        for i in range(50):
            closed.write(enc.encode([b"q" * 1000], [(f"d{i}", 0, 1000, 1000)]))
            if i == 5:
                closed.close()
        closed.finish()
    assert not (tmp_path / "c" / "index.json").exists()
