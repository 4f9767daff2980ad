"""Thin entry point: `python data_prep/prepare.py --corpus data_prep/corpora/pystdlib.yaml`.

Same flags as `mbtrain prepare`; all the work happens in `mbtrain.data`.
"""

from __future__ import annotations

import argparse
import sys

from mbtrain.data.cli import add_prepare_arguments, run_prepare
from mbtrain.errors import MbtrainError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Prepare an MDS byte dataset (see mbtrain prepare).")
    add_prepare_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_prepare(args)
    except MbtrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
