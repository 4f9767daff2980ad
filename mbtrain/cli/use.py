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


class _Out(argparse.Action):
    """`--out/-o`, the one spelling of every command's output file or directory. `--output`
    (eval, generate and plot before the rename) still parses, with a warning, but is not shown:
    commands written before keep working."""

    OLD = "--output"

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string == self.OLD:
            print(f"mbtrain: {self.OLD} is deprecated, use --out (-o)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _out_flag(p: argparse.ArgumentParser, help: str, **kwargs) -> None:
    action = p.add_argument("--out", "-o", _Out.OLD, action=_Out, help=help, **kwargs)
    # The parser's table of option strings keeps `--output` (it parses); help, usage and error
    # messages read the action's own list, which no longer names it.
    action.option_strings.remove(_Out.OLD)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="bits per byte on held-out data, beside gzip/bzip2/xz",
        description="Bits per byte of a trained model on held-out bytes (prepared splits, or "
        "any files), beside gzip -9, bzip2 -9 and xz -9e on the same bytes. Each document is "
        "scored on its own with sliding windows; --mode selects basic or strided windows "
        "instead (repeat it to compare several). Progress (bytes/s, ETA) goes to stderr, the result to stdout and a JSON file.",
        epilog="examples:\n"
        "  mbtrain eval runs/my-run data/mycorpus/val\n"
        "  mbtrain eval runs/my-run notes.txt src/ --max-bytes 1000000 -o notes-eval.json\n"
        "  mbtrain eval exported/ data/mycorpus/val --mode sliding --mode strided --step 2000\n"
        "  mbtrain eval runs/my-run data/mycorpus/val --device cuda --batch-size 64",
    )
    p.add_argument("model", help="run directory, checkpoint directory or export directory")
    p.add_argument("data", nargs="+", help="MDS split(s) (e.g. out/val), files or directories")
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    p.add_argument(
        "--mode",
        action="append",
        choices=["basic", "sliding", "strided"],
        help="inference mode; repeat for several, the first is the headline (default: sliding; "
        "each mode is one more pass over the data)",
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
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="full windows per batch, >= 1; shorter windows are packed into the same bytes",
    )
    p.add_argument(
        "--max-bytes",
        type=positive_int,
        default=None,
        help="evaluate on at most this many bytes (default: all)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch's CPU threads (default: the faster of one per core and 1, timed on one "
        "batch; on cores that other jobs keep busy, 1 thread can be several times faster)",
    )
    _out_flag(
        p,
        "JSON result, in the current directory unless a path is given",
        default="eval.json",
        metavar="FILE",
    )
    p.set_defaults(func=run_eval)

    p = sub.add_parser(
        "generate",
        help="sample bytes from a trained model (streamed as produced)",
        description="Sample bytes from a trained model, streamed to stdout (or a file) as they "
        "are produced: any prompt (text, or any bytes from a file), temperature, top-k, top-p, "
        "a seed for repeatable samples and a stop text.",
        epilog="examples:\n"
        "  mbtrain generate runs/my-run --prompt 'def ' --max-bytes 200 --top-p 0.9 --seed 1\n"
        "  mbtrain generate runs/my-run --prompt 'import ' --temperature 0   # greedy\n"
        "  mbtrain generate exported/ --prompt-file header.bin --max-bytes 4096 -o sample.bin\n"
        "  mbtrain generate runs/my-run --prompt 'Q: ' --stop $'\\n\\n' --step 1000",
    )
    p.add_argument("model", help="run directory, checkpoint directory or export directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", default="", help="prompt text (UTF-8) (default: none)")
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
        help="sample among the k likeliest bytes, k >= 1 (default: all 256)",
    )
    p.add_argument(
        "--top-p",
        type=probability,
        default=None,
        help="sample among the likeliest bytes holding this probability mass, in (0, 1] "
        "(default: 1, all of it)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed, for repeatable samples "
        "(default: a new sample each time)"
    )  # fmt: skip
    p.add_argument(
        "--stop", default=None, help="stop when this text is produced (default: at --max-bytes)"
    )
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    _out_flag(p, "write the bytes to this file (default: stdout)", default=None, metavar="FILE")
    p.set_defaults(func=run_generate)

    p = sub.add_parser(
        "export",
        help="consolidated safetensors + model config from a checkpoint",
        description="Write one consolidated model.safetensors and model.json from a checkpoint "
        "of any layout (ZeRO stage, tensor/pipeline parallel): loadable without DeepSpeed "
        "(mbtrain.checkpoint.export.load_exported) and by eval/generate.",
        epilog="examples:\n"
        "  mbtrain export runs/my-run --out exported/\n"
        "  mbtrain export runs/my-run --step 2000 -o exported-2000/\n"
        "  mbtrain export runs/my-run/checkpoints/step00002000 -o exported-2000/",
    )
    p.add_argument("run", help="run directory or checkpoint directory")
    p.add_argument(
        "--step", type=non_negative_int, default=None, help="checkpoint step (default: latest)"
    )
    _out_flag(
        p,
        "output directory; an earlier export there is replaced, anything else refused",
        required=True,
        metavar="DIR",
    )
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "plot",
        help="loss, val bpb, throughput and lr of runs, overlaid, as a PNG",
        description="Training and validation bits per byte, throughput and learning rate of "
        "one or more runs (their metrics.jsonl), overlaid on a shared step axis, as one PNG.",
        epilog="examples:\n"
        "  mbtrain plot runs/my-run -o curves.png\n"
        "  mbtrain plot runs/baseline runs/zero2 runs/long-context -o compare.png",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    _out_flag(p, "PNG file", required=True, metavar="PNG")
    p.set_defaults(func=run_plot)


def run_eval(args: argparse.Namespace) -> int:
    from mbtrain.checkpoint.consolidate import load_model
    from mbtrain.errors import ConfigError, DataError
    from mbtrain.inference.evaluate import check_eval_args, evaluate_model, format_eval
    from mbtrain.train.host_memory import keep_freed_memory

    keep_freed_memory()  # every window allocates the same activations again

    model = load_model(args.model, args.step, args.device)
    modes = tuple(dict.fromkeys(args.mode)) if args.mode else None  # None: sliding only
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
        progress=not getattr(args, "quiet", False),
        threads=args.threads,
    )
    result["model"] = str(args.model)
    result["data"] = list(args.data)
    print(format_eval(result))
    out = Path(args.out).absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise DataError(f"{args.out}: cannot write the result ({e.strerror})") from None
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
        stream = open(args.out, "wb") if args.out else sys.stdout.buffer
    except OSError as e:
        raise DataError(f"{args.out}: cannot write the output ({e.strerror})") from None
    try:
        for byte in produced:
            stream.write(bytes((byte,)))
            stream.flush()
    finally:
        if args.out:
            stream.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mbtrain.checkpoint.consolidate import export_checkpoint

    out = export_checkpoint(args.run, args.out, args.step)
    print(f"exported to {out} (model.safetensors, model.json)")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from mbtrain.monitor.plot import plot_runs

    counts = plot_runs(args.runs, args.out)
    print(f"wrote {args.out} ({sum(counts.values())} series)")
    return 0
