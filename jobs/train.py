"""Run one cell (a folder written by launch_grid.py) in this process:

    python jobs/train.py cell=runs/quickstart/ae-digits-ovr-c3-s0-1a2b3c

It resumes from the cell's newest complete checkpoint when there is one.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cell", help="cell=<folder> (or just the folder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cell = args.cell.split("=", 1)[1] if args.cell.startswith("cell=") else args.cell
    from dadf.train.loop import run_cell

    try:
        result = run_cell(cell, progress=not args.no_progress)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
