"""``dadf-aggregate`` (or ``python jobs/aggregate.py``): build a grid's results tables and report from its folder
(works while the grid runs and after failures), or one study's from several grid folders:

    python jobs/aggregate.py runs/quickstart [--metric auroc --metric auprc] [--plots] [--all] [--rope 0.01]
    python jobs/aggregate.py runs/tabular runs/simplex_tabular [runs/mine ...] --out runs/study

Tables the cells of the grid's last launch (grid.json); --all tables every cell folder of the grid (earlier launches'
narrowed or wider expansions too). Writes table.{md,csv,tex} and report.md into the grid folder (a study: into
--out); --plots also draws the PNGs (per-cell ones only when older than the cell's results, so rerunning is cheap).
A folder it may not write into (read-only) gets a warning: the table is still printed.

A study tables the cells of all its grids as one table (their methods side by side) with one method comparison;
the grids must share a table layout and, unless --metric chooses, their metric. --rope sets the half-width of the
region of practical equivalence of the Bayesian signed-rank test, on the metric's scale.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys

from dadf.cli import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid_dirs", nargs="+", metavar="grid_dir", help="a grid folder, or several for one study")
    parser.add_argument("--out", default=None, help="the folder for a study's tables and report (several grid "
                                                    "folders need it; default for one: the grid folder)")
    parser.add_argument("--metric", action="append", help="auroc, auprc, precision, recall, f1 (repeatable)")
    parser.add_argument("--rope", type=float, default=None,
                        help="region of practical equivalence of the Bayesian test, ± on the metric (default 0.01)")
    parser.add_argument("--plots", action="store_true", help="draw ROC, histogram, reconstruction, training-curve "
                                                             "and AUROC-vs-p PNGs, and the critical-difference diagram")
    parser.add_argument("--all", action="store_true", dest="all_cells",
                        help="table every cell folder, not only the cells of the grid's last launch (grid.json)")
    args = parser.parse_args(argv)
    setup_logging()
    gc_enabled = gc.isenabled()
    gc.disable()  # the imports (scipy) and the tables build millions of objects that live to the end: no cyclic GC
    try:
        from dadf.grid import stats
        from dadf.grid.aggregate import aggregate

        grid = args.grid_dirs if len(args.grid_dirs) > 1 else args.grid_dirs[0]
        rope = stats.ROPE if args.rope is None else args.rope
        _, md = aggregate(grid, args.metric, plots=args.plots, all_cells=args.all_cells, out=args.out, rope=rope)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if gc_enabled:
            gc.enable()
    print(md)
    out = args.out or args.grid_dirs[0]
    if os.access(out, os.W_OK):  # else aggregate() warned that nothing was written
        print(f"report: {out.rstrip('/')}/report.md")
    return 0
