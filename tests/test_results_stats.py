"""Results you can trust: the tidy results DataFrame, the intervals over seeds, the method comparison over units
(datasets or classes, each method's value its mean over seeds: ranks, Friedman, Wilcoxon with Holm, Nemenyi CD, the
Bayesian signed-rank test) against hand-computed values, scipy and baycomp, the paper-in-context wording, and which
cells a table covers (a launch's own, or --all).

Regenerate the golden comparison after an intended change with:  DADF_UPDATE_GOLDEN=1 pytest tests/test_results_stats.py
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import run_job
from test_aggregate import check_golden, make_cell, published_file, write_manifest

from dadf.grid import aggregate as agg
from dadf.grid import render, report, results, stats, store
from dadf.grid import table as tbl

# five seeds of simplex_tabular's arrhythmia F1 (docs/results.md)
ARRHYTHMIA_F1 = [0.364, 0.431, 0.568, 0.576, 0.522]


# ------------------------------------------------------------------------------------------- intervals

def test_interval_is_students_t_over_seeds():
    iv = stats.interval(ARRHYTHMIA_F1)
    mean = sum(ARRHYTHMIA_F1) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in ARRHYTHMIA_F1) / 4)
    half = 2.7764451051977987 * std / math.sqrt(5)  # t_{0.975, 4}
    assert (iv.mean, iv.std, iv.low, iv.high, iv.n) == pytest.approx((mean, std, mean - half, mean + half, 5))
    lo, hi = scipy.stats.t.interval(0.95, 4, loc=mean, scale=scipy.stats.sem(ARRHYTHMIA_F1))
    assert (iv.low, iv.high) == pytest.approx((lo, hi))
    assert iv.mean == pytest.approx(0.4922) and iv.std == pytest.approx(0.0921, abs=5e-4)


def test_one_seed_has_no_interval_and_none_is_an_error():
    iv = stats.interval([0.7])
    assert (iv.mean, iv.std, iv.low, iv.high, iv.n) == (0.7, None, None, None, 1) and not iv.contains(0.7)
    with pytest.raises(ValueError, match="at least one finished seed"):
        stats.interval([])


def test_table_csv_has_the_interval_and_the_seeds(tmp_path):
    g = tmp_path / "runs" / "t_ci"
    ids = [make_cell(g, "simplex_ae", "arrhythmia", "tabular", s, axes={"dataset": "arrhythmia"},
                     value={"precision": v, "recall": v, "f1": v, "auroc": 0.8}) for s, v in enumerate(ARRHYTHMIA_F1)]
    ids.append(make_cell(g, "iforest", "arrhythmia", "tabular", 0, axes={"dataset": "arrhythmia"},
                         value={"precision": 0.5, "recall": 0.5, "f1": 0.5, "auroc": 0.8}))
    write_manifest(g, ids, metrics=["f1"])
    agg.aggregate(g)
    df = pd.read_csv(g / "table.csv")
    f1 = df[(df.kind == "dadf") & (df.metric == "f1")].set_index("column")
    iv = stats.interval(ARRHYTHMIA_F1)
    row = f1.loc["simplex_ae"]
    assert (row["mean"], row["std"], row["ci_low"], row["ci_high"], int(row["n"])) == pytest.approx(
        (iv.mean, iv.std, iv.low, iv.high, 5), abs=1e-5)
    assert row["values"] == "s0=0.364;s1=0.431;s2=0.568;s3=0.576;s4=0.522"
    one = f1.loc["iforest"]  # one seed: the value, no std, no interval
    assert one["mean"] == 0.5 and int(one["n"]) == 1 and all(pd.isna(one[k]) for k in ("std", "ci_low", "ci_high"))
    report = (g / "report.md").read_text()
    assert f"{iv.mean:.3f} ± {iv.std:.3f} [{iv.low:.3f}, {iv.high:.3f}]" in report  # report.md shows the interval
    table_md = (g / "table.md").read_text()
    assert f"{iv.mean:.3f} ± {iv.std:.3f} (n=5)" in table_md and "[" not in table_md  # table.md stays narrow
    assert "n = 1: the value, no interval" in table_md


# ------------------------------------------------------------------------------------------- method comparison

def test_holm_against_hand_computed_values():
    # sorted p: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> kept monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_critical_difference_matches_demsar():
    # Demšar (2006): q_0.05 = 2.569 for k = 4 (studentized range / sqrt 2); CD = q sqrt(k(k+1) / 6N), N = 14
    assert stats.critical_difference(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=2e-3)


WIDE = pd.DataFrame({"a": [0.9, 0.8, 0.85, 0.7, 0.95, 0.6, 0.75],
                     "b": [0.8, 0.72, 0.86, 0.63, 0.90, 0.47, 0.70],
                     "c": [0.7, 0.75, 0.5, 0.65, 0.80, 0.4, np.nan]})  # the last unit lacks c: left out


def test_compare_ranks_friedman_and_wilcoxon_against_scipy():
    cmp = stats.compare(WIDE, "auroc")
    assert cmp.n_units == 6 and cmp.methods == ["a", "b", "c"]
    # per unit ranks (1 = best): a 1,1,2,1,1,1; b 2,3,1,3,2,2; c 3,2,3,2,3,3
    assert cmp.avg_ranks == pytest.approx({"a": 7 / 6, "b": 13 / 6, "c": 16 / 6})
    x = WIDE.dropna().to_numpy()
    chi2, p = scipy.stats.friedmanchisquare(*x.T)
    assert cmp.friedman == pytest.approx((chi2, p))
    # hand: chi2 = 12 N / (k (k+1)) · Σ R_j² − 3 N (k+1), R_j = average ranks
    hand = 12 * 6 / 12 * sum(r * r for r in cmp.avg_ranks.values()) - 3 * 6 * 4
    assert chi2 == pytest.approx(hand)
    pairs = {(pr.a, pr.b): pr for pr in cmp.pairs}
    ab = scipy.stats.wilcoxon(x[:, 0], x[:, 1])
    assert (pairs["a", "b"].statistic, pairs["a", "b"].p) == pytest.approx((ab.statistic, ab.pvalue))
    assert (pairs["a", "b"].wins, pairs["a", "b"].losses) == (5, 1)
    ac = scipy.stats.wilcoxon(x[:, 0], x[:, 2])
    assert (pairs["a", "c"].statistic, pairs["a", "c"].p) == pytest.approx((ac.statistic, ac.pvalue))
    assert [pr.p_holm for pr in cmp.pairs] == pytest.approx(stats.holm([pr.p for pr in cmp.pairs]))
    assert cmp.cd == pytest.approx(stats.critical_difference(3, 6))


def test_rank_rows_is_scipys_rankdata():
    x = np.array([[0.9, 0.8, 0.9, 0.1], [1.0, 1.0, 1.0, 1.0], [0.3, 0.2, 0.1, 0.4]])
    assert stats.rank_rows(x) == pytest.approx(scipy.stats.rankdata(x, axis=1))


def test_tied_or_zero_differences_use_the_normal_approximation():
    # scipy's "auto" would run a permutation test there (slow); exact only without ties and zeros
    assert stats.wilcoxon_method(np.array([0.5, -0.25, 1.0, 2.0, 3.0, 4.0])) == "exact"
    assert stats.wilcoxon_method(np.array([0.5, -0.5, 1.0, 2.0, 3.0, 4.0])) == "approx"
    assert stats.wilcoxon_method(np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])) == "approx"
    x = np.array([[1.0, 0.5], [2.0, 1.5], [3.0, 3.25], [4.0, 3.0], [5.0, 3.0], [6.0, 3.0], [7.0, 3.0]])
    cmp = stats.compare(pd.DataFrame(x, columns=["a", "b"]), "f1")
    ref = scipy.stats.wilcoxon(x[:, 0], x[:, 1], method="approx")
    assert (cmp.pairs[0].statistic, cmp.pairs[0].p) == pytest.approx((ref.statistic, ref.pvalue))


def test_too_few_units_show_only_ranks():
    cmp = stats.compare(WIDE.iloc[:3], "auroc")
    assert cmp.friedman is None and cmp.pairs == [] and cmp.cd is None
    assert cmp.notes == ["not enough units for the tests (n = 3 < 6): only ranks are shown"]
    assert cmp.avg_ranks == pytest.approx({"a": 4 / 3, "b": 2.0, "c": 8 / 3})
    two = stats.compare(WIDE[["a", "b"]], "auroc")  # two methods: Wilcoxon, no Friedman
    assert two.friedman is None and len(two.pairs) == 1 and "at least 3 methods" in two.notes[0]


# three methods on two datasets and three seeds: 2 units (the datasets), 6 cells per method
COMPARED = {("ocsvm", "kdd99"): [0.91, 0.93, 0.92], ("iforest", "kdd99"): [0.88, 0.90, 0.94],
            ("knn", "kdd99"): [0.95, 0.96, 0.97], ("ocsvm", "thyroid"): [0.60, 0.55, 0.58],
            ("iforest", "thyroid"): [0.62, 0.50, 0.57], ("knn", "thyroid"): [0.70, 0.66, 0.69]}


def _grid(tmp_path, values: dict, name: str = "t_cmp", seeds=(0, 1, 2), metrics=("f1",)):
    g = tmp_path / "runs" / name
    ids = [make_cell(g, m, ds, "tabular", s, axes={"dataset": ds},
                     value={"precision": v, "recall": v, "f1": v, "auroc": v})
           for (m, ds), vals in values.items() for s, v in enumerate(vals) if s in seeds]
    write_manifest(g, ids, metrics=list(metrics))
    return g


def _compared_grid(tmp_path, seeds=(0, 1, 2)):
    return _grid(tmp_path, COMPARED, seeds=seeds)


def eight_datasets(methods=("ocsvm", "iforest", "knn"), offset: float = 0.0) -> dict:
    """Three seeds of each method on eight datasets: knn mostly best, iforest and ocsvm close; no ties."""
    rng = np.random.default_rng(7)
    base = {"ocsvm": 0.80, "iforest": 0.79, "knn": 0.86, "simplex_ae": 0.70}
    out = {}
    for d in range(8):
        ds_shift = 0.1 * rng.uniform(-1, 1)
        for m in methods:
            out[(m, f"set{d}")] = [round(base[m] + offset + ds_shift + 0.03 * rng.standard_normal(), 4)
                                   for _ in range(3)]
    return out


def _comparison_section(report: str) -> str:
    return report[report.index("## Method comparison"):report.index("## Cells and provenance")]


def test_two_datasets_with_three_seeds_are_two_units(tmp_path):
    """Seeds of one dataset are not independent: 2 datasets × 3 seeds are 2 units, too few for the tests."""
    g = _compared_grid(tmp_path)
    agg.aggregate(g)
    cmp = report.method_comparison(tbl.load_records(g), "f1")
    assert cmp.n_units == 2 and cmp.unit == "dataset" and cmp.units == ["kdd99", "thyroid"]
    assert cmp.friedman is None and cmp.pairs == []
    # ranked on the per-dataset means (kdd99: 0.920, 0.907, 0.960; thyroid: 0.577, 0.563, 0.683)
    assert cmp.avg_ranks == pytest.approx({"ocsvm": 2.0, "iforest": 3.0, "knn": 1.0})
    section = _comparison_section((g / "report.md").read_text())
    assert "Units: the 2 datasets where every method has a finished value (kdd99, thyroid)" in section
    assert "not enough units for the tests (n = 2 < 6): only ranks are shown" in section
    assert "Friedman" not in section and "Wilcoxon" not in section


def test_eight_datasets_are_eight_units_and_agree_with_scipy_on_the_means(tmp_path):
    values = eight_datasets()
    g = _grid(tmp_path, values)
    cmp = report.method_comparison(tbl.load_records(g), "f1")
    assert cmp.n_units == 8 and cmp.units == [f"set{d}" for d in range(8)]
    methods = ["ocsvm", "iforest", "knn"]
    assert cmp.methods == methods
    x = np.array([[np.mean(values[(m, f"set{d}")]) for m in methods] for d in range(8)])
    ranks = scipy.stats.rankdata(-x, axis=1).mean(axis=0)
    assert [cmp.avg_ranks[m] for m in methods] == pytest.approx(ranks)
    assert cmp.friedman == pytest.approx(tuple(scipy.stats.friedmanchisquare(*x.T)))
    pairs = {(pr.a, pr.b): pr for pr in cmp.pairs}
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        ref = scipy.stats.wilcoxon(x[:, i], x[:, j])
        pr = pairs[methods[i], methods[j]]
        assert (pr.statistic, pr.p) == pytest.approx((ref.statistic, ref.pvalue))
        assert pr.wins + pr.losses == 8
    assert cmp.cd == pytest.approx(stats.critical_difference(3, 8))
    # the frame's units agree with the report's
    wide = results.paired(results.frame(tbl.load_records(g)), "f1")
    assert wide.index.tolist() == cmp.units and wide.to_numpy() == pytest.approx(x)


def test_report_method_comparison_golden(tmp_path):
    g = _grid(tmp_path, eight_datasets())
    agg.aggregate(g, plots=True)
    section = _comparison_section((g / "report.md").read_text())
    assert "Units: the 8 datasets where every method has a finished value (set0, set1," in section
    assert "| knn | 1." in section and "Friedman test: χ² = " in section and "P(equivalent)" in section
    assert "### Seeds within each unit" in section
    assert "![critical difference](plots/cd_f1.png)" in section
    assert (g / "plots" / "cd_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_golden("comparison.md", section)


def test_report_says_when_there_are_not_enough_units(tmp_path):
    g = _compared_grid(tmp_path, seeds=(0,))
    agg.aggregate(g)
    section = _comparison_section((g / "report.md").read_text())
    assert "not enough units for the tests (n = 2 < 6): only ranks are shown" in section
    assert "| knn | 1.00 |" in section and "Friedman" not in section and "Wilcoxon" not in section


def test_classes_of_a_one_class_protocol_are_the_units(tmp_path):
    g = tmp_path / "runs" / "t_cls"
    ids = [make_cell(g, m, "mnist", "ovr", s, value=v + 0.01 * s + 0.02 * c, target_class=c, num_classes=10)
           for m, v in (("ae", 0.7), ("kde", 0.6)) for c in range(6) for s in range(2)]
    write_manifest(g, ids)
    cmp = report.method_comparison(tbl.load_records(g), "auroc")
    assert cmp.n_units == 6 and cmp.unit == "class" and cmp.units == [f"mnist c{c}" for c in range(6)]
    assert len(cmp.pairs) == 1 and cmp.pairs[0].wins == 6
    assert [(a.unit, a.seeds, a.first, a.first_held, a.order_held) for a in cmp.agreement][0] == (
        "mnist c0", 2, "ae", 2, 2)


def test_seeds_that_disagree_with_the_means_are_counted(tmp_path):
    values = {("a", "d0"): [0.9, 0.5, 0.9], ("b", "d0"): [0.6, 0.7, 0.6]}  # a best by mean, b best in seed 1
    g = _grid(tmp_path, values)
    cmp = report.method_comparison(tbl.load_records(g), "f1")
    assert [(a.first, a.first_held, a.order_held, a.seeds) for a in cmp.agreement] == [("a", 2, 2, 3)]
    agg.aggregate(g)
    assert "| d0 | 3 | a | 2/3 | 2/3 |" in (g / "report.md").read_text()


# ------------------------------------------------------------------------------------------- papers in context

@pytest.mark.parametrize("runs, paper, wording", [
    ("unknown", 0.545, "within seed spread (2/5 ≥)"),  # the measured arrhythmia F1: 2 of 5 seeds beat the paper
    (1, 0.60, "above seed spread (0/5 ≥)"),
    (1, 0.30, "below seed spread (5/5 ≥)"),
    (3, 0.50, "inside the 95% CI"),
    (3, 0.62, "above the 95% CI"),
    (3, 0.36, "below the 95% CI"),
])
def test_paper_in_context(tmp_path, runs, paper, wording):
    g = tmp_path / "runs" / "t_ctx"
    ids = [make_cell(g, "simplex_ae", "arrhythmia", "tabular", s, axes={"dataset": "arrhythmia"},
                     value={"precision": v, "recall": v, "f1": v, "auroc": 0.8}) for s, v in enumerate(ARRHYTHMIA_F1)]
    write_manifest(g, ids, metrics=["f1"])
    entries = published_file(tmp_path, [{"source": "T2", "runs": runs, "method": "simplex_ae", "protocol": "tabular",
                                         "metric": "f1", "values": {"arrhythmia": paper}}])
    t = agg.build_tables(tbl.load_records(g), ["f1"], "t_ctx", published=entries)[0]
    pr = next(p for p in t.papers if p.entry.metric == "f1")
    assert tbl.context(t, pr, "simplex_ae", "f1") == wording
    delta_line = next(line for line in render.to_markdown(t).splitlines() if line.startswith("| ↳ Δ"))
    d = np.mean(ARRHYTHMIA_F1) - paper
    inside = wording.startswith(("within", "inside"))
    expected = wording if inside else f"{d:+.3f} (paper {wording.split(' (')[0]})"
    assert f"| {expected} |" in delta_line


def test_one_seed_keeps_a_bare_delta_and_bad_runs_are_refused(tmp_path):
    g = tmp_path / "runs" / "t_ctx1"
    write_manifest(g, [make_cell(g, "simplex_ae", "arrhythmia", "tabular", 0, axes={"dataset": "arrhythmia"},
                                 value={"precision": 0.4, "recall": 0.4, "f1": 0.4, "auroc": 0.8})], metrics=["f1"])
    entries = published_file(tmp_path, [{"source": "T2", "runs": 1, "method": "simplex_ae", "protocol": "tabular",
                                         "metric": "f1", "values": {"arrhythmia": 0.5}}])
    t = agg.build_tables(tbl.load_records(g), ["f1"], "t_ctx1", published=entries)[0]
    assert "| ↳ Δ dadf − paper | – | – | -0.100 | – |" in render.to_markdown(t)
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ValueError, match=r"runs: 'three' is not a run count.*runs: unknown"):
        published_file(bad, [{"source": "T2", "runs": "three", "method": "x", "protocol": "tabular",
                              "metric": "f1", "values": {"a": 0.5}}])


def test_every_published_entry_says_how_many_runs():
    import yaml

    raw = yaml.safe_load(store.Path(agg.__file__).with_name("published.yaml").read_text())["entries"]
    assert raw and all("runs" in e for e in raw), [e["source"] for e in raw if "runs" not in e]
    by_source = {e["source"]: e["runs"] for e in raw}
    assert by_source["PIAD Table 2"] == 3 and by_source["Simplex paper Table 2"] == 1


# ------------------------------------------------------------------------------------------- the results frame

def test_results_load_is_tidy(tmp_path):
    g = tmp_path / "runs" / "t_df"
    ids = [make_cell(g, "ama", "mnist", "ovr", s, value={"auroc": 0.9 + s / 100, "auprc": 0.8}, target_class=1,
                     axes={"method.ablation": "none"}) for s in (0, 1)]
    d = g / ids[0]
    m = store.read_json(d / "metrics.json")
    m["metrics_by_score"] = {"r_score": {"auroc": 0.7, "auprc": 0.6}}
    store.write_json(d / "metrics.json", m)
    ids.append(make_cell(g, "ama", "mnist", "ovr", 2, state="failed", target_class=1, reason="loss is NaN",
                         axes={"method.ablation": "none"}))
    ids.append("ama-mnist-ovr-c2-s0-ffffff")  # in grid.json, no folder
    write_manifest(g, ids)
    df = results.load(g)
    assert list(df.columns) == results.COLUMNS + ["method.ablation"]
    assert len(df) == (2 + 2) + 2 + 1 + 1  # cell 0: 2 scores × 2 metrics; cell 1: 2 metrics; failed; missing
    alt = df[(df.cell == ids[0]) & (df.score == "r_score")].set_index("metric").value.to_dict()
    assert alt == {"auroc": 0.7, "auprc": 0.6}
    failed = df[df.state == "failed"].iloc[0]
    assert failed.reason == "loss is NaN" and pd.isna(failed.metric) and failed.seed == 2
    assert df[df.state == "missing"].iloc[0].target_class == 2
    assert set(df[df.state == "done"].variant) == {"ama ablation=none"}
    assert df.query("metric == 'auroc' and score == 'score'").value.tolist() == [0.9, 0.91]


# ------------------------------------------------------------------------------------------- which cells a table covers

def test_a_launch_tables_its_own_cells_and_all_tables_every_folder(tmp_path):
    g = tmp_path / "runs" / "t_own"
    first = [make_cell(g, "kde", "digits", "ovr", 0, value=0.9, target_class=c) for c in (0, 1)]
    second = [make_cell(g, "kde", "digits", "ovr", 0, value=0.8, target_class=2)]
    write_manifest(g, second)  # a later, narrowed launch rewrote grid.json
    table, _ = agg.aggregate(g, cells=first, write=False)  # the first launch still tables its own cells
    assert table.columns == ["c0", "c1"]
    assert agg.aggregate(g, write=False)[0].columns == ["c2"]  # default: the grid's last launch
    assert agg.aggregate(g, write=False, all_cells=True)[0].columns == ["c2", "c0", "c1"]


@pytest.mark.slow  # a subprocess that imports the stack: several seconds on 2 loaded cores
def test_aggregate_all_tables_every_cell_folder(tmp_path):
    g = tmp_path / "runs" / "t_all"
    [make_cell(g, "kde", "digits", "ovr", 0, value=0.9, target_class=c) for c in (0, 1)]
    write_manifest(g, [make_cell(g, "kde", "digits", "ovr", 0, value=0.8, target_class=2)])
    r = run_job("aggregate.py", str(g), "--all")
    assert r.returncode == 0, r.stderr
    assert "| kde | 0.800 | 0.900 | 0.900 | 0.867 |" in r.stdout  # grid.json's cells first, then the other folders
    assert "| kde | 0.800 | 0.900 | 0.900 | 0.867 |" in (g / "table.md").read_text()
