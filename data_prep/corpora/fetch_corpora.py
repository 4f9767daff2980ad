#!/usr/bin/env python3
"""Fetch the benchmark corpora: the documented entry point, kept at its path.

    python data_prep/corpora/fetch_corpora.py --out data/corpora text code image audio exe

The code lives in data_prep/corpora/fetch/ (`python -m data_prep.corpora.fetch` from the repo
root is the same command); its package docstring says what each corpus is and how it is made.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run by path, Python puts this file's directory on sys.path, not the repo root that the
    # package is imported from.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from data_prep.corpora.fetch.cli import main

    sys.exit(main())
