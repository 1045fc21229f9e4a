"""Tables written out: Markdown, CSV (one line per row × column × metric, paper and delta lines) and LaTeX
(booktabs). Each cell shows mean ± std over seeds and the caption gives n; an average over a row that lacks a
finished value is flagged with *, and a cell without one shows its state."""
from __future__ import annotations

import csv
import io
import re

from dadf.grid import store
from dadf.grid.table import (
    Entry,
    PaperRow,
    Table,
    delta,
    mean_std,
    paper_value,
    row_average,
    row_average_std,
    seed_counts,
)

MISSING = "–"


def _cell_text(table: Table, e: Entry) -> str:
    if e.complete:
        m, s = mean_std(e.values)
        text = f"{m:.3f} ± {s:.3f}" if len(e.values) > 1 else f"{m:.3f}"
        counts = seed_counts(table)
        return text + (f" (n={len(e.values)})" if len(counts) > 1 else "")
    if not e.states:
        return "missing"
    if e.values:  # some seeds done, others not
        m, _ = mean_std(e.values)
        return f"{m:.3f}* ({len(e.values)}/{e.n_cells})"
    for state in (store.FAILED, store.UNREADABLE, store.LOST, store.RUNNING, store.REQUEUED, store.PENDING, "missing"):
        if state in e.states:
            return state
    return "no result"  # done, but metrics.json lacks this metric (or is unreadable)


def _avg_text(table: Table, row: str, metric: str) -> str:
    avg, complete = row_average(table, row, metric)
    if avg is None:
        return MISSING
    if not complete:
        return f"{avg:.3f}*"
    std = row_average_std(table, row, metric)
    return f"{avg:.3f} ± {std:.3f}" if std is not None else f"{avg:.3f}"


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
    return [label, *values], (["↳ Δ dadf − paper", *deltas] if first.of is not None else None)


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


# ---------------------------------------------------------------------------------------------------- Markdown

def to_markdown(table: Table) -> str:
    head = [table.row_header, *_headers(table)]
    lines = [f"### {table.title}", ""] if table.title else []
    lines += [caption(table), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in _body(table)]
    notes = footnotes(table)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- CSV

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
                mean, std = mean_std(e.values) if e.values else (None, None)
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


# ---------------------------------------------------------------------------------------------------- LaTeX

def _tex_escape(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("→", r"$\to$"), ("↳", r"$\hookrightarrow$"), ("Δ", r"$\Delta$"),
                 ("−", "--"), ("–", "--")]:
        s = s.replace(a, b)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", s)  # a negative Δ, not a hyphen


def to_latex(table: Table) -> str:
    head = [table.row_header, *_headers(table)]
    lines = [f"% {table.title}: {caption(table)}"] if table.title else []
    lines += [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
              " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(x) for x in line) + r" \\" for line in _body(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
