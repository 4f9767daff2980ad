"""`mbtrain`: one entry point, one subcommand per job, each a thin layer over the library.

Subcommand modules are imported lazily (torch and DeepSpeed take seconds to import), and
every user error (`MbtrainError`) is printed as one line with its exit code, no traceback.

Every subcommand's `--help` teaches: a description, each flag's default (`HelpFormatter`), and
an "examples:" epilog written by the module that defines the command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mbtrain.cli.version import version


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal, examples kept as written (a text with line breaks,
    the epilog, is not refilled), and ` (default: X)` after each flag's help where X says
    something: not None, False or empty, and not already explained in the help text itself
    (`(default: model.seq_len)`)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default is argparse.SUPPRESS
            or default is None
            or default is False
            or default in ("", [])
        ):
            return text
        return f"{text} (default: %(default)s)"


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
        epilog="examples:\n"
        "  mbtrain prepare 'corpus/**/*.jsonl.zst' --text-field text --seq-len 8192 -o data/c\n"
        "  mbtrain train recipes/cpu.yaml data.train=data/c/train data.val=data/c/val\n"
        "  mbtrain status runs/cpu\n"
        "  mbtrain eval runs/cpu data/c/val\n"
        "  mbtrain COMMAND --help          # what each command does, its flags and examples",
        formatter_class=HelpFormatter,
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
        command.formatter_class = HelpFormatter
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


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`parse_args`, except that a command's list of positionals may go on after its options
    (`train RECIPE --dry-run --world-size 8 data.train=...`, `status RUN --json RUN2`):
    argparse stops filling a `nargs="*"` positional at the first option and would refuse the
    rest. Overrides must still be KEY=VALUE; an unknown option is still refused."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        dest = _trailing_list(parser, getattr(args, "command", None))
        fits = dest is not None and all(
            not a.startswith("-") and ("=" in a or dest != "overrides") for a in extra
        )
        if not fits:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, dest, [*(getattr(args, dest) or []), *extra])
    return args


def _trailing_list(parser: argparse.ArgumentParser, command: str | None) -> str | None:
    """The `dest` of the command's `nargs="*"` positional, if it has one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for a in action.choices[command]._actions:
                if not a.option_strings and a.nargs in ("*", "+"):
                    return a.dest
    return None


def main(argv: list[str] | None = None) -> int:
    from mbtrain.cli.logs import setup_logging
    from mbtrain.errors import MbtrainError

    parser = build_parser()
    args = parse(parser, argv)
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
