"""``dadf-aggregate`` (or ``python jobs/aggregate.py``): build a grid's results tables and report from its folder
(works while the grid runs and after failures):

    python jobs/aggregate.py runs/quickstart [--metric auroc --metric auprc] [--plots] [--all]

Tables the cells of the grid's last launch (grid.json); --all tables every cell folder of the grid (earlier launches'
narrowed or wider expansions too). Writes table.{md,csv,tex} and report.md into the grid folder; --plots also
draws the PNGs (per-cell ones only when older than the cell's results, so rerunning is cheap). A folder it may not
write into (read-only) gets a warning: the table is still printed.
"""
from __future__ import annotations

import argparse
import os
import sys

from dadf.cli import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid_dir")
    parser.add_argument("--metric", action="append", help="auroc, auprc, precision, recall, f1 (repeatable)")
    parser.add_argument("--plots", action="store_true", help="draw ROC, histogram, reconstruction, training-curve "
                                                             "and AUROC-vs-p PNGs")
    parser.add_argument("--all", action="store_true", dest="all_cells",
                        help="table every cell folder, not only the cells of the grid's last launch (grid.json)")
    args = parser.parse_args(argv)
    setup_logging()
    from dadf.grid.aggregate import aggregate

    try:
        _, md = aggregate(args.grid_dir, args.metric, plots=args.plots, all_cells=args.all_cells)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    if os.access(args.grid_dir, os.W_OK):  # else aggregate() warned that nothing was written
        print(f"report: {args.grid_dir.rstrip('/')}/report.md")
    return 0
