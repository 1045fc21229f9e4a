"""Turn a grid folder into its results table (rows = methods, columns = classes / datasets / OOD sets, then the
average), as Markdown, CSV and LaTeX. Reads only files, so it works while the grid runs and after any crash.

Missing and failed cells stay visible: the cell shows its state, and a row average that lacks a column is flagged.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dadf.grid import store


@dataclass
class CellRecord:
    id: str
    cell: dict
    state: str
    reason: str | None
    result: dict | None


def load_records(grid_dir: Path) -> list[CellRecord]:
    """The grid's cells in table order: those of its latest expansion (grid.json), else every cell folder."""
    grid_dir = Path(grid_dir)
    manifest = store.read_json(grid_dir / "grid.json")
    ids = manifest["cells"] if manifest else sorted(p.name for p in grid_dir.iterdir() if (p / "cell.yaml").exists())
    records = []
    for cid in ids:
        d = grid_dir / cid
        if not (d / "cell.yaml").exists():
            continue
        status = store.read_status(d)
        result = store.read_json(d / "metrics.json") if status.get("state") == store.DONE else None
        cell = OmegaConf.to_container(OmegaConf.load(d / "cell.yaml").cell, resolve=True)
        records.append(CellRecord(cid, cell, status.get("state", store.PENDING), status.get("reason"), result))
    return records


def column_key(cell: dict) -> str:
    if cell.get("secondary"):
        return cell["secondary"]
    if cell.get("target_class") is not None:
        return f"c{cell['target_class']}"
    return cell["dataset"]


def row_key(cell: dict) -> str:
    extra = [f"{k.split('.')[-1]}={v}" for k, v in (cell.get("axes") or {}).items()
             if k not in ("dataset", "protocol.secondary")]
    return " ".join([cell["method"], *extra])


@dataclass
class Entry:
    values: list[float] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.values) and set(self.states) == {store.DONE}


@dataclass
class Table:
    title: str
    metrics: list[str]
    rows: list[str]
    columns: list[str]
    labels: dict[str, str]
    entries: dict[tuple[str, str, str], Entry]

    def entry(self, row: str, col: str, metric: str) -> Entry:
        return self.entries.setdefault((row, col, metric), Entry())


def build_table(records: list[CellRecord], metrics: list[str], title: str = "") -> Table:
    rows, columns, labels = [], [], {}
    table = Table(title, metrics, rows, columns, labels, {})
    for rec in records:
        r, c = row_key(rec.cell), column_key(rec.cell)
        rows.append(r) if r not in rows else None
        columns.append(c) if c not in columns else None
        if rec.result and rec.result.get("target_class_name") is not None:
            labels[c] = str(rec.result["target_class_name"])
        for m in metrics:
            e = table.entry(r, c, m)
            e.states[rec.state] = e.states.get(rec.state, 0) + 1
            if rec.state == store.DONE and rec.result is not None:
                v = rec.result["metrics"].get(m)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    e.values.append(float(v))
            elif rec.state == store.FAILED and rec.reason:
                e.reasons.append(f"{rec.id}: {rec.reason}")
    return table


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell_text(e: Entry) -> str:
    if e.complete:
        m, s = _mean_std(e.values)
        return f"{m:.3f} ± {s:.3f} (n={len(e.values)})" if len(e.values) > 1 else f"{m:.3f}"
    if not e.states:
        return "missing"
    if e.values:  # some seeds done, others not
        m, _ = _mean_std(e.values)
        return f"{m:.3f}* ({len(e.values)}/{sum(e.states.values())})"
    for state in (store.FAILED, store.RUNNING, store.PENDING):
        if state in e.states:
            return state
    return "missing"


def row_average(table: Table, row: str, metric: str) -> tuple[float | None, bool]:
    """(mean of the per-column means, complete?) -- incomplete when any column lacks a finished value."""
    means, complete = [], True
    for c in table.columns:
        e = table.entries.get((row, c, metric))
        if e is None or not e.values:
            complete = False
            continue
        complete &= e.complete
        means.append(_mean_std(e.values)[0])
    return (float(np.mean(means)) if means else None), complete


def _avg_text(table: Table, row: str, metric: str) -> str:
    avg, complete = row_average(table, row, metric)
    if avg is None:
        return "–"
    return f"{avg:.3f}" if complete else f"{avg:.3f}*"


def _headers(table: Table) -> list[str]:
    cols = [table.labels.get(c, c) for c in table.columns] + ["avg"]
    if len(table.metrics) == 1:
        return cols
    return [f"{c} {m}" for c in cols for m in table.metrics]


def _body(table: Table) -> list[list[str]]:
    out = []
    for r in table.rows:
        line = []
        for c in table.columns + ["avg"]:
            for m in table.metrics:
                line.append(_avg_text(table, r, m) if c == "avg" else _cell_text(table.entry(r, c, m)))
        out.append([r, *line])
    return out


def footnotes(table: Table) -> list[str]:
    notes = []
    if any("*" in x for line in _body(table) for x in line):
        notes.append("\\* incomplete: an average or seed mean over fewer cells than the grid has (missing, running or failed cells).")
    failed = sorted({r for e in table.entries.values() for r in e.reasons})
    notes += [f"failed: {r}" for r in failed]
    return notes


def to_markdown(table: Table) -> str:
    head = ["method", *_headers(table)]
    lines = [f"### {table.title}", ""] if table.title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in _body(table)]
    notes = footnotes(table)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """One line per (method, column, metric): mean, std, seeds done, cells expected, and the states."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "column", "label", "metric", "mean", "std", "n_done", "n_cells", "states"])
    for r in table.rows:
        for c in table.columns:
            for m in table.metrics:
                e = table.entry(r, c, m)
                mean, std = _mean_std(e.values) if e.values else ("", "")
                states = ";".join(f"{k}={v}" for k, v in sorted(e.states.items()))
                w.writerow([r, c, table.labels.get(c, c), m, mean, std, len(e.values), sum(e.states.values()), states])
        for m in table.metrics:
            avg, complete = row_average(table, r, m)
            w.writerow([r, "avg", "avg", m, "" if avg is None else avg, "", "", "", "complete" if complete else "incomplete"])
    return buf.getvalue()


def _tex_escape(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$")]:
        s = s.replace(a, b)
    return s


def to_latex(table: Table) -> str:
    head = ["method", *_headers(table)]
    lines = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(x) for x in line) + r" \\" for line in _body(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def aggregate(grid_dir: Path, metrics: list[str] | None = None) -> tuple[Table, str]:
    """Build the grid's table, write table.{md,csv,tex} into the grid folder, return (table, markdown)."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"{grid_dir} does not exist: run python jobs/launch_grid.py grid=<name> first")
    manifest = store.read_json(grid_dir / "grid.json") or {}
    metrics = metrics or manifest.get("metrics") or ["auroc"]
    records = load_records(grid_dir)
    if not records:
        raise FileNotFoundError(f"{grid_dir} holds no cells (no */cell.yaml)")
    title = f"{manifest.get('grid', grid_dir.name)}: {', '.join(m.upper() for m in metrics)}"
    table = build_table(records, metrics, title)
    md = to_markdown(table)
    store.atomic_write_text(grid_dir / "table.md", md)
    store.atomic_write_text(grid_dir / "table.csv", to_csv(table))
    store.atomic_write_text(grid_dir / "table.tex", to_latex(table))
    return table, md
