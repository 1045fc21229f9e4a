"""Write a dataset's shards: `dadf-build-shards` with this checkout's dadf (code: dadf/cli/build_shards.py)."""
import sys

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

from dadf.cli.build_shards import main

if __name__ == "__main__":
    sys.exit(main())
