"""Turn a grid folder, or several grid folders as one study, into results tables and a report: load the cells
(table.py, results.load_grids), build the tables in the layout that the grids' protocol names (protocols.py names it,
layouts.py holds it), render them (render.py), and write table.{md,csv,tex} and report.md (report.py, with the method
comparison of stats.py over the units of results.py). Reads only files, so it works while a grid runs and after any
crash.
"""
from __future__ import annotations

import errno
import gc
import warnings
from contextlib import contextmanager
from pathlib import Path

from dadf.data import protocols
from dadf.grid import layouts, stats, store
from dadf.grid.render import to_csv, to_latex, to_markdown
from dadf.grid.report import write_report
from dadf.grid.results import load_grids
from dadf.grid.table import CellRecord, Table, load_records  # noqa: F401 -- load_records: this module's API too


class StudyError(ValueError):
    """Grids that cannot be tabled as one study (different layouts or metrics)."""


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


def check_study(grid_dirs: list[Path], records: list[CellRecord], metrics: list[str] | None) -> None:
    """Several grids make one study only when their cells share a layout and, unless `metrics` chooses, their grids
    name the same metrics; else StudyError naming each grid's."""
    by_grid: dict[Path, list[CellRecord]] = {}
    for r in records:
        by_grid.setdefault(r.dir.parent if r.dir is not None else Path("?"), []).append(r)
    found = {g: layout_of(recs).name for g, recs in by_grid.items()}
    if len(set(found.values())) > 1:
        names = ", ".join(f"{g} ({name})" for g, name in found.items())
        raise StudyError(f"these grids have different table layouts: {names}; one study tables grids of one layout "
                         f"(their protocols' layout): aggregate them separately")
    if metrics is None:
        named = {d: list(store.read_manifest(d).get("metrics") or ["auroc"]) for d in grid_dirs}
        if len({tuple(m) for m in named.values()}) > 1:
            names = ", ".join(f"{d} ({', '.join(m)})" for d, m in named.items())
            raise StudyError(f"these grids rank by different metrics: {names}; choose the study's with --metric "
                             f"(e.g. --metric {next(iter(named.values()))[0]})")


def aggregate(grid_dir: Path | str | list, metrics: list[str] | None = None, plots: bool = False,
              write: bool = True, cells: list[str] | None = None, all_cells: bool = False,
              out: Path | str | None = None, rope: float = stats.ROPE,
              records: list[CellRecord] | None = None) -> tuple[Table, str]:
    """Build the tables of a grid folder, or of several as one study, return (the first table, the Markdown of all
    tables). The cells tabled: `cells` when given (a launch passes its own), every cell folder with all_cells=True,
    else those of each grid's last launch (grid.json). write=True also writes table.{md,csv,tex} and report.md into
    `out` (default: the grid folder; a study needs one), and with plots=True the PNGs (per-cell ones only when out of
    date); a folder that refuses writes (read-only, no permission) gets one warning, the tables are still returned.
    write=False touches nothing (status.py). `rope`: the region of practical equivalence of the Bayesian test.
    `records`: the cells already read (load_records), so that a caller that read them reads no file twice."""
    with no_cyclic_gc():
        return _aggregate(grid_dir, metrics, plots, write, cells, all_cells, out, rope, records)


@contextmanager
def no_cyclic_gc():
    """The records and tables of a large grid are a million small objects that live until the end: the cyclic
    collector would walk them again and again (a third of the reading time at 10,000 cells). Reference counting
    still frees what is dropped; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _aggregate(grid_dir, metrics, plots, write, cells, all_cells, out, rope, records=None) -> tuple[Table, str]:
    dirs = [Path(d) for d in ([grid_dir] if isinstance(grid_dir, (str, Path)) else grid_dir)]
    if not dirs:
        raise ValueError("no grid folder given")
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d} does not exist: run python jobs/launch_grid.py grid=<name> first")
    study = len({d.resolve() for d in dirs}) > 1
    if study and write and out is None:
        raise ValueError(f"{len(dirs)} grid folders make one study: name the folder for its tables and report with "
                         f"--out (e.g. --out runs/study)")
    if rope < 0:
        raise ValueError(f"rope {rope} is negative: give the half-width of the region of practical equivalence "
                         f"(e.g. 0.01)")
    records = load_grids(dirs, cells, all_cells) if records is None else records
    if not records:
        raise FileNotFoundError(f"{', '.join(map(str, dirs))} holds no cells (no */cell.yaml)")
    if study:
        check_study(dirs, records, metrics)
    manifest = store.read_manifest(dirs[0])
    metrics = list(metrics or manifest.get("metrics") or ["auroc"])
    names = [store.read_manifest(d).get("grid", d.name) for d in dirs] if study else [manifest.get("grid",
                                                                                                   dirs[0].name)]
    target = Path(out) if out is not None else dirs[0]
    grid = f"{target.name} ({' + '.join(names)})" if study else names[0]
    tables = build_tables(records, metrics, grid)
    md = "\n".join(to_markdown(t) for t in tables)
    if write:
        try:
            target.mkdir(parents=True, exist_ok=True)
            _write(target, grid, records, tables, md, plots, metrics[0], rope, dirs if study else None)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                raise
            # Reading results must work where they cannot be written (a read-only copy, someone else's folder, a
            # full disk).
            warnings.warn(f"{target} is not writable ({e.strerror}): the tables, report and plots there were not "
                          f"updated", stacklevel=2)
    return tables[0], md


def _write(out: Path, grid: str, records: list[CellRecord], tables: list[Table], md: str, plots: bool,
           metric: str, rope: float, sources: list[Path] | None) -> None:
    store.atomic_write_text(out / "table.md", md)
    store.atomic_write_text(out / "table.csv", to_csv(tables))
    store.atomic_write_text(out / "table.tex", "\n".join(to_latex(t) for t in tables))
    write_report(out, grid, records, tables, plots=plots, metric=metric, rope=rope, sources=sources)
