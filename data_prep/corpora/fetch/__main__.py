"""`python -m data_prep.corpora.fetch --out data/corpora text code ...`"""

import sys

from .cli import main

sys.exit(main())
