"""Launch a grid: `dadf-launch` with this checkout's dadf (code: dadf/cli/launch.py)."""
import sys

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

from dadf.cli.launch import main

if __name__ == "__main__":
    sys.exit(main())
