"""Where a grid stands: `dadf-status` with this checkout's dadf (code: dadf/cli/status.py)."""
import sys

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

from dadf.cli.status import main

if __name__ == "__main__":
    sys.exit(main())
