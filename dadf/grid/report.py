"""report.md per grid or study: the tables with the 95% intervals of their means (and links to their
Markdown/CSV/LaTeX), the method comparison over units (average ranks, Friedman, pairwise Wilcoxon with Holm, the
Bayesian signed-rank test with a rope; stats.py), how the seeds of each unit agree, the plots, the state of every
cell and the provenance of every result (code version and commit, config hash, split counts, seed, hardware, wall
time, model-selection rule)."""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

from dadf.grid import results, stats, store
from dadf.grid.render import to_markdown
from dadf.grid.table import EXPLAINED, CellRecord, Table, row_average, row_average_std, why


def _fmt(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def selection_text(res: dict) -> str:
    """`rule@step` of the state a trained method kept; `–` for a method fit once (shallow): nothing was selected."""
    sel = res.get("selection") or {}
    return f"{sel.get('rule', '?')}@{sel['step']}" if sel.get("step") is not None else "–"


@lru_cache(maxsize=64)
def _prefix(grid_dir: str, out: str) -> str:
    """The link from report.md in `out` to the cells of `grid_dir` ("" for its own grid; a study's report links
    into its grids' folders). Strings: hashing Paths shows at 10,000 cells."""
    grid_dir = os.path.realpath(grid_dir)
    return "" if grid_dir == out else Path(os.path.relpath(grid_dir, out)).as_posix() + "/"


def _rel(path: Path, out: Path) -> str:
    return _prefix(os.path.dirname(path), str(out)) + os.path.basename(path)


def provenance_row(rec: CellRecord, metrics: list[str], out: Path | str | None = None) -> list[str]:
    """One line of the provenance table: what produced this cell's numbers. `out`: the report's folder (default:
    the cell's grid folder)."""
    res = rec.result or {}
    split = res.get("split") or {}
    hw = res.get("hardware") or {}
    code = res.get("code") or {}

    def counts(part):
        s = split.get(part) or {}
        return f"{s.get('normal', '?')}/{s.get('anomalous', '?')}" if s else "–"

    state = rec.state + (f": {why(rec)}" if rec.state in EXPLAINED and rec.reason else "")
    if rec.state != "missing" and rec.dir is not None:  # a missing cell has no folder to link to
        prefix = _prefix(os.path.dirname(rec.dir), str(out)) if out is not None else ""
        link = f"[{rec.id}]({prefix}{rec.id}/{store.CellDir.CONFIG})"
    else:
        link = rec.id
    vals = [_fmt((res.get("metrics") or {}).get(m)) for m in metrics]
    sel_text = selection_text(res)
    precision = hw.get("precision_effective", hw.get("precision", "?"))
    hw_text = (f"{hw.get('device', '?')}×{hw.get('num_processes', '?')} {precision}"
               if hw else "–")
    code_text = f"{code.get('dadf', '?')} {str(code.get('git_commit', '?'))[:12]}" if code else "–"
    return [link, state.replace("|", "/").replace("\n", " ")[:120], *vals, _fmt(rec.cell.get("seed"), "d"),
            res.get("config_hash", "–"), counts("train"), counts("val"), counts("test"), _fmt(res.get("steps"), "d"),
            sel_text, _fmt(res.get("wall_time_s"), ".1f"), hw_text, code_text]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _grid_provenance(records: list[CellRecord]) -> list[str]:
    done = [r.result for r in records if r.result]
    if not done:
        return ["No finished cell yet: no provenance to report."]

    def distinct(fn):
        return sorted({str(fn(r)) for r in done})

    lines = [f"- dadf version / git commit: {', '.join(distinct(lambda r: (r.get('code') or {}).get('dadf')))} / "
             f"{', '.join(distinct(lambda r: (r.get('code') or {}).get('git_commit')))}",
             f"- hardware: {', '.join(distinct(lambda r: _hw(r)))}",
             f"- model selection: {', '.join(distinct(_selection_rule))}",
             f"- wall time: {sum(float(r.get('wall_time_s') or 0) for r in done):.1f} s over {len(done)} finished "
             f"cells"]
    if len(distinct(lambda r: (r.get("code") or {}).get("git_commit"))) > 1:
        lines.append("- **warning**: the cells come from different commits; check the provenance table below.")
    return lines


def _selection_rule(r: dict) -> str:
    return (r.get("selection") or {}).get("rule") if selection_text(r) != "–" else "– (fit once)"


def _hw(r: dict) -> str:
    hw = r.get("hardware") or {}
    return (f"{hw.get('device', '?')} ({hw.get('cpu', '')}{', ' + hw['gpu'] if hw.get('gpu') else ''}), "
            f"{hw.get('num_processes', '?')} process(es), {hw.get('precision_effective', hw.get('precision', '?'))}, "
            f"torch {hw.get('torch', '?')}")


def p_series(tables: list[Table], metric: str) -> dict[str, list[tuple[float, float, float | None]]]:
    """Per method: (p, row average, std over seeds) of each p row; published averages as '<method> paper' series."""
    series = {}
    for t in tables:
        if not t.p_rows or metric not in t.metrics:
            continue
        name = t.title.split(": ", 1)[-1].split(",")[0]
        pts = []
        for r in t.rows:
            avg, _ = row_average(t, r, metric)
            if avg is not None and t.row_info[r]["p"] is not None:
                pts.append((t.row_info[r]["p"], avg, row_average_std(t, r, metric)))
        if pts:
            series[name] = pts
        published = [e for e in t.published_by_p(metric) if "avg" in e.values]
        if published:
            series[f"{name} paper ({published[0].source})"] = sorted({(e.p, e.values["avg"], None) for e in published})
    return series


def _p(x: float) -> str:
    return "–" if x != x else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")  # x != x: nan


def _metric_name(metric: str) -> str:
    return metric.upper() if metric in ("auroc", "auprc") else metric


def _unit_names(cmp: stats.Comparison, at_most: int = 12) -> str:
    names = cmp.units[:at_most]
    more = len(cmp.units) - len(names)
    return ", ".join(names) + (f", … ({more} more)" if more > 0 else "")


def comparison_markdown(cmp: stats.Comparison, cd_png: str | None = None) -> list[str]:
    """The method comparison as Markdown lines: ranks always; the tests when there are enough units."""
    s = "" if cmp.n_units == 1 else "s"
    lines = [f"## Method comparison ({_metric_name(cmp.metric)})", "",
             f"Units: the {cmp.n_units} {cmp.unit}{s} where every method has a finished value"
             + (f" ({_unit_names(cmp)})" if cmp.units else "") + ". A method's value on a unit is its mean over "
             "seeds: seeds of one unit are not independent, so each unit counts once (Demšar 2006); the seeds' "
             "spread is in the tables' intervals and in the agreement below. Average rank of each method over the "
             "units; rank 1 = best, ties share the average rank.", ""]
    if cmp.avg_ranks:
        order = sorted(cmp.avg_ranks, key=lambda m: cmp.avg_ranks[m])
        lines += _md_table(["method", "average rank"], [[m, f"{cmp.avg_ranks[m]:.2f}"] for m in order])
        lines.append("")
    lines += [f"- {note}." for note in cmp.notes]
    if cmp.friedman is not None:
        chi2, p = cmp.friedman
        lines.append(f"- Friedman test: χ² = {chi2:.3f}, p = {_p(p)} ({len(cmp.methods)} methods, {cmp.n_units} "
                     f"units); Nemenyi critical difference (α = 0.05): {cmp.cd:.3f} in average rank.")
    if cmp.pairs:
        n = len(cmp.pairs)
        lines += ["", "Pairwise over the same units: Wilcoxon signed-rank tests (two-sided), p adjusted for the "
                      f"{n} comparison{'s' if n != 1 else ''} with Holm's method; and the Bayesian signed-rank test "
                      f"(Benavoli et al. 2017) with a region of practical equivalence of ±{cmp.rope:g} "
                      f"{_metric_name(cmp.metric)}: the probabilities that A is better, that the two are "
                      "practically equivalent, and that B is better (they sum to 1; above 0.95 reads as a decision).",
                  ""]
        lines += _md_table(["method A", "method B", "A better / worse (units)", "W", "p", "p (Holm)",
                            "P(A better)", "P(equivalent)", "P(B better)"],
                           [[pr.a, pr.b, f"{pr.wins} / {pr.losses}", f"{pr.statistic:g}", _p(pr.p), _p(pr.p_holm),
                             f"{pr.p_a_better:.2f}", f"{pr.p_equivalent:.2f}", f"{pr.p_b_better:.2f}"]
                            for pr in cmp.pairs])
    if cd_png:
        lines += ["", f"![critical difference]({cd_png})"]
    elif cmp.cd is not None:
        lines += ["", "(critical-difference plot: `python jobs/aggregate.py <grid folder> --plots`)"]
    lines += agreement_markdown(cmp)
    return lines + [""]


def agreement_markdown(cmp: stats.Comparison, at_most: int = 50) -> list[str]:
    """One line per unit: how often its seeds rank the methods as their means do."""
    if len(cmp.methods) < 2 or not cmp.agreement:
        return []
    rows = [[a.unit, str(a.seeds), a.first, f"{a.first_held}/{a.seeds}", f"{a.order_held}/{a.seeds}"]
            for a in cmp.agreement[:at_most]]
    lines = ["", "### Seeds within each unit", "",
             "The seeds (where every method has one) of each unit, ranked one seed at a time: how often the best "
             "method by mean is also best (or tied best), and how often the seed ranks every method as the means do.",
             ""]
    lines += _md_table(["unit", "seeds", "best by mean", "best in seeds", "same order in seeds"], rows)
    if len(cmp.agreement) > at_most:
        lines.append(f"\n(the first {at_most} of {len(cmp.agreement)} units)")
    return lines


def method_comparison(records: list[CellRecord], metric: str, rope: float = stats.ROPE) -> stats.Comparison:
    """The methods compared over the records' units, each method's value on a unit its mean over seeds."""
    per_seed = results.seed_values(records, metric)
    units, variants, values = results.unit_means(per_seed)
    cmp = stats.compare((units, variants, values), metric, rope=rope, unit=results.unit_kind(per_seed))
    labels = dict(zip(units, per_seed.values()))
    cmp.agreement = stats.agreement({u: labels[u] for u in cmp.units}, cmp.methods)
    return cmp


def write_report(grid_dir: Path, grid: str, records: list[CellRecord], tables: list[Table],
                 plots: bool = False, metric: str | None = None, rope: float = stats.ROPE,
                 sources: list[Path] | None = None) -> Path:
    """report.md in `grid_dir`. `metric`: the metric the method comparison ranks by (default: the first table's
    first); `rope`: the Bayesian test's region of practical equivalence; `sources`: a study's grid folders (its
    report lies in a folder of its own)."""
    grid_dir = Path(grid_dir)
    out = Path(os.path.realpath(grid_dir))
    metrics = tables[0].metrics
    states = {}
    for r in records:
        states[r.state] = states.get(r.state, 0) + 1
    where = ", ".join(str(Path(d).resolve()) for d in sources) if sources else str(out)
    lines = [f"# {grid}", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from {where}. "
             f"Cells: {len(records)} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))}).", "",
             "Tables: [Markdown](table.md) · [CSV](table.csv) · [LaTeX (booktabs)](table.tex)", ""]
    if set(states) != {store.DONE}:
        lines += ["**Partial grid**: unfinished and failed cells are shown in the tables with their state; "
                  "averages over them carry a *.", ""]
    lines += ["## Results", "", "Each mean is followed by its 95% Student-t interval over seeds `[low, high]` "
                                "(none for one seed).", ""]
    lines += [to_markdown(t, intervals=True) for t in tables]
    cmp = method_comparison(records, metric or metrics[0], rope)
    cd_png = None
    if plots and cmp.cd is not None:
        from dadf.grid.plots import plot_critical_difference

        path = plot_critical_difference(cmp, grid_dir / "plots" / f"cd_{cmp.metric}.png", f"{grid}: {cmp.metric}")
        cd_png = str(path.relative_to(grid_dir))
    lines += comparison_markdown(cmp, cd_png)

    grid_plots = {}
    if plots and any(t.p_rows for t in tables):
        from dadf.grid.plots import plot_by_p

        for m in metrics:
            series = p_series(tables, m)
            if series:
                grid_plots[m] = plot_by_p(series, grid_dir / "plots" / f"{m}_vs_p.png", f"{grid}: {m.upper()} vs p")
    if any(t.p_rows for t in tables):
        lines += ["## AUROC against p", ""]
        lines += ([f"![{m} vs p]({p.relative_to(grid_dir)})" for m, p in grid_plots.items()]
                  or ["(not drawn: run `python jobs/aggregate.py <grid folder> --plots`)"])
        lines.append("")

    cell_pngs = {}
    if plots:
        from dadf.grid.plots import cell_plots

        for r in records:
            if r.state == store.DONE and r.dir is not None:
                cell_pngs[r.id] = cell_plots(r.dir, r.id)
    else:  # link the ones drawn earlier
        for r in records:
            folder = os.path.join(r.dir, store.CellDir.PLOTS) if r.dir is not None else None  # str: cheap per cell
            if folder is not None and os.path.isdir(folder):
                cell_pngs[r.id] = {p.stem: p for p in sorted(Path(folder).glob("*.png"))}
    lines += ["## Cells and provenance", "",
              "Split counts are normal/anomalous. Selection is the model-selection rule and the step it kept "
              "(– for a method fit once, which selects nothing).", ""]
    head = ["cell", "state", *metrics, "seed", "config hash", "train", "val", "test", "steps", "selection",
            "wall s", "hardware", "code"]
    out_text = str(out)
    lines += _md_table(head, [provenance_row(r, metrics, out_text) for r in records])
    lines += ["", "### Grid provenance", "", *_grid_provenance(records), ""]
    if any(cell_pngs.values()):
        lines += ["## Plots per cell", ""]
        for cid, pngs in cell_pngs.items():
            if pngs:
                links = " · ".join(f"[{k}]({_rel(p, out)})" for k, p in pngs.items())
                lines.append(f"- {cid}: {links}")
        lines.append("")
    elif not plots:
        lines += ["Per-cell plots (ROC, score histograms, reconstructions, training curves): "
                  "`python jobs/aggregate.py <grid folder> --plots`.", ""]
    path = grid_dir / "report.md"
    store.atomic_write_text(path, "\n".join(lines) + "\n")
    return path
