"""`mbtrain`: one entry point, one subcommand per job, each a thin layer over the library.

Subcommand modules are imported lazily (torch and DeepSpeed take seconds to import), and
every user error (`MbtrainError`) is printed as one line with its exit code, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mbtrain.cli.version import version

# (module, function adding its parsers); each parser sets `func(args) -> int`.
COMMANDS = [
    ("mbtrain.cli.prepare", "add_prepare_parser"),
    ("mbtrain.cli.train", "add_parser"),
    ("mbtrain.cli.cluster", "add_parsers"),
    ("mbtrain.cli.use", "add_parsers"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbtrain",
        description="Train MegaByte byte-level models: prepare data, train, submit to Slurm, "
        "resume, evaluate, generate.",
    )
    parser.add_argument("--version", action="version", version=f"mbtrain {version()}")
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="every rank's lines (prefixed with the rank), debug lines, and the start-up "
        "messages of DeepSpeed and torch",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, func in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # a command whose module is not part of this installation
            raise
        getattr(mod, func)(sub)
    # The same flags after the command (`mbtrain train --verbose ...`); SUPPRESS keeps a flag
    # given before the command when it is not repeated after it.
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            default=argparse.SUPPRESS,
            help="every rank's lines, debug lines, DeepSpeed's and torch's",
        )
        command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                             help="warnings and errors only")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    from mbtrain.cli.logs import setup_logging
    from mbtrain.errors import MbtrainError

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MbtrainError as e:
        print(f"mbtrain {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mbtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
