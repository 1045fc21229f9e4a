"""Turn a grid folder into its results tables, in the layout of the papers chosen by the grid's protocol:

    loo / ovr / gpnd     rows = methods (and ablation axes), columns = classes, then the average (AMA/PIAD Table 2)
    ood                  rows = methods and ablations, columns = trained-on → OOD set (AMA Table 1)
    corruption / semisup one table per method: rows = p%, columns = classes and the average (AMA supp. Table 7)
    tabular              rows = methods, columns = dataset × precision / recall / F1 (simplex paper Table 2)

Every cell is mean ± std over seeds (sample std); the caption gives n. Published numbers (published.yaml) follow
the dadf row they belong to, with a Δ row (dadf − paper). Written as Markdown, CSV and LaTeX (booktabs).
Reads only files, so it works while the grid runs and after any crash: missing and failed cells stay visible,
and an average over a row that lacks a finished value is flagged with *.
"""
from __future__ import annotations

import csv
import errno
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dadf.grid import published as pub
from dadf.grid import store

PER_CLASS, OOD, BY_P, TABULAR = "per_class", "ood", "by_p", "tabular"
_LAYOUTS = {"loo": PER_CLASS, "ovr": PER_CLASS, "gpnd": PER_CLASS, "ood": OOD, "corruption": BY_P,
            "semisup": BY_P, "tabular": TABULAR}
TABULAR_METRICS = ["precision", "recall", "f1"]
MISSING = "–"


@dataclass
class CellRecord:
    id: str
    cell: dict
    state: str
    reason: str | None
    result: dict | None
    dir: Path | None = None
    protocol: dict = field(default_factory=dict)
    num_classes: int | None = None

    @property
    def p(self) -> float | None:
        v = self.protocol.get("p")
        return None if v is None else float(v)


def load_records(grid_dir: Path) -> list[CellRecord]:
    """The grid's cells in table order: those of its latest expansion (grid.json), else every cell folder.

    A cell listed in grid.json whose folder is absent (not launched yet) is kept as "missing", never dropped; one
    with a damaged file as "unreadable", one whose process is gone as "lost".
    """
    grid_dir = Path(grid_dir)
    records = []
    for cid in store.cell_ids(grid_dir):
        d = grid_dir / cid
        if not (d / "cell.yaml").exists():
            records.append(_from_id(cid, d, "missing", "no cell folder yet"))
            continue
        try:
            full = OmegaConf.to_container(store.read_cell_config(d), resolve=True)
        except store.Unreadable as e:
            records.append(_from_id(cid, d, store.UNREADABLE, str(e)))
            continue
        status = store.read_status(d)  # damaged status.json or metrics.json: state unreadable
        state, reason = status.get("state", store.PENDING), status.get("reason")
        result = store.read_json(d / "metrics.json") if state == store.DONE else None
        lost = store.liveness(d, status)
        if lost:
            state, reason = store.LOST, lost
        records.append(CellRecord(cid, full["cell"], state, reason, result, d, full.get("protocol") or {},
                                  (full.get("dataset") or {}).get("num_classes")))
    return records


def _from_id(cid: str, d: Path, state: str, reason: str) -> CellRecord:
    """A cell without a readable config: parse its id (method-dataset-protocol-...-s<seed>-hash) as far as it goes."""
    parts = cid.split("-")
    cell = {"id": cid, "method": parts[0], "dataset": parts[1] if len(parts) > 1 else "?",
            "protocol": parts[2] if len(parts) > 2 else "?", "target_class": None, "secondary": None, "axes": {}}
    for part in parts[3:-2]:
        if re.fullmatch(r"c\d+", part):
            cell["target_class"] = int(part[1:])
    return CellRecord(cid, cell, state, reason, None, d, {"name": cell["protocol"]})


EXPLAINED = (store.FAILED, store.LOST, store.UNREADABLE)  # states whose reason the table and report print


def why(rec: CellRecord) -> str:
    """The reason of an EXPLAINED cell, without the state it may start with (an unreadable cell's does)."""
    return (rec.reason or "").removeprefix(f"{rec.state}: ")


def layout_of(records: list[CellRecord]) -> str:
    """The layout of the grid's protocol; a grid that mixes protocols gets the plain per-class layout."""
    layouts = {_LAYOUTS.get(r.cell.get("protocol"), PER_CLASS) for r in records}
    return layouts.pop() if len(layouts) == 1 else PER_CLASS


# ---------------------------------------------------------------------------------------------------- keys

def column_key(cell: dict, layout: str = PER_CLASS) -> str:
    if layout == OOD and cell.get("secondary"):
        return f"{cell['dataset']}→{cell['secondary']}"
    if cell.get("secondary"):
        return cell["secondary"]
    if layout != TABULAR and cell.get("target_class") is not None:
        return f"c{cell['target_class']}"
    return cell["dataset"]


def row_axes(cell: dict) -> dict:
    """The grid axes that tell rows apart (dataset, OOD set and p are columns or rows of their own)."""
    return {k: v for k, v in (cell.get("axes") or {}).items()
            if k not in ("dataset", "protocol.secondary", "protocol.p")}


def row_key(cell: dict) -> str:
    extra = [f"{k.split('.')[-1]}={v}" for k, v in row_axes(cell).items()]
    return " ".join([cell["method"], *extra])


def _p_label(p: float | None) -> str:
    return "p=?" if p is None else f"p={p:g}%"


# ---------------------------------------------------------------------------------------------------- tables

@dataclass
class Entry:
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.values) and set(self.states) == {store.DONE} and len(self.values) == self.n_cells

    @property
    def n_cells(self) -> int:
        return sum(self.states.values())


@dataclass
class PaperRow:
    """Published values beside a dadf row (`of`), or a paper-only row (an ablation dadf has not run)."""
    of: str | None
    entry: pub.Published


@dataclass
class Table:
    title: str
    metrics: list[str]
    rows: list[str]
    columns: list[str]
    labels: dict[str, str]
    entries: dict[tuple[str, str, str], Entry]
    layout: str = PER_CLASS
    show_avg: bool = True
    num_classes: int | None = None
    papers: list[PaperRow] = field(default_factory=list)
    row_info: dict[str, dict] = field(default_factory=dict)  # row -> {method, dataset, protocol, p, axes}
    pool: tuple = ()  # the published entries this table was compared against

    def published_by_p(self, metric: str) -> list[pub.Published]:
        """The paper's main entries at every p it reports for this table's method (also p values dadf has not run)."""
        if self.layout != BY_P or not self.rows:
            return []
        info = self.row_info[self.rows[0]]
        return [e for e in self.pool if e.p is not None and e.variant is None and e.metric == metric
                and (e.method, e.protocol) == (info["method"], info["protocol"])
                and e.dataset in (None, info["dataset"]) and not info["axes"]]

    def entry(self, row: str, col: str, metric: str) -> Entry:
        return self.entries.setdefault((row, col, metric), Entry())

    @property
    def avg_comparable(self) -> bool:
        """The row average covers every class of the dataset, so it compares with a paper's average."""
        return self.num_classes is None or len(self.columns) == self.num_classes


def build_table(records: list[CellRecord], metrics: list[str], title: str = "", layout: str = PER_CLASS,
                row_fn=None, published=None) -> Table:
    row_fn = row_fn or (lambda rec: row_key(rec.cell))
    table = Table(title, list(metrics), [], [], {}, {}, layout, show_avg=layout in (PER_CLASS, BY_P))
    for rec in records:
        r, c = row_fn(rec), column_key(rec.cell, layout)
        if r not in table.rows:
            table.rows.append(r)
            table.row_info[r] = {"method": rec.cell["method"], "dataset": rec.cell["dataset"],
                                 "protocol": rec.cell["protocol"], "p": rec.p if layout == BY_P else None,
                                 "axes": row_axes(rec.cell)}
        if c not in table.columns:
            table.columns.append(c)
        table.num_classes = table.num_classes or rec.num_classes
        if rec.result and rec.result.get("target_class_name") is not None:
            table.labels[c] = str(rec.result["target_class_name"])
        elif c not in table.labels and layout in (PER_CLASS, BY_P) and rec.cell.get("target_class") is not None:
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
    if layout not in (PER_CLASS, BY_P) or not all(re.fullmatch(r"c\d+", c) for c in table.columns):
        table.num_classes = None  # only class columns have a known full set
    _attach_papers(table, pub.load() if published is None else published)
    return table


def _attach_papers(table: Table, entries) -> None:
    table.pool = tuple(entries)
    seen_variants = set()
    for r in table.rows:
        info = table.row_info[r]
        for m in table.metrics:
            found = pub.matching(entries, method=info["method"], protocol=info["protocol"], metric=m,
                                 dataset=None if table.layout in (OOD, TABULAR) else info["dataset"], p=info["p"],
                                 axes=info["axes"])
            for e in found:
                if any(pr.of == r and pr.entry is e for pr in table.papers):
                    continue
                if any(e.values.get(c) is not None for c in table.columns + ["avg"]):
                    table.papers.append(PaperRow(r, e))
                    seen_variants.add(e)
    # the paper's ablation rows that dadf has not run, for the methods and columns of this table
    if table.layout == OOD:
        methods = {table.row_info[r]["method"] for r in table.rows}
        for m in table.metrics:
            for method in methods:
                for e in pub.matching(entries, method=method, protocol="ood", metric=m, variants=True):
                    if e.variant and e not in seen_variants and any(c in e.values for c in table.columns):
                        table.papers.append(PaperRow(None, e))
                        seen_variants.add(e)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def seed_counts(table: Table) -> list[int]:
    return sorted({len(e.values) for e in table.entries.values() if e.complete})


def _cell_text(table: Table, e: Entry) -> str:
    if e.complete:
        m, s = _mean_std(e.values)
        text = f"{m:.3f} ± {s:.3f}" if len(e.values) > 1 else f"{m:.3f}"
        counts = seed_counts(table)
        return text + (f" (n={len(e.values)})" if len(counts) > 1 else "")
    if not e.states:
        return "missing"
    if e.values:  # some seeds done, others not
        m, _ = _mean_std(e.values)
        return f"{m:.3f}* ({len(e.values)}/{e.n_cells})"
    for state in (store.FAILED, store.UNREADABLE, store.LOST, store.RUNNING, store.REQUEUED, store.PENDING, "missing"):
        if state in e.states:
            return state
    return "no result"  # done, but metrics.json lacks this metric (or is unreadable)


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


def row_average_std(table: Table, row: str, metric: str) -> float | None:
    """Std over seeds of the per-seed row average, when every column has the same seeds (else None)."""
    per_col = []
    for c in table.columns:
        e = table.entries.get((row, c, metric))
        if e is None or not e.complete:
            return None
        per_col.append(dict(zip(e.seeds, e.values)))
    seeds = set(per_col[0]) if per_col else set()
    if len(seeds) < 2 or any(set(d) != seeds for d in per_col):
        return None
    avgs = [float(np.mean([d[s] for d in per_col])) for s in sorted(seeds)]
    return float(np.std(avgs, ddof=1))


def _avg_text(table: Table, row: str, metric: str) -> str:
    avg, complete = row_average(table, row, metric)
    if avg is None:
        return MISSING
    if not complete:
        return f"{avg:.3f}*"
    std = row_average_std(table, row, metric)
    return f"{avg:.3f} ± {std:.3f}" if std is not None else f"{avg:.3f}"


def _dadf_mean(table: Table, row: str, col: str, metric: str) -> tuple[float | None, bool]:
    if col == "avg":
        avg, complete = row_average(table, row, metric)
        return avg, complete
    e = table.entries.get((row, col, metric))
    if e is None or not e.values:
        return None, False
    return _mean_std(e.values)[0], e.complete


def paper_value(pr: PaperRow, col: str) -> float | None:
    return pr.entry.values.get(col)


def delta(table: Table, pr: PaperRow, col: str, metric: str) -> tuple[float | None, str]:
    """(dadf mean − paper, flag) with flag '' | '*' (dadf value incomplete) | 'n/c' (averages not comparable)."""
    paper = paper_value(pr, col)
    if paper is None or pr.of is None or pr.entry.metric != metric:
        return None, ""
    if col == "avg" and not table.avg_comparable:
        return None, "n/c"
    mine, complete = _dadf_mean(table, pr.of, col, metric)
    if mine is None:
        return None, ""
    return mine - paper, "" if complete else "*"


def _columns_out(table: Table) -> list[str]:
    return table.columns + (["avg"] if table.show_avg else [])


def _headers(table: Table) -> list[str]:
    cols = [table.labels.get(c, c) for c in _columns_out(table)]
    if len(table.metrics) == 1:
        return cols
    return [f"{c} {m}" for c in cols for m in table.metrics]


def _paper_groups(table: Table, of: str | None) -> list[list[PaperRow]]:
    """A row's published entries, one group per (source, variant): the metrics of one published table share a line."""
    groups: list[list[PaperRow]] = []
    for pr in (p for p in table.papers if p.of == of):
        key = (pr.entry.source, pr.entry.label)
        home = next((g for g in groups if (g[0].entry.source, g[0].entry.label) == key
                     and all(q.entry.metric != pr.entry.metric for q in g)), None)
        if home is None:
            groups.append([pr])
        else:
            home.append(pr)
    return groups


def _paper_line(table: Table, group: list[PaperRow]) -> tuple[list[str], list[str] | None]:
    first = group[0]
    label = (f"↳ paper ({first.entry.source})" if first.of is not None
             else f"paper: {first.entry.label} ({first.entry.source})")
    by_metric = {pr.entry.metric: pr for pr in group}
    values, deltas = [], []
    for c in _columns_out(table):
        for m in table.metrics:
            pr = by_metric.get(m)
            v = paper_value(pr, c) if pr is not None else None
            values.append(MISSING if v is None else f"{v:.3f}")
            d, flag = delta(table, pr, c, m) if pr is not None else (None, "")
            deltas.append(flag if d is None and flag else (MISSING if d is None else f"{d:+.3f}{flag}"))
    return [label, *values], ([f"↳ Δ dadf − paper", *deltas] if first.of is not None else None)


def _body(table: Table) -> list[list[str]]:
    out = []
    for r in table.rows:
        line = []
        for c in _columns_out(table):
            for m in table.metrics:
                line.append(_avg_text(table, r, m) if c == "avg" else _cell_text(table, table.entry(r, c, m)))
        out.append([r, *line])
        for group in _paper_groups(table, r):
            paper, d = _paper_line(table, group)
            out += [paper, d]
    out += [_paper_line(table, group)[0] for group in _paper_groups(table, None)]
    return out


def caption(table: Table) -> str:
    counts = seed_counts(table)
    if not counts:
        seeds = "no finished cells yet"
    elif counts == [1]:
        seeds = "n = 1 seed per cell (no std)"
    else:
        n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        seeds = f"mean ± std over n = {n} seeds per cell (sample std)"
    metric = ", ".join(m.upper() if m in ("auroc", "auprc") else m for m in table.metrics)
    avg = "; avg = mean of the column means" if table.show_avg else ""
    return f"{metric}; {seeds}{avg}."


def footnotes(table: Table) -> list[str]:
    notes = []
    body = _body(table)
    if any("*" in x for line in body for x in line[1:]):
        notes.append("\\* incomplete: an average or seed mean over fewer cells than the grid has "
                     "(missing, running or failed cells).")
    if table.papers:
        notes.append("↳ rows: the published number (source table named) and Δ = dadf mean − published value.")
    if any("n/c" in x for line in body for x in line[1:]):
        notes.append(f"n/c: the grid has {len(table.columns)} of the dataset's {table.num_classes} classes, so "
                     f"its average does not compare with the paper's.")
    notes += sorted({r for e in table.entries.values() for r in e.reasons})  # "<state>: <cell>: <reason>"
    return notes


def _first_header(table: Table) -> str:
    return "p (% anomalies)" if table.layout == BY_P else "method"


def to_markdown(table: Table) -> str:
    head = [_first_header(table), *_headers(table)]
    lines = [f"### {table.title}", ""] if table.title else []
    lines += [caption(table), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in _body(table)]
    notes = footnotes(table)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSV_HEADER = ["table", "kind", "method", "column", "label", "metric", "mean", "std", "n_done", "n_cells", "states",
              "source"]


def _num(x) -> str:
    return "" if x is None or x == "" else f"{x:.6g}"


def csv_rows(table: Table) -> list[list]:
    """kind = dadf (one line per row, column, metric; 'avg' lines last), paper and delta (per published entry)."""
    out = []
    for r in table.rows:
        for c in table.columns:
            for m in table.metrics:
                e = table.entry(r, c, m)
                mean, std = _mean_std(e.values) if e.values else (None, None)
                states = ";".join(f"{k}={v}" for k, v in sorted(e.states.items()))
                out.append([table.title, "dadf", r, c, table.labels.get(c, c), m, _num(mean),
                            _num(std) if e.values and len(e.values) > 1 else "", len(e.values), e.n_cells, states, ""])
        if table.show_avg:
            for m in table.metrics:
                avg, complete = row_average(table, r, m)
                std = row_average_std(table, r, m) if complete else None
                out.append([table.title, "dadf", r, "avg", "avg", m, _num(avg), _num(std), "", "",
                            "complete" if complete else "incomplete", ""])
        for pr in (p for p in table.papers if p.of == r):
            for c in _columns_out(table):
                v = paper_value(pr, c)
                if v is None:
                    continue
                d, flag = delta(table, pr, c, pr.entry.metric)
                label = table.labels.get(c, c)
                out.append([table.title, "paper", r, c, label, pr.entry.metric, _num(v), "", "", "", "",
                            pr.entry.source])
                out.append([table.title, "delta", r, c, label, pr.entry.metric, _num(d), "", "", "",
                            {"*": "incomplete", "n/c": "not comparable"}.get(flag, ""), pr.entry.source])
    for pr in (p for p in table.papers if p.of is None):
        for c in table.columns:
            if paper_value(pr, c) is not None:
                out.append([table.title, "paper", pr.entry.label, c, table.labels.get(c, c), pr.entry.metric,
                            _num(paper_value(pr, c)), "", "", "", "", pr.entry.source])
    return out


def to_csv(tables: Table | list[Table]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for t in [tables] if isinstance(tables, Table) else tables:
        w.writerows(csv_rows(t))
    return buf.getvalue()


def _tex_escape(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("→", r"$\to$"), ("↳", r"$\hookrightarrow$"), ("Δ", r"$\Delta$"),
                 ("−", "--"), ("–", "--")]:
        s = s.replace(a, b)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", s)  # a negative Δ, not a hyphen


def to_latex(table: Table) -> str:
    head = [_first_header(table), *_headers(table)]
    lines = [f"% {table.title}: {caption(table)}"] if table.title else []
    lines += [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
              " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(x) for x in line) + r" \\" for line in _body(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- grid

def build_tables(records: list[CellRecord], metrics: list[str], grid: str, published=None) -> list[Table]:
    """The grid's tables in the layout its protocol asks for (class tables: one per dataset)."""
    layout = layout_of(records)
    datasets = list(dict.fromkeys(r.cell["dataset"] for r in records))
    by_class = any(r.cell.get("target_class") is not None for r in records)
    if layout in (PER_CLASS, BY_P) and by_class and len(datasets) > 1:  # class c0 of one dataset is not c0 of another
        return [t for ds in datasets
                for t in build_tables([r for r in records if r.cell["dataset"] == ds], metrics, f"{grid} [{ds}]",
                                      published)]
    upper = ", ".join(m.upper() for m in metrics)
    if layout == TABULAR:
        metrics = TABULAR_METRICS + [m for m in metrics if m not in TABULAR_METRICS]
        return [build_table(records, metrics, f"{grid}: precision / recall / F1 at top-k%", TABULAR,
                            published=published)]
    if layout == BY_P:
        tables = []
        groups: dict[str, list[CellRecord]] = {}
        for rec in records:
            groups.setdefault(row_key(rec.cell), []).append(rec)
        for name, recs in groups.items():
            recs = sorted(recs, key=lambda r: (r.p is None, r.p or 0.0))  # rows in increasing p
            tables.append(build_table(recs, metrics, f"{grid}: {name}, {upper} by p% "
                                                     f"({recs[0].cell['protocol']})", BY_P,
                                      row_fn=lambda rec: _p_label(rec.p), published=published))
        return tables
    return [build_table(records, metrics, f"{grid}: {upper}", layout, published=published)]


def aggregate(grid_dir: Path, metrics: list[str] | None = None, plots: bool = False,
              write: bool = True) -> tuple[Table, str]:
    """Build the grid's tables, return (the first table, the Markdown of all tables). write=True also writes
    table.{md,csv,tex} and report.md into the grid folder, and with plots=True the PNGs (per-cell ones only when out
    of date); a folder that refuses writes (read-only, no permission) gets one warning, the tables are still
    returned. write=False touches nothing (status.py)."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise FileNotFoundError(f"{grid_dir} does not exist: run python jobs/launch_grid.py grid=<name> first")
    manifest = store.read_manifest(grid_dir)
    metrics = list(metrics or manifest.get("metrics") or ["auroc"])
    records = load_records(grid_dir)
    if not records:
        raise FileNotFoundError(f"{grid_dir} holds no cells (no */cell.yaml)")
    grid = manifest.get("grid", grid_dir.name)
    tables = build_tables(records, metrics, grid)
    md = "\n".join(to_markdown(t) for t in tables)
    if write:
        try:
            _write(grid_dir, grid, records, tables, md, plots)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                raise
            # Reading results must work where they cannot be written (a read-only copy, someone else's folder, a
            # full disk).
            warnings.warn(f"{grid_dir} is not writable ({e.strerror}): the tables, report and plots there were not "
                          f"updated", stacklevel=2)
    return tables[0], md


def _write(grid_dir: Path, grid: str, records: list[CellRecord], tables: list[Table], md: str, plots: bool) -> None:
    from dadf.grid.report import write_report

    store.atomic_write_text(grid_dir / "table.md", md)
    store.atomic_write_text(grid_dir / "table.csv", to_csv(tables))
    store.atomic_write_text(grid_dir / "table.tex", "\n".join(to_latex(t) for t in tables))
    write_report(grid_dir, grid, records, tables, plots=plots)
