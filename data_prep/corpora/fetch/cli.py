"""`python data_prep/corpora/fetch_corpora.py` (or `python -m data_prep.corpora.fetch`):
parse the arguments, build each corpus named."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .apt import Ctx
from .corpus import CORPORA, build


def main(argv: list[str] | None = None) -> int:
    """Build the corpora named on the command line (argv, default sys.argv[1:]); returns 0."""
    ap = argparse.ArgumentParser(
        description=PACKAGE_DOC.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("corpora", nargs="+", choices=CORPORA, help="which corpora to build")
    ap.add_argument("--out", required=True, type=Path, help="output root, e.g. data/corpora")
    ap.add_argument(
        "--cache", type=Path, help="where .debs and unpacked packages go (default <out>/.cache)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="compressor processes at once (default 1)")
    ap.add_argument(
        "--allow-newer",
        action="store_true",
        help="take the current version of a package whose pin is gone",
    )
    ap.add_argument("--force", action="store_true", help="rebuild corpora that are complete")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    ctx = Ctx(
        out=out,
        cache=(args.cache or out / ".cache").resolve(),
        jobs=max(1, args.jobs),
        allow_newer=args.allow_newer,
        force=args.force,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(args.corpora):
        build(ctx, name)
    return 0
