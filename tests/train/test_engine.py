"""Single-process DeepSpeed runs: accumulation owned by DeepSpeed, wandb offline files,
the metrics schema, export equal to the engine, and the watchdog."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from mbtrain.monitor.metrics import read_metrics
from tests.support.launch import run

pytestmark = pytest.mark.slow

TRAIN_KEYS = {
    "step",
    "loss",
    "bpb",
    "lr",
    "grad_norm",
    "bytes_per_s",
    "bytes_seen",
    "mfu",
    "mem_bytes",
    "elapsed_s",
    "eta_s",
}


def test_accumulation_equals_a_larger_micro_batch(tiny_args, tmp_path):
    """micro-batch 2 x accumulation 2 == micro-batch 4: same samples, same update."""
    common = [*tiny_args, "train.steps=3", "optim.warmup_steps=0", "data.shuffle=false"]
    run(
        1,
        [*common, "train.micro_batch_size=2", "train.grad_accum=2", f"run.dir={tmp_path / 'a'}"],
        tmp_path / "la",
    )
    run(
        1,
        [*common, "train.micro_batch_size=4", "train.grad_accum=1", f"run.dir={tmp_path / 'b'}"],
        tmp_path / "lb",
    )
    a = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if "loss" in r]
    b = [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in a] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
        assert ra["bytes_seen"] == rb["bytes_seen"]


def test_metrics_wandb_export_and_eval(tiny_args, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *tiny_args,
        "train.steps=4",
        "train.eval_every=2",
        "train.sample_bytes=8",
        "logging.wandb=offline",
        f"run.dir={run_dir}",
    ]
    run(1, args, tmp_path / "logs")
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "val_bpb" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for r in train_rows:
        assert set(r) >= TRAIN_KEYS, TRAIN_KEYS - set(r)
        assert r["bpb"] == pytest.approx(r["loss"] / 0.6931471805599453)
        assert r["bytes_per_s"] > 0 and 0 < r["mfu"] < 1 and r["mem_bytes"] > 0
    assert [r["step"] for r in eval_rows] == [2, 4] and all(r["val_bpb"] > 0 for r in eval_rows)

    # wandb offline: one run directory whose id is the one saved in the checkpoint.
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    wandb_id = re.search(r"-([a-z0-9]+)$", runs[0].name).group(1)
    assert (runs[0] / f"run-{wandb_id}.wandb").is_file()
    import torch

    states = torch.load(
        run_dir / "checkpoints" / "step00000004" / "mp_rank_00_model_states.pt",
        weights_only=False,
        map_location="cpu",
    )
    assert states["mbtrain"]["wandb_id"] == wandb_id

    # A second start of a finished run continues the same wandb run and adds no step.
    run(1, args, tmp_path / "logs2")
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r] == [
        1,
        2,
        3,
        4,
    ]
    assert {p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")} == {
        wandb_id
    }

    # The export equals the checkpoint, and loads without DeepSpeed.
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.checkpoint.export import load_exported

    exported = load_exported(run_dir)
    from_ckpt = load_model(run_dir / "checkpoints" / "step00000004")
    x = torch.randint(0, 256, (2, 128))
    torch.testing.assert_close(exported(x), from_ckpt(x), rtol=0, atol=0)
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["model"]["seq_len"] == 128


def test_watchdog_dumps_stacks_of_a_hung_step(tmp_path):
    from mbtrain.monitor.watchdog import Watchdog

    dog = Watchdog(tmp_path, rank=3, factor=2.0, min_seconds=0.2).start()
    for step in range(1, 4):
        time.sleep(0.01)
        dog.beat(step)

    def stuck_in_a_collective():
        time.sleep(2.5)

    stuck_in_a_collective()
    dog.stop()
    text = (tmp_path / "hang_rank3.txt").read_text()
    assert "step 4 has run" in text and "stuck_in_a_collective" in text


def test_lr_schedules():
    from mbtrain.train.config import OptimConfig
    from mbtrain.train.optim import lr_factor

    cfg = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(9, cfg, 100) == pytest.approx(1.0)
    assert lr_factor(100, cfg, 100) == pytest.approx(0.1)
    lin = OptimConfig(warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert lr_factor(50, lin, 100) == pytest.approx(0.5)
    poly = OptimConfig(warmup_steps=0, schedule="polynomial", power=2.0, min_lr_ratio=0.0)
    assert lr_factor(50, poly, 100) == pytest.approx(0.25)


def test_no_weight_decay_on_norms_biases_embeddings():
    from mbtrain.model import ModelConfig, build_model
    from mbtrain.train.config import OptimConfig
    from mbtrain.train.optim import build_optimizer

    model = build_model(ModelConfig.tiny())
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(
        n.endswith("weight") and "norm" not in n and "embed" not in n for n in decayed
    )
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_bf16_zero1_activation_checkpointing_and_use_on_cpu_in_fp32(tiny_args, tmp_path):
    """The GPU configuration (bf16, ZeRO-1, fp32 gradient accumulation, activation
    checkpointing) on a tiny model; its checkpoint is then used on CPU in fp32, as a
    GPU-trained checkpoint would be."""
    import torch

    run_dir = tmp_path / "bf16"
    run(
        1,
        [
            *tiny_args,
            "train.steps=2",
            "train.precision=bf16",
            "parallel.zero_stage=1",
            "model.activation_checkpointing=true",
            "logging.progress_bar=true",
            f"run.dir={run_dir}",
        ],
        tmp_path / "logs",
    )
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["loss"] < 10 for r in rows)
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.model import generate

    model = load_model(run_dir)
    assert next(model.parameters()).dtype == torch.float32
    x = torch.randint(0, 256, (1, 128))
    assert torch.isfinite(model(x)).all()
    assert len(bytes(generate(model, b"ab", max_bytes=5, seed=0))) == 5


@pytest.mark.slow
def test_compiled_blocks_train_and_resume_exactly(tiny_args, tmp_path):
    """train.compile: the compiled run trains, and a stop and resume reproduces it exactly."""
    from tests.support.launch import launch, read_logs, wait

    args = [*tiny_args, "train.compile=true", "train.steps=6", "checkpoint.every=0",
            "model.activation_checkpointing=true"]  # fmt: skip
    run(1, [*args, f"run.dir={tmp_path / 'ref'}"], tmp_path / "l1")
    ref = {
        r["step"]: r["loss"]
        for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")
        if "loss" in r
    }
    assert sorted(ref) == list(range(1, 7)) and ref[6] < ref[1]
    procs = launch(1, [*args, f"run.dir={tmp_path / 'b'}"], tmp_path / "l2")
    deadline = time.time() + 300
    while not any(r.get("step", 0) >= 2 for r in read_metrics(tmp_path / "b" / "metrics.jsonl")):
        assert time.time() < deadline and procs[0].poll() is None, read_logs(tmp_path / "l2")
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGUSR1)
    assert wait(procs, tmp_path / "l2") == [75]
    run(1, [*args, f"run.dir={tmp_path / 'b'}"], tmp_path / "l3")
    got = {
        r["step"]: r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r
    }
    assert got == ref
