"""Turn a grid folder into its results tables and report: load the cells (table.py), build the tables in the layout
that the grid's protocol names (protocols.py names it, layouts.py holds it), render them (render.py), and write
table.{md,csv,tex} and report.md (report.py, with the method comparison of stats.py over results.py's DataFrame).
Reads only files, so it works while the grid runs and after any crash.
"""
from __future__ import annotations

import errno
import warnings
from pathlib import Path

from dadf.data import protocols
from dadf.grid import layouts, store
from dadf.grid.render import to_csv, to_latex, to_markdown
from dadf.grid.report import write_report
from dadf.grid.table import CellRecord, Table, load_records


def layout_of(records: list[CellRecord]) -> layouts.Layout:
    """The layout of the grid's protocol; a grid that mixes protocols of different layouts gets the per-class one.
    An unknown protocol or layout is an error. A cell whose id names no protocol (its config unreadable) has no say."""
    names = {protocols.get(r.cell["protocol"]).layout for r in records if r.cell["protocol"] is not None}
    found = [layouts.get(name) for name in sorted(names)]
    return found[0] if len(found) == 1 else layouts.PER_CLASS


def build_tables(records: list[CellRecord], metrics: list[str], grid: str, published=None) -> list[Table]:
    """The grid's tables in its layout; class columns get one set of tables per dataset (c0 of one dataset is not c0
    of another). `published` defaults to published.yaml."""
    layout = layout_of(records)
    datasets = list(dict.fromkeys(r.cell["dataset"] for r in records))
    by_class = any(r.cell.get("target_class") is not None for r in records)
    if layout.class_columns and by_class and len(datasets) > 1:
        return [t for ds in datasets
                for t in build_tables([r for r in records if r.cell["dataset"] == ds], metrics, f"{grid} [{ds}]",
                                      published)]
    return layout.tables(records, metrics, grid, published)


def aggregate(grid_dir: Path, metrics: list[str] | None = None, plots: bool = False,
              write: bool = True, cells: list[str] | None = None, all_cells: bool = False) -> tuple[Table, str]:
    """Build the grid's tables, return (the first table, the Markdown of all tables). The cells tabled: `cells`
    when given (a launch passes its own), every cell folder with all_cells=True, else those of the grid's last
    launch (grid.json). write=True also writes table.{md,csv,tex} and report.md into the grid folder, and with
    plots=True the PNGs (per-cell ones only when out of date); a folder that refuses writes (read-only, no
    permission) gets one warning, the tables are still returned. write=False touches nothing (status.py)."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"{grid_dir} does not exist: run python jobs/launch_grid.py grid=<name> first")
    manifest = store.read_manifest(grid_dir)
    metrics = list(metrics or manifest.get("metrics") or ["auroc"])
    records = load_records(grid_dir, cells, all_cells)
    if not records:
        raise FileNotFoundError(f"{grid_dir} holds no cells (no */cell.yaml)")
    grid = manifest.get("grid", grid_dir.name)
    tables = build_tables(records, metrics, grid)
    md = "\n".join(to_markdown(t) for t in tables)
    if write:
        try:
            _write(grid_dir, grid, records, tables, md, plots, metrics[0])
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                raise
            # Reading results must work where they cannot be written (a read-only copy, someone else's folder, a
            # full disk).
            warnings.warn(f"{grid_dir} is not writable ({e.strerror}): the tables, report and plots there were not "
                          f"updated", stacklevel=2)
    return tables[0], md


def _write(grid_dir: Path, grid: str, records: list[CellRecord], tables: list[Table], md: str, plots: bool,
           metric: str) -> None:
    store.atomic_write_text(grid_dir / "table.md", md)
    store.atomic_write_text(grid_dir / "table.csv", to_csv(tables))
    store.atomic_write_text(grid_dir / "table.tex", "\n".join(to_latex(t) for t in tables))
    write_report(grid_dir, grid, records, tables, plots=plots, metric=metric)
