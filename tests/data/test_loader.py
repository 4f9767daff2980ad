"""The streaming loader: dp sharding, replica groups, exact resume on 2 gloo processes, mixing,
and clear errors."""

from __future__ import annotations

import os
import random

import pytest
import torch

from mbtrain.data import DataConfig, PrepareConfig, build_loader, prepare
from mbtrain.errors import DataError

T = 32


def _make(tmp, name, n_docs, fill=None):
    rng = random.Random(name)
    d = tmp / f"{name}_in"
    d.mkdir()
    for i in range(n_docs):
        size = rng.randrange(5, 150)
        data = (
            bytes([fill]) * size
            if fill is not None
            else bytes(rng.randrange(256) for _ in range(size))
        )
        (d / f"{i:03d}.bin").write_bytes(data)
    out = tmp / name
    prepare(
        PrepareConfig(
            inputs=[str(d)],
            out=str(out),
            seq_len=T,
            val_fraction=0.2,
            progress=False,
            size_limit=2048,
        )
    )
    return str(out)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("loader"), "ds", 120)


def rows(loader, n=None):
    out = []
    for i, b in enumerate(loader):
        if n is not None and i >= n:
            break
        assert b["x"].dtype == torch.long and b["mask"].dtype == torch.bool
        out += [bytes(r[m].tolist()) for r, m in zip(b["x"], b["mask"])]
    return out


def test_dp_ranks_disjoint_and_replicas_identical(ds):
    cfg = DataConfig(train=f"{ds}/train", num_workers=0)
    r0 = rows(build_loader(cfg, "train", T, 4, 0, 2, seed=1))
    r1 = rows(build_loader(cfg, "train", T, 4, 1, 2, seed=1))
    assert r0 and r1 and not set(r0) & set(r1)
    # A tensor-parallel peer of dp rank 0 (same process here, own cache and shm prefix).
    assert rows(build_loader(cfg, "train", T, 4, 0, 2, seed=1)) == r0
    assert rows(build_loader(cfg, "train", T, 4, 0, 2, seed=2)) != r0  # seed drives the shuffle


def test_batches_masks_and_val(ds):
    b = next(
        iter(
            build_loader(
                DataConfig(train=f"{ds}/train", val=f"{ds}/val", num_workers=0),
                "val",
                T,
                8,
                0,
                1,
                0,
                drop_last=False,
            )
        )
    )
    assert b["x"].shape == (8, T) and b["mask"].any()
    assert (b["segment_ids"] >= 0).eq(b["mask"]).all()
    assert b["doc_start"][:, 0].any() and not (b["doc_start"] & ~b["mask"]).any()


def test_errors_missing_incomplete_seq_len(ds, tmp_path):
    with pytest.raises(DataError, match="no prepared dataset"):
        build_loader(DataConfig(train=str(tmp_path / "none")), "train", T, 2, 0, 1, 0)
    with pytest.raises(DataError, match=r"seq_len 32, shorter than the model's seq_len 64; re-run"):
        build_loader(DataConfig(train=f"{ds}/train"), "train", 64, 2, 0, 1, 0)
    import shutil

    shutil.copytree(f"{ds}/train", tmp_path / "inc")
    os.remove(tmp_path / "inc" / "mbtrain.json")
    with pytest.raises(DataError, match="incomplete"):
        build_loader(DataConfig(train=str(tmp_path / "inc")), "train", T, 2, 0, 1, 0)


@pytest.mark.parametrize("align", [1, 4])
def test_shorter_windows_are_cut_from_longer_samples(ds, align):
    """A dataset prepared at 32 bytes trains a model of 8 or 16: every sample gives 32/T
    windows, in order, each a micro-batch of B samples; their bytes, masks, document starts and
    (aligned) document layout are those of the whole sample cut at multiples of T."""
    cfg = DataConfig(train=f"{ds}/train", num_workers=0, shuffle=False)
    whole = list(build_loader(cfg, "train", T, 4, 0, 1, 0, align=align))
    for t in (8, 16):
        n = T // t
        cut = list(build_loader(cfg, "train", t, 4, 0, 1, 0, align=align))
        assert len(cut) == n * len(whole)
        for k, batch in enumerate(whole):
            parts = cut[k * n : (k + 1) * n]
            for key in ("x", "mask", "doc_start", "segment_ids"):
                joined = torch.cat([p[key] for p in parts], dim=1)
                assert torch.equal(joined, batch[key]), (t, k, key)


def test_cut_windows_resume_inside_a_sample(ds):
    """The position is saved between two windows of one sample and resumes exactly there."""
    cfg = DataConfig(train=f"{ds}/train", num_workers=0)
    full = build_loader(cfg, "train", 8, 2, 0, 1, seed=3)
    it = full.iter_forever()
    seen = [next(it)["x"] for _ in range(6)]  # 1.5 batches of samples: 4 windows each
    state = full.state_dict()
    assert state["micro"] == 2
    later = [next(it)["x"] for _ in range(10)]
    again = build_loader(cfg, "train", 8, 2, 0, 1, seed=3)
    again.load_state_dict(state)
    it2 = again.iter_forever()
    assert all(torch.equal(a, next(it2)["x"]) for a in later)
    assert not torch.equal(seen[-1], later[0])


def test_mix_of_different_prepared_lengths_is_refused(ds, tmp_path):
    other = _make(tmp_path, "long", 20)  # prepared at T as well
    import json

    meta = json.loads(open(f"{other}/train/mbtrain.json").read())
    meta["seq_len"] = 64
    open(f"{other}/train/mbtrain.json", "w").write(json.dumps(meta))
    cfg = DataConfig(mix=[{"path": f"{ds}/train"}, {"path": f"{other}/train"}], num_workers=0)
    with pytest.raises(DataError, match=r"different seq_len \(32, 64\)"):
        build_loader(cfg, "train", 16, 2, 0, 1, 0)


def test_mixing_proportions(tmp_path):
    a = _make(tmp_path, "a", 60, fill=ord("a"))
    b = _make(tmp_path, "b", 60, fill=ord("b"))
    cfg = DataConfig(
        mix=[{"path": f"{a}/train", "proportion": 0.8}, {"path": f"{b}/train", "proportion": 0.2}],
        num_workers=0,
    )
    got = rows(build_loader(cfg, "train", T, 4, 0, 1, 0))
    frac_a = sum(r[0] == ord("a") for r in got) / len(got)
    assert 0.7 < frac_a < 0.9


def _resume_worker(rank, ds, mode, tmp):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["MBT_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = DataConfig(train=f"{ds}/train", num_workers=0)
    loader = build_loader(cfg, "train", T, 2, dp_rank=rank, dp_size=2, seed=7)
    seen = []
    if mode == "full":
        it = loader.iter_forever()
        for step in range(30):  # crosses an epoch boundary (~ 25 batches per rank per epoch)
            if step == 5:
                torch.save(loader.state_dict(), f"{tmp}/state{rank}.pt")
            seen.append(next(it)["x"])
    else:
        loader.load_state_dict(torch.load(f"{tmp}/state{rank}.pt"))
        it = loader.iter_forever()
        seen = [next(it)["x"] for _ in range(25)]
    torch.save(seen, f"{tmp}/{mode}{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
def test_exact_resume_two_processes(ds, tmp_path):
    import socket

    import torch.multiprocessing as tmp_mp

    for mode in ("full", "resumed"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MBT_PORT"] = str(s.getsockname()[1])
        tmp_mp.spawn(_resume_worker, args=(ds, mode, str(tmp_path)), nprocs=2)
    for r in range(2):
        full = torch.load(tmp_path / f"full{r}.pt")
        resumed = torch.load(tmp_path / f"resumed{r}.pt")
        assert all(torch.equal(a, b) for a, b in zip(full[5:], resumed)), f"rank {r} diverged"
    assert not torch.equal(
        torch.load(tmp_path / "full0.pt")[0], torch.load(tmp_path / "full1.pt")[0]
    )


def test_stale_shared_memory_cleaned():
    import mmap

    from mbtrain.data.shm import clean_stale_shared_memory

    stale, live = "/dev/shm/000977_locals", "/dev/shm/000978_locals"
    for p in (stale, live):
        with open(p, "wb") as f:
            f.write(b"\0" * 64)
    with open(live, "r+b") as f:
        m = mmap.mmap(f.fileno(), 64)
    try:
        removed = clean_stale_shared_memory()
        assert stale in removed and os.path.exists(live)
    finally:
        m.close()
        os.unlink(live)


def _collate_reference(samples, seq_len):
    """The per-piece loop collate of before the vectorisation: the spec of `collate`."""
    import numpy as np

    b = len(samples)
    x = np.zeros((b, seq_len), np.int64)
    mask = np.zeros((b, seq_len), np.bool_)
    start = np.zeros((b, seq_len), np.bool_)
    seg = np.full((b, seq_len), -1, np.int64)
    for i, s in enumerate(samples):
        d = np.frombuffer(s["data"], np.uint8)
        x[i, : len(d)], mask[i, : len(d)] = d, True
        pos = 0
        for j, (off, ln) in enumerate(zip(s["offsets"], s["lengths"])):
            start[i, pos] = off == 0
            seg[i, pos : pos + ln] = j
            pos += int(ln)
    return {"x": x, "mask": mask, "doc_start": start, "segment_ids": seg}


@pytest.mark.parametrize("pack", [True, False])
def test_vectorised_collate_matches_reference(pack):
    from mbtrain.data.collate import collate
    from mbtrain.data.windows import Windower, make_sample

    rng = random.Random(3)
    samples = []
    w = Windower(T, pack, lambda c, p: samples.append(make_sample(b"".join(c), p)))
    for i in range(200):
        w.add(f"d{i}", rng.randbytes(rng.choice([1, 2, 5, 31, 32, 33, 70])))
    w.flush()
    for k in (1, 3, 8):
        batch = samples[5 : 5 + k]
        got, ref = collate(batch, T), _collate_reference(batch, T)
        for key in ref:
            assert got[key].numpy().tolist() == ref[key].tolist(), key
    with pytest.raises(DataError, match="exceeds seq_len"):
        collate([make_sample(b"x" * 40, [("a", 0, 40, 40)])], T)


def test_collate_aligns_documents_to_patches():
    """Document masking needs every patch inside one document: pieces that start a document
    begin on a multiple of the patch size; what no longer fits is dropped and counted."""
    from mbtrain.data.collate import collate_aligned

    data = bytes(range(1, 17))  # one window of 16 bytes: 5 of A's tail, 6 of B, 5 of C's head
    sample = {"data": data, "lengths": [5, 6, 5], "offsets": [7, 0, 0]}
    out = collate_aligned([sample], seq_len=16, align=4)
    x, seg, mask = out["x"][0].tolist(), out["segment_ids"][0].tolist(), out["mask"][0].tolist()
    assert seg == [0] * 5 + [-1] * 3 + [1] * 6 + [-1] * 2  # B at 8, C at 16: no room left
    assert x[:5] == [1, 2, 3, 4, 5] and x[8:14] == [6, 7, 8, 9, 10, 11]
    assert mask == [s >= 0 for s in seg]
    assert out["doc_start"][0].nonzero().flatten().tolist() == [8]  # A continues, B starts
    assert int(out["dropped"]) == 5
    # A window inside one long document loses nothing.
    whole = collate_aligned([{"data": data, "lengths": [16], "offsets": [100]}], 16, 4)
    assert whole["mask"].all() and int(whole["dropped"]) == 0
