"""Table layouts: how a grid's cells become the papers' tables. Each protocol names its layout
(``dadf.data.protocols.register(..., layout=...)``); a layout is registered here under that name.

    per_class   rows = methods (and ablation axes), columns = classes, then the average (AMA/PIAD Table 2)
    ood         rows = methods and ablations, columns = trained-on → OOD set (AMA Table 1)
    by_p        one table per method: rows = p%, columns = classes and the average (AMA supp. Table 7)
    tabular     rows = datasets, columns = method × P / R / F1 / AUROC (simplex paper Table 2, transposed)
    attribute   rows = methods, columns = the attribute that marks the anomalies (PIAD Table 3 centre, CelebA)

A layout says which row and column a cell goes to (`row`, `column`), what its columns are (`class_columns`), which
tables a grid gets (`tables`), and how its rows are headed; `table` fills one table and sets the published rows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dadf.grid import published as pub
from dadf.grid import store
from dadf.grid.table import EXPLAINED, CellRecord, PaperRow, Table, why

TABULAR_METRICS = ["precision", "recall", "f1", "auroc"]
METRIC_SHORT = {"precision": "P", "recall": "R", "f1": "F1", "auroc": "AUROC", "auprc": "AUPRC"}


def row_axes(cell: dict) -> dict:
    """The grid axes that tell rows apart (dataset, OOD set and p are columns or rows of their own)."""
    return {k: v for k, v in (cell.get("axes") or {}).items()
            if k not in ("dataset", "protocol.secondary", "protocol.p", "protocol.attribute")}


def row_key(cell: dict) -> str:
    extra = [f"{k.split('.')[-1]}={v}" for k, v in row_axes(cell).items()]
    return " ".join([cell["method"], *extra])


@dataclass(frozen=True)
class Layout:
    """The plain layout (per_class): rows = methods and ablation axes, columns = classes, then the average."""
    name: str
    row_header: str = "method"
    # Columns are one dataset's classes: labelled by class name, averaged, and published numbers matched per dataset
    # (else the columns are datasets).
    class_columns: bool = True
    p_rows: bool = False  # rows are p% values
    unrun_variants: bool = False  # also list the paper's ablation rows that the grid has not run

    def row(self, rec: CellRecord) -> str:
        return row_key(rec.cell)

    def column(self, rec: CellRecord) -> str:
        cell = rec.cell
        if cell.get("secondary"):
            return cell["secondary"]
        if cell.get("target_class") is not None:
            return f"c{cell['target_class']}"
        return cell["dataset"]

    def tables(self, records: list[CellRecord], metrics: list[str], grid: str, published) -> list[Table]:
        """The tables of the grid's records (of one dataset when the columns are classes)."""
        return [self.table(records, metrics, f"{grid}: {_upper(metrics)}", published)]

    def table(self, records: list[CellRecord], metrics: list[str], title: str, published=None) -> Table:
        """One table of `records`, with the published numbers (published.yaml unless given) that match its rows."""
        table = Table(title, list(metrics), [], [], {}, {}, layout=self.name, row_header=self.row_header,
                      show_avg=self.class_columns, p_rows=self.p_rows)
        for rec in records:
            r, c = self.row(rec), self.column(rec)
            if r not in table.rows:
                table.rows.append(r)
                table.row_info[r] = {"method": rec.cell["method"], "dataset": rec.cell["dataset"],
                                     "protocol": rec.cell["protocol"], "p": rec.p if self.p_rows else None,
                                     "axes": row_axes(rec.cell)}
            if c not in table.columns:
                table.columns.append(c)
            table.num_classes = table.num_classes or rec.num_classes
            if rec.result and rec.result.get("target_class_name") is not None:
                table.labels[c] = str(rec.result["target_class_name"])
            elif c not in table.labels and self.class_columns and rec.cell.get("target_class") is not None:
                table.labels[c] = str(rec.cell["target_class"])  # until a finished cell names the class
            for m in table.metrics:
                e = table.entry(r, c, m)
                e.states[rec.state] = e.states.get(rec.state, 0) + 1
                if rec.state == store.DONE and rec.result is not None:
                    v = (rec.result.get("metrics") or {}).get(m)
                    if v is not None and not (isinstance(v, float) and math.isnan(v)):
                        e.values.append(float(v))
                        e.seeds.append(int(rec.cell.get("seed", rec.result.get("seed", 0))))
                elif rec.state in EXPLAINED and rec.reason:
                    e.reasons.append(f"{rec.state}: {rec.id}: {why(rec)}")
        if not self.class_columns or not all(re.fullmatch(r"c\d+", c) for c in table.columns):
            table.num_classes = None  # only class columns have a known full set
        self._attach_papers(table, pub.load() if published is None else published)
        return table

    def _attach_papers(self, table: Table, entries) -> None:
        table.pool = tuple(entries)
        seen_variants = set()
        for r in table.rows:
            info = table.row_info[r]
            for m in table.metrics:
                found = pub.matching(entries, method=info["method"], protocol=info["protocol"], metric=m,
                                     dataset=info["dataset"] if self.class_columns else None, p=info["p"],
                                     axes=info["axes"])
                for e in found:
                    if any(pr.of == r and pr.entry is e for pr in table.papers):
                        continue
                    if any(e.values.get(c) is not None for c in table.columns + ["avg"]):
                        table.papers.append(PaperRow(r, e))
                        seen_variants.add(e)
        if not self.unrun_variants:
            return
        runs = dict.fromkeys((info["method"], info["protocol"]) for info in table.row_info.values())
        for m in table.metrics:
            for method, protocol in runs:
                for e in pub.matching(entries, method=method, protocol=protocol, metric=m, variants=True):
                    if e.variant and e not in seen_variants and any(c in e.values for c in table.columns):
                        table.papers.append(PaperRow(None, e))
                        seen_variants.add(e)


def _upper(metrics: list[str]) -> str:
    return ", ".join(m.upper() for m in metrics)


class _Ood(Layout):
    """Rows = methods and ablations, columns = trained-on → OOD set, with the paper's unrun ablations."""

    def column(self, rec: CellRecord) -> str:
        cell = rec.cell
        return f"{cell['dataset']}→{cell['secondary']}" if cell.get("secondary") else super().column(rec)


class _ByP(Layout):
    """One table per method (and ablation): rows = p%, in increasing p."""

    def row(self, rec: CellRecord) -> str:
        return "p=?" if rec.p is None else f"p={rec.p:g}%"

    def tables(self, records: list[CellRecord], metrics: list[str], grid: str, published) -> list[Table]:
        groups: dict[str, list[CellRecord]] = {}
        for rec in records:
            groups.setdefault(row_key(rec.cell), []).append(rec)
        out = []
        for name, recs in groups.items():
            recs = sorted(recs, key=lambda r: (r.p is None, r.p or 0.0))
            out.append(self.table(recs, metrics, f"{grid}: {name}, {_upper(metrics)} by p% "
                                                 f"({recs[0].cell['protocol']})", published))
        return out


class _Tabular(Layout):
    """Rows = datasets, columns = methods × P / R / F1 / AUROC: readable at 10+ datasets (the simplex paper's Table 2
    turned so that datasets grow downwards). Published numbers go under their dataset's row, per method column."""

    def row(self, rec: CellRecord) -> str:
        return rec.cell.get("secondary") or rec.cell["dataset"]

    def column(self, rec: CellRecord) -> str:
        return row_key(rec.cell)

    def tables(self, records: list[CellRecord], metrics: list[str], grid: str, published) -> list[Table]:
        metrics = TABULAR_METRICS + [m for m in metrics if m not in TABULAR_METRICS]
        return [self.table(records, metrics, f"{grid}: precision / recall / F1 at top-k%, AUROC", published)]

    def table(self, records: list[CellRecord], metrics: list[str], title: str, published=None) -> Table:
        table = super().table(records, metrics, title, published=())
        table.metric_labels = dict(METRIC_SHORT)
        methods = {}  # column -> the (method, protocol, axes) its published numbers are looked up by
        for rec in records:
            methods.setdefault(self.column(rec), (rec.cell["method"], rec.cell["protocol"], row_axes(rec.cell)))
        entries = pub.load() if published is None else published
        table.pool = tuple(entries)
        for r in table.rows:
            lines: dict[tuple[str, str], tuple[dict, pub.Published]] = {}  # (source, metric) -> (column -> value)
            for m in table.metrics:
                for col, (method, protocol, axes) in methods.items():
                    for e in pub.matching(entries, method=method, protocol=protocol, metric=m, axes=axes):
                        if r in e.values:
                            lines.setdefault((e.source, m), ({}, e))[0][col] = e.values[r]
            for (source, m), (values, e) in lines.items():
                # one published line per source under the dataset's row, its values keyed by method column
                table.papers.append(PaperRow(r, pub.Published(source, "", e.protocol, m, values, r, runs=e.runs)))
        return table


class _Attribute(Layout):
    """Rows = methods, columns = the attribute whose images are the anomalies (PIAD Table 3 centre, CelebA)."""

    def column(self, rec: CellRecord) -> str:
        return str(rec.protocol.get("attribute") or rec.cell["dataset"])


# ---------------------------------------------------------------------------------------------------- registry

LAYOUTS: dict[str, Layout] = {}  # name -> Layout


def register(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"table layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def get(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown table layout {name!r}; registered layouts: {list(LAYOUTS)}")
    return LAYOUTS[name]


PER_CLASS = register(Layout("per_class"))  # also the layout of a grid that mixes protocols of different layouts
register(_Ood("ood", class_columns=False, unrun_variants=True))
register(_ByP("by_p", row_header="p (% anomalies)", p_rows=True))
register(_Tabular("tabular", row_header="dataset", class_columns=False))
register(_Attribute("attribute", class_columns=False))
