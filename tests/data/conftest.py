"""Fixtures of tests/data: a small corpus in every input format, with its expected documents."""

from __future__ import annotations

import gzip
import json
import os
import random

import pytest


def _write_corpus(root: str) -> dict[str, bytes]:
    """Write one file per format; return {doc_id: original bytes} (ids relative to `root`)."""
    rng = random.Random(0)
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    exp: dict[str, bytes] = {}

    def raw(name, data):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        exp[name] = data

    raw("a.txt", "héllo wörld\n".encode() * 40)
    raw("sub/all256.bin", bytes(range(256)) * 7 + bytes([0, 255, 10, 13]))
    raw("sub/noise.bin", bytes(rng.randrange(256) for _ in range(3000)))
    texts = [f"doc {i} " + "ü" * rng.randrange(1, 150) for i in range(12)]
    lines = "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    with open(os.path.join(root, "c.jsonl"), "w") as f:
        f.write(lines)
    with gzip.open(os.path.join(root, "d.jsonl.gz"), "wt") as f:
        f.write(lines)
    import zstandard

    with open(os.path.join(root, "e.jsonl.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(lines.encode()))
    for name in ("c.jsonl", "d.jsonl.gz", "e.jsonl.zst"):
        for i, t in enumerate(texts):
            exp[f"{name}:{i + 1}"] = t.encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    bins = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(9)]
    pq.write_table(pa.table({"text": texts}), os.path.join(root, "f.parquet"), row_group_size=5)
    pq.write_table(pa.table({"text": pa.array(bins, pa.binary())}), os.path.join(root, "g.parquet"))
    tb = pa.table({"text": texts})
    with pa.ipc.new_file(os.path.join(root, "h.arrow"), tb.schema) as w:
        w.write_table(tb, max_chunksize=4)
    with pa.ipc.new_stream(os.path.join(root, "i.arrows"), tb.schema) as w:
        w.write_table(tb, max_chunksize=5)
    for i, t in enumerate(texts):
        exp[f"f.parquet:{i}"] = t.encode()
        exp[f"h.arrow:{i}"] = t.encode()
        exp[f"i.arrows:{i}"] = t.encode()
    for i, b in enumerate(bins):
        exp[f"g.parquet:{i}"] = b
    return exp


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    return root, _write_corpus(root)


def all_documents(out: str) -> dict[str, bytes]:
    from mbtrain.data import iter_documents

    docs: dict[str, bytes] = {}
    for sp in ("train", "val"):
        for k, v in iter_documents(os.path.join(out, sp) if "://" not in out else f"{out}/{sp}"):
            assert k not in docs, f"{k} appears twice"
            docs[k] = v
    return docs


def split_ids(out: str, split: str) -> set[str]:
    from mbtrain.data import iter_documents

    return {k for k, _ in iter_documents(os.path.join(out, split))}


@pytest.fixture
def docs_of():
    """`docs_of(out)`: every document of a dataset, both splits."""
    return all_documents


@pytest.fixture
def ids_of():
    """`ids_of(out, split)`: document ids of one split."""
    return split_ids
