"""`mbtrain eval | generate | export | plot`: using a run after (or during) training.

Each reads a run directory, a checkpoint directory or an export directory; none needs the
training config or the parallel layout the model was trained with.

Every numeric flag has a `type=` from mbtrain.cli.args that states its range, so a bad value
is argparse's usage line and one error line (exit 2) before any model is loaded. What depends on the model
(`--context` beyond learned positions, a prompt longer than seq_len) is checked by the
library as a ValueError naming the argument, and shown the same way (exit 2, one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mbtrain.cli.args import non_negative_float, non_negative_int, positive_int, probability


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="bits per byte on held-out data, beside gzip/bzip2/xz")
    p.add_argument("model", help="run directory, checkpoint directory or export directory")
    p.add_argument("data", nargs="+", help="MDS split(s) (e.g. out/val), files or directories")
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    p.add_argument(
        "--mode",
        action="append",
        choices=["basic", "sliding", "strided"],
        help="inference mode(s) (default: all three, sliding first when a document is longer "
        "than the context)",
    )
    p.add_argument(
        "--context",
        type=positive_int,
        default=None,
        help="context bytes, >= 1 and at most model.seq_len with learned positions "
        "(default: model.seq_len)",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="stride of sliding/strided windows, 1..context (default: context/2 sliding, "
        "context strided)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per batch, >= 1")
    p.add_argument(
        "--max-bytes", type=positive_int, default=None, help="evaluate on at most this many bytes"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="JSON result (default: <run dir>/eval.json or ./eval.json)",
    )
    p.set_defaults(func=run_eval)

    p = sub.add_parser("generate", help="sample bytes from a trained model (streamed as produced)")
    p.add_argument("model", help="run directory, checkpoint directory or export directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default="", help="prompt text (UTF-8)")
    src.add_argument("--prompt-file", default=None, help="prompt bytes from a file (any bytes)")
    p.add_argument(
        "--max-bytes", type=non_negative_int, default=256, help="bytes to generate, >= 0"
    )
    p.add_argument(
        "--temperature", type=non_negative_float, default=1.0, help="a number >= 0; 0 for greedy"
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=None,
        help="sample among the k likeliest bytes, k >= 1",
    )
    p.add_argument(
        "--top-p",
        type=probability,
        default=None,
        help="sample among the likeliest bytes holding this probability mass, in (0, 1]",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", default=None, help="stop when this text is produced")
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--output", "-o", default=None, help="write the bytes to this file instead of stdout"
    )
    p.set_defaults(func=run_generate)

    p = sub.add_parser("export", help="consolidated safetensors + model config from a checkpoint")
    p.add_argument("run", help="run directory or checkpoint directory")
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run_export)

    p = sub.add_parser("plot", help="loss, val bpb, throughput and lr of runs, overlaid, as a PNG")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("-o", "--output", required=True, help="PNG file")
    p.set_defaults(func=run_plot)


def run_eval(args: argparse.Namespace) -> int:
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.errors import ConfigError
    from mbtrain.inference.evaluate import check_eval_args, evaluate_model, format_eval
    from mbtrain.train.host_memory import keep_freed_memory

    keep_freed_memory()  # every window allocates the same activations again

    model = load_model(args.model, args.step, args.device)
    modes = tuple(args.mode) if args.mode else None  # default: sliding first for long inputs
    try:  # the ranges that depend on the model (argparse has checked the rest)
        check_eval_args(model, modes, args.context, args.stride, args.batch_size, args.max_bytes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    result = evaluate_model(
        model,
        args.data,
        modes,
        args.context,
        args.stride,
        args.batch_size,
        args.max_bytes,
        progress=sys.stderr.isatty(),
    )
    result["model"] = str(args.model)
    result["data"] = list(args.data)
    print(format_eval(result))
    out = (
        Path(args.output)
        if args.output
        else (
            Path(args.model) / "eval.json"
            if (Path(args.model) / "config.yaml").is_file()
            else Path("eval.json")
        )
    )
    out.write_text(json.dumps(result, indent=2))
    print(f"result written to {out}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.errors import ConfigError, DataError
    from mbtrain.model import generate

    # os.fsencode: the command line's own bytes, also those that are not UTF-8.
    prompt = os.fsencode(args.prompt)
    if args.prompt_file:
        try:
            prompt = Path(args.prompt_file).read_bytes()
        except OSError as e:
            raise DataError(
                f"{args.prompt_file}: cannot read the prompt file ({e.strerror})"
            ) from None
    model = load_model(args.model, args.step, args.device)
    try:  # generate checks its arguments at the call, before the first byte
        produced = generate(
            model,
            prompt,
            max_bytes=args.max_bytes,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop=os.fsencode(args.stop) if args.stop else None,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        stream = open(args.output, "wb") if args.output else sys.stdout.buffer
    except OSError as e:
        raise DataError(f"{args.output}: cannot write the output ({e.strerror})") from None
    try:
        for byte in produced:
            stream.write(bytes((byte,)))
            stream.flush()
    finally:
        if args.output:
            stream.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mbtrain.checkpoint.consolidate import export_checkpoint

    out = export_checkpoint(args.run, args.out, args.step)
    print(f"exported to {out} (model.safetensors, model.json)")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from mbtrain.monitor.plot import plot_runs

    counts = plot_runs(args.runs, args.output)
    print(f"wrote {args.output} ({sum(counts.values())} series)")
    return 0
