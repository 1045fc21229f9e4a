"""Results as one tidy pandas DataFrame, for notebooks and for the aggregator's statistics:

    import dadf.grid.results
    df = dadf.grid.results.load("runs/tabular")          # the cells of the grid's last launch (grid.json)
    df = dadf.grid.results.load(["runs/tabular", "runs/simplex_tabular"])   # several grids: one study
    df.query("metric == 'f1' and score == 'score'").groupby(["dataset", "method"]).value.agg(["mean", "std", "count"])

One row per cell × score × metric of every finished cell (`score` is "score", the method's anomaly score, or the
name of an alternative score in metrics.json's metrics_by_score); a cell that is not finished (failed, running,
missing, ...) or finished without metrics has one row with score, metric and value empty, so nothing is dropped.
Columns: COLUMNS, then one column per grid axis the cell names (e.g. `method.ablation`), keyed as in the grid.

Methods are compared over units (UNIT): a unit is a dataset, or a class of a one-class protocol, or an OOD pair or
p value where those vary, and never a seed. A method's value on a unit is its mean over seeds: seeds of one dataset
are not independent evidence (Demšar 2006), so counting them as units would inflate every test.
"""
from __future__ import annotations

from pathlib import Path

from dadf.grid import store
from dadf.grid.layouts import row_axes, row_key
from dadf.grid.table import CellRecord, load_records, why

COLUMNS = ["cell", "grid", "method", "variant", "dataset", "protocol", "target_class", "secondary", "p", "seed",
           "state", "reason", "score", "metric", "value"]
PRIMARY_SCORE = "score"  # the method's anomaly score, the one the tables show
# the columns that say which unit a value belongs to when methods are compared (seeds are averaged within a unit)
UNIT = ["dataset", "secondary", "target_class", "p"]
UNIT_NAMES = {"dataset": "dataset", "secondary": "OOD set", "target_class": "class", "p": "p"}


def load(grid_dirs: Path | str | list, cells: list[str] | None = None, all_cells: bool = False):
    """The results of one grid folder or of several (a study; column `grid` names each cell's): the cells of each
    grid's last launch (grid.json), `cells` when given (one folder only), or with all_cells=True every cell folder.
    Reads only files: works while the grids run."""
    return frame(load_grids(grid_dirs, cells, all_cells))


def load_grids(grid_dirs: Path | str | list, cells: list[str] | None = None,
               all_cells: bool = False) -> list[CellRecord]:
    """The cell records of one grid folder or several, in order. Of cells with the same id in several grids (the
    same frozen config and seed) the first grid's is kept. A method variant that several grids hold with different
    configs gets the axis `grid` (its row reads `iforest grid=mine`), so that each grid's runs stay apart."""
    dirs = [Path(d) for d in ([grid_dirs] if isinstance(grid_dirs, (str, Path)) else grid_dirs)]
    dirs = list(dict.fromkeys(d.resolve() for d in dirs))
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d} does not exist: run python jobs/launch_grid.py grid=<name> first")
    if cells is not None and len(dirs) > 1:
        raise ValueError("cells= names the cells of one grid; a study of several grids tables their launches' cells")
    if len(dirs) == 1:
        return load_records(dirs[0], cells, all_cells)
    records, seen = [], set()
    for d in dirs:
        for rec in load_records(d, None, all_cells):
            if rec.id not in seen:
                seen.add(rec.id)
                records.append(rec)
    grids_of: dict[str, set] = {}
    for rec in records:
        grids_of.setdefault(row_key(rec.cell), set()).add(rec.grid)
    for rec in records:
        if len(grids_of[row_key(rec.cell)]) > 1:
            rec.cell = {**rec.cell, "axes": {**(rec.cell.get("axes") or {}), "grid": rec.grid}}
    return records


def frame(records: list[CellRecord]):
    """The DataFrame of already-read cell records (see the module's docstring for its rows and columns)."""
    import pandas as pd

    rows, axis_keys = [], []
    for rec in records:
        cell = rec.cell
        axes = row_axes(cell)
        axis_keys += [k for k in axes if k not in axis_keys]
        base = {"cell": rec.id, "grid": rec.grid, "method": cell["method"], "variant": row_key(cell),
                "dataset": cell["dataset"], "protocol": cell["protocol"], "target_class": cell.get("target_class"),
                "secondary": cell.get("secondary"), "p": rec.p, "seed": seed_of(rec), "state": rec.state,
                "reason": why(rec) if rec.reason else None, **axes}
        values = list(_values(rec))
        if not values:
            rows.append({**base, "score": None, "metric": None, "value": float("nan")})
        rows += [{**base, "score": score, "metric": metric, "value": value} for score, metric, value in values]
    df = pd.DataFrame(rows, columns=COLUMNS + axis_keys)
    # nullable integers: a missing class or seed stays <NA> instead of turning the column into floats
    return df.astype({"target_class": "Int64", "seed": "Int64", "value": "float64"})


def seed_of(rec: CellRecord) -> int | None:
    seed = rec.cell.get("seed")
    if seed is None and rec.result:
        seed = rec.result.get("seed")
    return seed


def _values(rec: CellRecord):
    """(score, metric, value) of a finished cell's metrics.json."""
    if rec.result is None:
        return
    by_score = {PRIMARY_SCORE: rec.result.get("metrics") or {}, **(rec.result.get("metrics_by_score") or {})}
    for score, metrics in by_score.items():
        for metric, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield score, metric, float(value)


# ---------------------------------------------------------------------------------------------------- units

def unit_label(key: tuple) -> str:
    """A unit's name in the report: `kdd99`, `mnist c3`, `fmnist→mnist`, `cifar10 c2 p=5%`."""
    dataset, secondary, target_class, p = key
    text = f"{dataset}→{secondary}" if _given(secondary) else str(dataset)
    if _given(target_class):
        text += f" c{int(target_class)}"
    if _given(p):
        text += f" p={float(p):g}%"
    return text


def unit_kind(keys) -> str:
    """What one unit is: the UNIT parts that vary over `keys` ("dataset", "class", "dataset × class", ...); the
    dataset when none varies."""
    keys = list(keys)
    varying = [UNIT_NAMES[c] for i, c in enumerate(UNIT) if len({k[i] for k in keys}) > 1]
    return " × ".join(varying) or "dataset"


def _given(x) -> bool:
    """Not None, NaN or pandas' <NA>."""
    if x is None:
        return False
    try:
        return bool(x == x)
    except TypeError:  # <NA> == <NA> is <NA>
        return False


def seed_values(records: list[CellRecord], metric: str, score: str = PRIMARY_SCORE) -> dict[tuple, dict]:
    """{unit key: {variant: {seed: value}}} of the finished cells' `metric`, variants in the records' order. Built
    from the records directly (no DataFrame): the report runs it on grids of 10,000 cells."""
    out: dict[tuple, dict] = {}
    for rec in records:
        if rec.state != store.DONE or rec.result is None:
            continue
        metrics = (rec.result.get("metrics") if score == PRIMARY_SCORE
                   else (rec.result.get("metrics_by_score") or {}).get(score)) or {}
        v = metrics.get(metric)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            continue
        cell = rec.cell
        key = (cell["dataset"], cell.get("secondary"), cell.get("target_class"), rec.p)
        out.setdefault(key, {}).setdefault(row_key(cell), {})[seed_of(rec)] = float(v)
    return out


def unit_means(per_seed: dict[tuple, dict], variants: list[str] | None = None):
    """(unit labels, variants, units × variants list of lists of means over seeds, NaN where a variant lacks the
    unit): what stats.compare takes."""
    if variants is None:
        variants = list(dict.fromkeys(v for by_variant in per_seed.values() for v in by_variant))
    nan = float("nan")
    values = [[(sum(s.values()) / len(s)) if (s := by_variant.get(v)) else nan for v in variants]
              for by_variant in per_seed.values()]
    return [unit_label(k) for k in per_seed], variants, values


def paired(df, metric: str, score: str = PRIMARY_SCORE):
    """One row per unit (UNIT: dataset, OOD set, class, p; named as in the report), one column per method variant
    (in the grid's order): each variant's mean over the seeds of its finished cells' `metric`; NaN where a variant
    lacks the unit."""
    import pandas as pd

    done = df[(df["state"] == "done") & (df["score"] == score) & (df["metric"] == metric)]
    if done.empty:
        return pd.DataFrame()
    keys = [tuple(None if not _given(x) else x for x in key) for key in done[UNIT].itertuples(index=False)]
    unit = [unit_label(k) for k in keys]
    wide = done.assign(unit=unit).pivot_table(index="unit", columns="variant", values="value", aggfunc="mean",
                                              sort=False)
    return wide[list(dict.fromkeys(done["variant"]))]
