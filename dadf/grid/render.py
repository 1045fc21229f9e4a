"""Tables written out: Markdown, CSV (one line per row × column × metric with mean, std, the 95% Student-t interval,
n and the per-seed values; paper and delta lines) and LaTeX (booktabs). Each cell shows mean ± std over seeds and the
caption gives n; the Markdown of report.md adds the interval `[low, high]` (to_markdown(intervals=True)). An average
over a row that lacks a finished value is flagged with *, and a cell without one shows its state. Under a published
number, Δ = dadf − paper is replaced by where the paper lies against dadf's seeds when they say more (table.context)."""
from __future__ import annotations

import csv
import io
import re

from dadf.grid import stats, store
from dadf.grid.table import (
    Entry,
    PaperRow,
    Table,
    context,
    delta,
    mean_std,
    paper_value,
    row_average,
    row_average_std,
    row_seed_values,
    seed_counts,
)

MISSING = "–"


def _interval_text(values: list[float] | None) -> str:
    if not values or len(values) < 2:
        return ""
    iv = stats.interval(values)
    return f" [{iv.low:.3f}, {iv.high:.3f}]"


def _cell_text(e: Entry, counts: list[int], intervals: bool = False) -> str:
    """`counts`: the table's seed_counts; a cell names its n when they differ."""
    if e.complete:
        m, s = mean_std(e.values)
        text = f"{m:.3f} ± {s:.3f}" if len(e.values) > 1 else f"{m:.3f}"
        if intervals:
            text += _interval_text(e.values)
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


def _avg_text(table: Table, row: str, metric: str, intervals: bool = False) -> str:
    avg, complete = row_average(table, row, metric)
    if avg is None:
        return MISSING
    if not complete:
        return f"{avg:.3f}*"
    std = row_average_std(table, row, metric)
    text = f"{avg:.3f} ± {std:.3f}" if std is not None else f"{avg:.3f}"
    return text + (_interval_text(row_seed_values(table, row, metric)) if intervals else "")


def _columns_out(table: Table) -> list[str]:
    return table.columns + (["avg"] if table.show_avg else [])


def _headers(table: Table) -> list[str]:
    cols = [table.labels.get(c, c) for c in _columns_out(table)]
    if len(table.metrics) == 1:
        return cols
    return [f"{c} {table.metric_labels.get(m, m)}" for c in cols for m in table.metrics]


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
            deltas.append(_delta_text(table, pr, c, m))
    return [label, *values], (["↳ Δ dadf − paper", *deltas] if first.of is not None else None)


def _delta_text(table: Table, pr: PaperRow | None, col: str, metric: str) -> str:
    """Δ, or where the paper's value lies against dadf's seeds: the wording alone when it is within their spread
    or interval (the difference is not one), Δ and the wording when it is outside."""
    d, flag = delta(table, pr, col, metric) if pr is not None else (None, "")
    if d is None:
        return flag or MISSING
    where = context(table, pr, col, metric)
    if where is None:
        return f"{d:+.3f}{flag}"
    if where.startswith(("within", "inside")):
        return f"{where}{flag}"
    return f"{d:+.3f}{flag} (paper {where.split(' (')[0]})"  # outside: k/n is 0/n or n/n, said by above/below


def _body(table: Table, intervals: bool = False) -> list[list[str]]:
    out = []
    counts = seed_counts(table)
    for r in table.rows:
        line = []
        for c in _columns_out(table):
            for m in table.metrics:
                line.append(_avg_text(table, r, m, intervals) if c == "avg"
                            else _cell_text(table.entry(r, c, m), counts, intervals))
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
        seeds = "n = 1 seed per cell (the value; no std, no interval)"
    else:
        n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        seeds = (f"mean ± std over n = {n} seeds per cell (sample std); 95% Student-t interval of the mean "
                 f"in table.csv and report.md{'; n = 1: the value, no interval' if counts[0] == 1 else ''}")
    metric = ", ".join(m.upper() if m in ("auroc", "auprc") else m for m in table.metrics)
    avg = "; avg = mean of the column means" if table.show_avg else ""
    return f"{metric}; {seeds}{avg}."


def footnotes(table: Table, body: list[list[str]] | None = None) -> list[str]:
    """The notes under a table; `body`: its rendered lines when the caller has them."""
    notes = []
    body = _body(table) if body is None else body
    if any("*" in x for line in body for x in line[1:]):
        notes.append("\\* incomplete: an average or seed mean over fewer cells than the grid has "
                     "(missing, running or failed cells).")
    if table.papers:
        notes.append("↳ rows: the published number (source table named) and Δ = dadf mean − published value.")
        if any("seed spread" in x or "CI" in x for line in body for x in line[1:]):
            notes.append("A single-run published number (or one whose run count the paper does not give) is placed "
                         "against the spread of dadf's seeds, (k/n ≥): k of the n seeds at or above it; a mean over "
                         "several runs against the 95% interval of dadf's mean. Within/inside: no difference is "
                         "shown; above/below: where the paper's value lies.")
    if any("n/c" in x for line in body for x in line[1:]):
        notes.append(f"n/c: the grid has {len(table.columns)} of the dataset's {table.num_classes} classes, so "
                     f"its average does not compare with the paper's.")
    notes += sorted({r for e in table.entries.values() for r in e.reasons})  # "<state>: <cell>: <reason>"
    return notes


# ---------------------------------------------------------------------------------------------------- Markdown

def to_markdown(table: Table, intervals: bool = False) -> str:
    """intervals=True (report.md): each mean also shows its 95% interval `[low, high]`."""
    head = [table.row_header, *_headers(table)]
    lines = [f"### {table.title}", ""] if table.title else []
    lines += [caption(table), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    body = _body(table, intervals)
    lines += ["| " + " | ".join(line) + " |" for line in body]
    notes = footnotes(table, body)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- CSV

CSV_HEADER = ["table", "kind", "row", "column", "label", "metric", "mean", "std", "ci_low", "ci_high", "n",
              "values", "n_cells", "states", "source", "context"]


def _num(x) -> str:
    return "" if x is None or x == "" else f"{x:.6g}"


def _seed_text(seeds: list[int], values: list[float]) -> str:
    return ";".join(f"s{s}={v:.6g}" for s, v in sorted(zip(seeds, values)))


def _stats_cols(values: list[float]) -> list:
    """mean, std, ci_low, ci_high, n of the finished seeds' values (blank where there are none or one)."""
    if not values:
        return ["", "", "", "", 0]
    iv = stats.interval(values)
    return [_num(iv.mean), _num(iv.std), _num(iv.low), _num(iv.high), iv.n]


def csv_rows(table: Table) -> list[list]:
    """kind = dadf (one line per row, column, metric; 'avg' lines last), paper and delta (per published entry)."""
    out = []
    for r in table.rows:
        for c in table.columns:
            for m in table.metrics:
                e = table.entry(r, c, m)
                states = ";".join(f"{k}={v}" for k, v in sorted(e.states.items()))
                out.append([table.title, "dadf", r, c, table.labels.get(c, c), m, *_stats_cols(e.values),
                            _seed_text(e.seeds, e.values), e.n_cells, states, "", ""])
        if table.show_avg:
            for m in table.metrics:
                avg, complete = row_average(table, r, m)
                per_seed = row_seed_values(table, r, m) if complete else None
                cols = _stats_cols(per_seed) if per_seed else [_num(avg), "", "", "", ""]
                values = ";".join(f"{v:.6g}" for v in per_seed) if per_seed else ""
                out.append([table.title, "dadf", r, "avg", "avg", m, *cols, values, "",
                            "complete" if complete else "incomplete", "", ""])
        for pr in (p for p in table.papers if p.of == r):
            for c in _columns_out(table):
                v = paper_value(pr, c)
                if v is None:
                    continue
                d, flag = delta(table, pr, c, pr.entry.metric)
                label = table.labels.get(c, c)
                runs = "unknown" if pr.entry.runs is None else pr.entry.runs
                out.append([table.title, "paper", r, c, label, pr.entry.metric, _num(v), "", "", "", runs, "",
                            "", "", pr.entry.source, ""])
                out.append([table.title, "delta", r, c, label, pr.entry.metric, _num(d), "", "", "", "", "", "",
                            {"*": "incomplete", "n/c": "not comparable"}.get(flag, ""), pr.entry.source,
                            context(table, pr, c, pr.entry.metric) or ""])
    for pr in (p for p in table.papers if p.of is None):
        for c in table.columns:
            if paper_value(pr, c) is not None:
                runs = "unknown" if pr.entry.runs is None else pr.entry.runs
                out.append([table.title, "paper", pr.entry.label, c, table.labels.get(c, c), pr.entry.metric,
                            _num(paper_value(pr, c)), "", "", "", runs, "", "", "", pr.entry.source, ""])
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
                 ("±", r"$\pm$"), ("→", r"$\to$"), ("↳", r"$\hookrightarrow$"), ("Δ", r"$\Delta$"), ("≥", r"$\geq$"),
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
