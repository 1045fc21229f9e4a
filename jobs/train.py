"""Run one cell: `dadf-train` with this checkout's dadf (code: dadf/cli/train.py)."""
import sys

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

from dadf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
