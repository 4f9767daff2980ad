"""`mbtrain train` under a file-size limit on one rank: a disk that fills up mid-save.

FSIZE_LIMIT_RANK and FSIZE_LIMIT (bytes) select the rank and the limit; writing past it fails
with EFBIG (Python ignores SIGXFSZ), as a full disk fails a write with ENOSPC.
"""

import os
import resource
import sys

if os.environ.get("RANK") == os.environ.get("FSIZE_LIMIT_RANK"):
    limit = int(os.environ["FSIZE_LIMIT"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

from mbtrain.cli.main import main

sys.exit(main(["train", *sys.argv[1:]]))
