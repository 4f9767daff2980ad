"""Round trip through a real S3-compatible server (moto) on 127.0.0.1: prepare -> loader."""

from __future__ import annotations

import socket

import pytest

from mbtrain.data import DataConfig, PrepareConfig, build_loader, iter_documents, prepare


def s3_config(root, out: str, **overrides) -> PrepareConfig:
    """Two workers, small shards: several parts and shards go through the uploader."""
    return PrepareConfig(
        inputs=[root],
        out=out,
        seq_len=64,
        val_fraction=0.25,
        workers=2,
        progress=False,
        size_limit=4096,
        **overrides,
    )


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_ENDPOINT_URL": url,
    }.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bkt")
    yield "s3://bkt"
    server.stop()


def test_s3_round_trip(s3, corpus, tmp_path):
    root, expected = corpus
    out = f"{s3}/ds"
    r = prepare(s3_config(root, out, local_dir=str(tmp_path / "stage")))
    assert r.merged and r.exit_code == 0
    docs = {}
    for sp in ("train", "val"):
        docs.update(iter_documents(f"{out}/{sp}"))
    assert docs == expected
    loader = build_loader(
        DataConfig(train=f"{out}/train", num_workers=0, local_cache=str(tmp_path / "c")),
        "train",
        64,
        4,
        0,
        1,
        0,
    )
    assert next(iter(loader))["x"].shape == (4, 64)
    # A second run finds every part finished and only merges again.
    assert prepare(s3_config(root, out)).merged
