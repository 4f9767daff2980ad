"""The fast local writer and merge produce exactly what streaming's MDSWriter / merge_index do."""

from __future__ import annotations

import json
import os
import random

import pytest

from mbtrain.data import PrepareConfig, prepare
from mbtrain.data.windows import Windower, make_sample
from mbtrain.data.writer import COLUMNS, FastMDSWriter, RowEncoder, fast_supported


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


@pytest.mark.parametrize(
    "compression,hashes,size_limit,seq_len",
    [
        ("zstd", ["xxh64"], 4096, 64),
        ("zstd:7", ["sha1", "xxh3_64"], 1 << 20, 300),
        ("", [], 70, 64),  # rows larger than the limit: a (streaming-style) flush per row
        ("zstd", ["xxh64"], 1 << 20, 1024),
    ],
)
def test_fast_writer_is_byte_identical_to_mdswriter(
    tmp_path, compression, hashes, size_limit, seq_len
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
    fast = FastMDSWriter(str(tmp_path / "fast"), compression, hashes, size_limit)
    enc = RowEncoder()  # one encoder: its id cache is exercised by multi-window documents
    for data, pieces in wins:
        ref.write(make_sample(data, pieces))
        fast.write(enc.encode([data[:3], data[3:]], pieces))
    ref.finish()
    fast.finish()
    names = sorted(os.listdir(tmp_path / "ref"))
    assert names == sorted(os.listdir(tmp_path / "fast")) and len(names) > 1
    for n in names:
        assert (tmp_path / "ref" / n).read_bytes() == (tmp_path / "fast" / n).read_bytes(), n
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
    import zstd

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
    index = json.loads((tmp_path / "big" / "index.json").read_text())
    assert len(index["shards"]) == 2 and index["shards"][0]["raw_data"]["bytes"] > 8 << 20
    import xxhash

    for sh in index["shards"]:
        packed = (tmp_path / "big" / sh["zip_data"]["basename"]).read_bytes()
        raw = zstd.decompress(packed)
        assert len(raw) == sh["raw_data"]["bytes"]
        assert xxhash.xxh64(raw).hexdigest() == sh["raw_data"]["hashes"]["xxh64"]


def test_background_error_is_raised_and_nothing_published(tmp_path):
    """A failing shard write (here: the part directory vanished) surfaces on the caller."""
    out = tmp_path / "w"
    fast = FastMDSWriter(str(out), "zstd", ["xxh64"], 4096)
    enc = RowEncoder()
    os.rmdir(out)
    with pytest.raises(FileNotFoundError):
        for i in range(200):
            fast.write(enc.encode([b"y" * 100], [(f"d{i}", 0, 100, 100)]))
        fast.finish()
    assert not fast._thread.is_alive()
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
