"""A grid's results as one tidy pandas DataFrame, for notebooks and for the aggregator's statistics:

    import dadf.grid.results
    df = dadf.grid.results.load("runs/tabular")          # the cells of the grid's last launch (grid.json)
    df.query("metric == 'f1' and score == 'score'").groupby(["dataset", "method"]).value.agg(["mean", "std", "count"])

One row per cell × score × metric of every finished cell (`score` is "score", the method's anomaly score, or the
name of an alternative score in metrics.json's metrics_by_score); a cell that is not finished (failed, running,
missing, ...) or finished without metrics has one row with score, metric and value empty, so nothing is dropped.
Columns: COLUMNS, then one column per grid axis the cell names (e.g. `method.ablation`), keyed as in the grid.
"""
from __future__ import annotations

from pathlib import Path

from dadf.grid.layouts import row_axes, row_key
from dadf.grid.table import CellRecord, load_records, why

COLUMNS = ["cell", "method", "variant", "dataset", "protocol", "target_class", "secondary", "p", "seed", "state",
           "reason", "score", "metric", "value"]
PRIMARY_SCORE = "score"  # the method's anomaly score, the one the tables show
# the columns that say which paired unit (dataset or class, and seed) a value belongs to, when methods are compared
UNIT = ["dataset", "secondary", "target_class", "p", "seed"]


def load(grid_dir: Path | str, cells: list[str] | None = None, all_cells: bool = False):
    """The grid folder's results: the cells of its last launch (grid.json), `cells` when given, or with
    all_cells=True every cell folder. Reads only files: works while the grid runs."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"{grid_dir} does not exist: run python jobs/launch_grid.py grid=<name> first")
    return frame(load_records(grid_dir, cells, all_cells))


def frame(records: list[CellRecord]):
    """The DataFrame of already-read cell records (see the module's docstring for its rows and columns)."""
    import pandas as pd

    rows, axis_keys = [], []
    for rec in records:
        cell = rec.cell
        axes = row_axes(cell)
        axis_keys += [k for k in axes if k not in axis_keys]
        seed = cell.get("seed")
        if seed is None and rec.result:
            seed = rec.result.get("seed")
        base = {"cell": rec.id, "method": cell["method"], "variant": row_key(cell), "dataset": cell["dataset"],
                "protocol": cell["protocol"], "target_class": cell.get("target_class"),
                "secondary": cell.get("secondary"), "p": rec.p, "seed": seed, "state": rec.state,
                "reason": why(rec) if rec.reason else None, **axes}
        values = list(_values(rec))
        if not values:
            rows.append({**base, "score": None, "metric": None, "value": float("nan")})
        rows += [{**base, "score": score, "metric": metric, "value": value} for score, metric, value in values]
    df = pd.DataFrame(rows, columns=COLUMNS + axis_keys)
    # nullable integers: a missing class or seed stays <NA> instead of turning the column into floats
    return df.astype({"target_class": "Int64", "seed": "Int64", "value": "float64"})


def _values(rec: CellRecord):
    """(score, metric, value) of a finished cell's metrics.json."""
    if rec.result is None:
        return
    by_score = {PRIMARY_SCORE: rec.result.get("metrics") or {}, **(rec.result.get("metrics_by_score") or {})}
    for score, metrics in by_score.items():
        for metric, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield score, metric, float(value)


def paired(df, metric: str, score: str = PRIMARY_SCORE):
    """One row per paired unit (dataset or class, and seed), one column per method variant (in the grid's order),
    the finished cells' values of `metric`; NaN where a variant lacks the unit."""
    done = df[(df["state"] == "done") & (df["score"] == score) & (df["metric"] == metric)]
    if done.empty:
        import pandas as pd

        return pd.DataFrame()
    unit = ["|".join(map(str, key)) for key in done[UNIT].itertuples(index=False)]
    wide = done.assign(unit=unit).pivot_table(index="unit", columns="variant", values="value", aggfunc="mean",
                                              sort=False)
    return wide[list(dict.fromkeys(done["variant"]))]
