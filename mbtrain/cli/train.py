"""`mbtrain train RECIPE [key=value ...]`: train or resume a run, in one process or many."""

from __future__ import annotations

import argparse
import json
import os


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a MegaByte model from a recipe",
        description="Train a MegaByte model. Run it as one process, under torchrun, or under "
        "srun (mbtrain submit); a run directory that holds checkpoints resumes from the latest.",
    )
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/tiny_cpu.yaml or RUN_DIR/config.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the resolved config, layout and DeepSpeed config; train nothing",
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=None,
        help="with --dry-run: the number of processes to check the layout for",
    )
    p.add_argument(
        "--device-memory",
        type=float,
        default=None,
        help="with --dry-run: GiB of memory per device to check the estimate against "
        "(default: 80 for cuda recipes)",
    )
    p.add_argument(
        "--mfu",
        type=float,
        default=None,
        help="with --dry-run: model FLOPs utilisation assumed for the step time "
        "(default: 0.40 on cuda, 0.60 on cpu)",
    )
    p.set_defaults(func=run_train)


def _estimate(cfg, layout, args: argparse.Namespace) -> str:
    """Memory and time per rank (mbtrain.train.estimate), for the recipe's device."""
    from mbtrain.train.estimate import DEFAULT_DEVICE_MEMORY, GIB, estimate_rank, format_estimate

    device = cfg.train.device if cfg.train.device != "auto" else "cuda"
    peak = cfg.logging.peak_flops
    if not peak and device == "cuda":
        from mbtrain.monitor.peak import GPU_PEAKS

        peak = GPU_PEAKS["H100"]["bf16" if cfg.train.precision == "bf16" else "fp32"]
    elif not peak:
        from mbtrain.monitor.peak import device_peak_flops

        peak = device_peak_flops("cpu", cfg.train.precision)
    memory = args.device_memory * GIB if args.device_memory else DEFAULT_DEVICE_MEMORY.get(device)
    est = estimate_rank(
        cfg.model,
        cfg.train,
        layout,
        device,
        split_local=cfg.parallel.split_local,
        peak_flops=peak,
        mfu=args.mfu,
    )
    return format_estimate(est, memory, cfg.model.activation_checkpointing)


def run_train(args: argparse.Namespace) -> int:
    from mbtrain.config import check_layout, config_to_yaml, load_config

    cfg = load_config(args.recipe, args.overrides)
    if args.dry_run:
        from mbtrain.model import count_parameters, flops_per_byte
        from mbtrain.train.ds_config import build_deepspeed_config

        world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
        layout = check_layout(cfg, world)
        print(config_to_yaml(cfg))
        print(f"# layout: {layout.describe()} ({world} processes)")
        print(f"# global batch: {cfg.train.global_batch(layout.data)} sequences per step")
        print(f"# parameters: {count_parameters(cfg.model):,}")
        print(f"# training FLOPs per byte: {flops_per_byte(cfg.model, training=True):,.0f}")
        print(_estimate(cfg, layout, args))
        ds = build_deepspeed_config(cfg.train, cfg.optim, layout)
        print("# deepspeed config:\n" + json.dumps(ds, indent=2))
        return 0
    from mbtrain.train.loop import train
    from mbtrain.train.signals import REQUEUE_EXIT_CODE, RequeueExit

    try:
        result = train(cfg)
    except RequeueExit:
        return REQUEUE_EXIT_CODE
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[mbtrain] done: step {result.step}, run directory {result.run_dir}")
        if result.val_bpb is not None:
            print(f"[mbtrain] validation bits per byte: {result.val_bpb:.4f}")
        if result.checkpoint:
            print(f"[mbtrain] checkpoint: {result.checkpoint}")
    return 0
