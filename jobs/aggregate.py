"""Build a grid's results table from its folder (works while the grid runs and after failures):

    python jobs/aggregate.py runs/quickstart [--metric auroc --metric auprc]
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid_dir")
    parser.add_argument("--metric", action="append", help="auroc, auprc, precision, recall, f1 (repeatable)")
    args = parser.parse_args(argv)
    from dadf.grid.aggregate import aggregate

    try:
        _, md = aggregate(args.grid_dir, args.metric)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
