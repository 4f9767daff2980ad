"""`mbtrain train RECIPE [key=value ...]`: train or resume a run, in one process or many."""

from __future__ import annotations

import argparse
import json
import logging
import os

from mbtrain.cli.args import positive_float, positive_int

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a MegaByte model from a recipe",
        description="Train a MegaByte model. Run it as one process, under torchrun, or under "
        "srun (mbtrain submit); a run directory that holds checkpoints resumes from the latest. "
        "Every check (layout, data, the checkpoint to resume) runs before anything is built or "
        "written. Ctrl-C saves a checkpoint of the current step and prints the command that "
        "resumes; a second Ctrl-C aborts at once.",
        epilog="examples:\n"
        "  mbtrain train recipes/tiny_cpu.yaml data.train=data/x/train data.val=data/x/val\n"
        "  mbtrain train recipes/long_context_1m.yaml --dry-run --world-size 8\n"
        "  mbtrain train runs/my-run/config.yaml           # resume a run as it was\n"
        "  torchrun --nproc-per-node 8 -m mbtrain.cli.main train recipes/paper_text.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/tiny_cpu.yaml or RUN_DIR/config.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, layout, datasets and the checkpoint a run would resume; print "
        "the resolved config, memory and time estimate and the DeepSpeed config; train nothing",
    )
    p.add_argument(
        "--world-size",
        type=positive_int,
        default=None,
        help="with --dry-run: the number of processes to check the layout for "
        "(default: $WORLD_SIZE or 1)",
    )
    p.add_argument(
        "--device-memory",
        type=positive_float,
        default=None,
        help="with --dry-run: GiB of memory per device to check the estimate against "
        "(default: 80 for cuda recipes)",
    )
    p.add_argument(
        "--mfu",
        type=positive_float,
        default=None,
        help="with --dry-run: model FLOPs utilisation assumed for the step time, in (0, 1] "
        "(default: 0.40 on cuda, 0.60 on cpu)",
    )
    p.set_defaults(func=run_train)


def _estimate(cfg, layout, args: argparse.Namespace) -> str:
    """Memory and time per rank (mbtrain.train.estimate), for the recipe's device."""
    from mbtrain.monitor.peak import GPU_PEAKS, device_peak_flops
    from mbtrain.train.estimate import DEFAULT_DEVICE_MEMORY, GIB, estimate_rank, format_estimate

    device = cfg.train.device if cfg.train.device != "auto" else "cuda"
    peak = cfg.logging.peak_flops
    if not peak and device == "cuda":
        peak = GPU_PEAKS["H100"]["bf16" if cfg.train.precision == "bf16" else "fp32"]
    elif not peak:
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


def dry_run(cfg, args: argparse.Namespace) -> int:
    """Every check a start would run (markers only: no checkpoint file is read), then what
    the run would be."""
    from mbtrain.model import count_parameters, flops_per_byte
    from mbtrain.train.ds_config import build_deepspeed_config
    from mbtrain.train.preflight import preflight
    from mbtrain.train.run_config import config_to_yaml

    world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    pre = preflight(cfg, world, check_files=False)
    layout = pre.layout
    print(config_to_yaml(cfg))
    print(f"# layout: {layout.describe()} ({world} processes)")
    print(f"# global batch: {cfg.train.global_batch(layout.data)} sequences per step")
    print(f"# data: checked ({', '.join(_splits(cfg))})")
    if pre.resume is None:
        print("# start: a new run (no checkpoint to resume)")
    else:
        step = pre.resume.info.get("step")
        restart = ", data from its beginning (data.on_change=restart)" if pre.restart_data else ""
        print(f"# start: resume {pre.resume.path} (step {step}){restart}")
    print(f"# parameters: {count_parameters(cfg.model):,}")
    print(f"# training FLOPs per byte: {flops_per_byte(cfg.model, training=True):,.0f}")
    print(_estimate(cfg, layout, args))
    ds = build_deepspeed_config(cfg.train, cfg.optim, layout)
    print("# deepspeed config:\n" + json.dumps(ds, indent=2))
    return 0


def _splits(cfg) -> list[str]:
    train = [m["path"] for m in cfg.data.mix] if cfg.data.mix else [cfg.data.train]
    return [*train, *([cfg.data.val] if cfg.data.val else [])]


def run_train(args: argparse.Namespace) -> int:
    from mbtrain.train.run_config import load_config

    cfg = load_config(args.recipe, args.overrides)
    if args.dry_run:
        return dry_run(cfg, args)
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:  # srun without the wrapper
        from mbtrain.cluster.env import apply_slurm_env

        apply_slurm_env(os.environ)
    from mbtrain.train.loop import train
    from mbtrain.train.signals import StopExit

    try:
        result = train(cfg)
    except StopExit as stop:
        return int(stop.code)
    log.info(f"done: step {result.step}, run directory {result.run_dir}")
    if result.val_bpb is not None:
        log.info(f"validation bits per byte: {result.val_bpb:.4f}")
    if result.checkpoint:
        log.info(f"checkpoint: {result.checkpoint}")
    return 0
