"""Build a grid's tables and report: `dadf-aggregate` with this checkout's dadf (code: dadf/cli/aggregate.py)."""
import sys

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

from dadf.cli.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
