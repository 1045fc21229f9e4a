"""The aggregator on hand-made results folders: each table layout (golden Markdown/CSV), mean ± std over seeds,
missing/failed cells, the published-number and Δ rows, the report's provenance, and the PNG plots.

Regenerate the golden files after an intended format change with:  DADF_UPDATE_GOLDEN=1 pytest tests/test_aggregate.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_job

from dadf.data import protocols
from dadf.grid import aggregate as agg
from dadf.grid import layouts, render, store
from dadf.grid import published as pub
from dadf.grid import table as tbl
from dadf.grid.plots import cell_plots, plot_by_p

GOLDEN = Path(__file__).parent / "golden"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- a hand-made grid

def make_cell(grid_dir: Path, method: str, dataset: str, protocol: str, seed: int, state: str = "done",
              value: float | dict | None = None, target_class: int | None = None, secondary: str | None = None,
              p: float | None = None, axes: dict | None = None, num_classes: int = 3, reason: str | None = None,
              class_names: dict | None = None) -> str:
    """Write one cell folder the way the launcher and trainer do (cell.yaml, status.json, metrics.json)."""
    parts = [method, dataset, protocol] + ([secondary] if secondary else []) + \
        ([f"c{target_class}"] if target_class is not None else []) + ([f"p{p:g}"] if p is not None else []) + \
        [f"{k.split('.')[-1]}{v}" for k, v in (axes or {}).items() if k != "dataset"] + [f"s{seed}", "abc123"]
    cid = "-".join(parts)
    d = grid_dir / cid
    d.mkdir(parents=True)
    proto = {"name": protocol, "target_class": target_class, **({"p": p} if p is not None else {})}
    cell = {"grid": grid_dir.name, "id": cid, "method": method, "dataset": dataset, "protocol": protocol,
            "target_class": target_class, "seed": seed, "secondary": secondary, "axes": axes or {}}
    (d / "cell.yaml").write_text(yaml.safe_dump({"seed": seed, "method": {"name": method},
                                                 "dataset": {"name": dataset, "num_classes": num_classes},
                                                 "protocol": proto, "cell": cell}))
    store.write_json(d / "status.json", {"state": state, **({"reason": reason} if reason else {})})
    if state == "done":
        metrics = value if isinstance(value, dict) else {"auroc": value}
        store.write_json(d / "metrics.json", {
            "cell": cell, "metrics": metrics, "seed": seed, "config_hash": f"hash{seed}{target_class}",
            "steps": 10, "selection": {"rule": "last", "step": 10}, "wall_time_s": 1.5,
            "code": {"dadf": "0.1.0", "git_commit": "deadbeefcafe0123"},
            "hardware": {"device": "cpu", "cpu": "x86_64", "num_processes": 1, "precision": "fp32"},
            "split": {"train": {"normal": 20, "anomalous": 0}, "val": {"normal": 0, "anomalous": 0},
                      "test": {"normal": 10, "anomalous": 30}},
            **({"target_class_name": (class_names or {}).get(target_class, str(target_class))}
               if target_class is not None else {})})
    return cid


def write_manifest(grid_dir: Path, ids: list[str], metrics=("auroc",)) -> None:
    store.write_json(grid_dir / "grid.json", {"grid": grid_dir.name, "cells": ids, "metrics": list(metrics)})


def published_file(tmp_path: Path, entries: list[dict]):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}, allow_unicode=True))
    return pub.load(path)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DADF_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with DADF_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{name} differs from the golden file (DADF_UPDATE_GOLDEN=1 to accept)"


# ------------------------------------------------------------------------------------------- per-class (ovr)

OVR_AUROC = {("deep_svdd", 0): [0.90, 0.94], ("deep_svdd", 1): [0.70, 0.80], ("deep_svdd", 2): [0.60, 0.66]}


@pytest.fixture
def ovr_grid(tmp_path):
    g = tmp_path / "runs" / "t_ovr"
    ids = []
    for (method, c), vals in OVR_AUROC.items():
        ids += [make_cell(g, method, "mnist", "ovr", s, value=v, target_class=c, num_classes=10)
                for s, v in enumerate(vals)]
    ids += [make_cell(g, "ae", "mnist", "ovr", s, value=0.5 + 0.1 * s, target_class=0, num_classes=10)
            for s in (0, 1)]
    ids.append(make_cell(g, "ae", "mnist", "ovr", 0, value=0.7, target_class=1, num_classes=10))
    ids.append(make_cell(g, "ae", "mnist", "ovr", 1, state="failed", target_class=1, num_classes=10,
                         reason="loss is NaN at step 7"))
    ids.append("ae-mnist-ovr-c2-s0-ffffff")  # in the manifest, never launched: no folder
    write_manifest(g, ids)
    entries = published_file(tmp_path, [
        {"source": "Test Table 9", "method": "deep_svdd", "dataset": "mnist", "protocol": "ovr", "metric": "auroc",
         "classes": [0.9, 0.8], "values": {"avg": 0.85}},
        {"source": "Other dataset", "method": "deep_svdd", "dataset": "cifar10", "protocol": "ovr",
         "metric": "auroc", "classes": [0.1, 0.1]}])
    return g, entries


def test_per_class_layout_golden(ovr_grid):
    g, entries = ovr_grid
    tables = agg.build_tables(tbl.load_records(g), ["auroc"], "t_ovr", published=entries)
    assert len(tables) == 1 and tables[0].layout == "per_class"
    check_golden("ovr.md", render.to_markdown(tables[0]))
    check_golden("ovr.csv", render.to_csv(tables))
    check_golden("ovr.tex", render.to_latex(tables[0]))


def test_mean_std_over_seeds_and_the_average(ovr_grid):
    g, entries = ovr_grid
    t = agg.build_tables(tbl.load_records(g), ["auroc"], "t_ovr", published=entries)[0]
    row = next(line for line in render.to_markdown(t).splitlines() if line.startswith("| deep_svdd |"))
    cells = [x.strip() for x in row.strip("|").split("|")][1:]
    for c, text in zip(range(3), cells):
        vals = OVR_AUROC[("deep_svdd", c)]
        assert text == f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"
    per_seed_avg = [np.mean([OVR_AUROC[("deep_svdd", c)][s] for c in range(3)]) for s in (0, 1)]
    assert cells[3] == f"{np.mean(per_seed_avg):.3f} ± {np.std(per_seed_avg, ddof=1):.3f}"
    assert "n = 2 seeds" in render.caption(t)


def test_missing_and_failed_cells_stay_visible_and_flag_the_average(ovr_grid):
    g, entries = ovr_grid
    t = agg.build_tables(tbl.load_records(g), ["auroc"], "t_ovr", published=entries)[0]
    md = render.to_markdown(t)
    row = next(line for line in md.splitlines() if line.startswith("| ae |"))
    cells = [x.strip() for x in row.strip("|").split("|")][1:]
    assert cells[0] == "0.550 ± 0.071"
    assert cells[1] == "0.700* (1/2)"  # one seed done, the other failed: mean of what exists, flagged
    assert cells[2] == "missing"      # listed in grid.json, no folder: not dropped
    assert cells[3] == f"{np.mean([0.55, 0.7]):.3f}*"
    assert "loss is NaN at step 7" in md and "\\* incomplete" in md
    avg, complete = tbl.row_average(t, "ae", "auroc")
    assert not complete and avg == pytest.approx(np.mean([0.55, 0.7]))


def test_paper_rows_and_delta(ovr_grid):
    g, entries = ovr_grid
    t = agg.build_tables(tbl.load_records(g), ["auroc"], "t_ovr", published=entries)[0]
    assert [pr.entry.source for pr in t.papers] == ["Test Table 9"]  # the cifar10 entry does not match
    pr = t.papers[0]
    d0, flag = tbl.delta(t, pr, "c0", "auroc")
    assert flag == "" and d0 == pytest.approx(np.mean(OVR_AUROC[("deep_svdd", 0)]) - 0.9)
    assert tbl.delta(t, pr, "c2", "auroc") == (None, "")  # the paper has no value for c2
    assert tbl.delta(t, pr, "avg", "auroc") == (None, "n/c")  # 3 of mnist's 10 classes: not comparable
    lines = render.to_markdown(t).splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| deep_svdd |"))
    assert lines[i + 1].startswith("| ↳ paper (Test Table 9) | 0.900 | 0.800 | – | 0.850 |")
    # the paper does not say how many runs: read as one run, placed against dadf's two seeds instead of a bare Δ
    assert lines[i + 2].startswith("| ↳ Δ dadf − paper | within seed spread (2/2 ≥) | within seed spread (1/2 ≥) |")
    rows = [r for r in render.csv_rows(t) if r[1] == "delta"]
    assert {r[3] for r in rows} == {"c0", "c1", "avg"} and all(r[-2] == "Test Table 9" for r in rows)
    assert [r[-1] for r in rows] == ["within seed spread (2/2 ≥)", "within seed spread (1/2 ≥)", ""]


def test_class_tables_split_by_dataset(tmp_path):
    g = tmp_path / "runs" / "t_two"
    ids = [make_cell(g, "ae", ds, "ovr", 0, value=v, target_class=0, axes={"dataset": ds})
           for ds, v in (("mnist", 0.9), ("cifar10", 0.6))]
    write_manifest(g, ids)
    tables = agg.build_tables(tbl.load_records(g), ["auroc"], "t_two", published=())
    assert [t.title for t in tables] == ["t_two [mnist]: AUROC", "t_two [cifar10]: AUROC"]
    assert [t.entry("ae", "c0", "auroc").values for t in tables] == [[0.9], [0.6]]


# ------------------------------------------------------------------------------------------- OOD with ablations

def test_ood_layout_golden_with_ablation_rows(tmp_path):
    g = tmp_path / "runs" / "t_ood"
    ids = [make_cell(g, "ama", "fmnist", "ood", s, value=v, secondary="mnist") for s, v in enumerate([0.97, 0.99])]
    ids += [make_cell(g, "ama", "fmnist", "ood", 0, value=0.9, secondary="mnist",
                      axes={"method.atypical.enabled": False})]
    ids += [make_cell(g, "ae", "fmnist", "ood", 0, state="running", secondary="mnist")]
    write_manifest(g, ids)
    entries = published_file(tmp_path, [
        {"source": "T1", "method": "ama", "protocol": "ood", "metric": "auroc",
         "values": {"fmnist→mnist": 0.987, "cifar10→svhn": 0.958}},
        {"source": "T1", "method": "ama", "protocol": "ood", "metric": "auroc", "variant": "w/o atypical selection",
         "axes": {"method.atypical.enabled": False}, "values": {"fmnist→mnist": 0.894}},
        {"source": "T1", "method": "ama", "protocol": "ood", "metric": "auroc", "variant": "w/o simplex",
         "values": {"fmnist→mnist": 0.960}}])
    tables = agg.build_tables(tbl.load_records(g), ["auroc"], "t_ood", published=entries)
    t = tables[0]
    assert t.layout == "ood" and t.columns == ["fmnist→mnist"] and not t.show_avg
    # the main paper row goes with the main dadf row, the ablation with the run that reproduces it,
    # the ablation nobody ran stays as a paper-only row
    assert [(pr.of, pr.entry.variant) for pr in t.papers] == [
        ("ama", None), ("ama enabled=False", "w/o atypical selection"), (None, "w/o simplex")]
    md = render.to_markdown(t)
    assert "| ae | running |" in md
    check_golden("ood.md", md)


# ------------------------------------------------------------------------------------------- rows = p%

def test_semisup_layout_golden_and_auroc_vs_p_plot(tmp_path):
    g = tmp_path / "runs" / "t_semisup"
    ids = []
    for p, base in ((0.0, 0.6), (1.0, 0.7), (5.0, 0.8)):
        for c in (0, 1):
            ids += [make_cell(g, "ama", "cifar10", "semisup", s, value=base + 0.05 * c + 0.01 * s, target_class=c,
                              p=p, axes={"protocol.p": p}, num_classes=2,
                              class_names={0: "airplane", 1: "automobile"}) for s in (0, 1)]
    ids.append(make_cell(g, "ae", "cifar10", "semisup", 0, state="pending", target_class=0, p=1.0,
                         axes={"protocol.p": 1.0}, num_classes=2))
    write_manifest(g, ids)
    entries = published_file(tmp_path, [
        {"source": "Supp T7", "method": "ama", "dataset": "cifar10", "protocol": "semisup", "metric": "auroc",
         "p": p, "classes": [v, v + 0.02], "values": {"avg": v + 0.01}} for p, v in ((0, 0.6), (1, 0.72), (20, 0.9))])
    tables = agg.build_tables(tbl.load_records(g), ["auroc"], "t_semisup", published=entries)
    assert [t.layout for t in tables] == ["by_p", "by_p"] and len(tables) == 2
    ama = tables[0]
    assert ama.rows == ["p=0%", "p=1%", "p=5%"] and ama.labels == {"c0": "airplane", "c1": "automobile"}
    assert [pr.of for pr in ama.papers] == ["p=0%", "p=1%"]  # p=20 not run: no row to compare with
    md = "\n".join(render.to_markdown(t) for t in tables)
    check_golden("semisup.md", md)
    check_golden("semisup.csv", render.to_csv(tables))

    from dadf.grid.report import p_series

    series = p_series(tables, "auroc")
    assert [pt[0] for pt in series["ama"]] == [0.0, 1.0, 5.0]
    assert series["ama"][1][1] == pytest.approx(np.mean([0.7, 0.71, 0.75, 0.76]))
    # the paper's curve has every p it reports, also p = 20 that this grid has not run
    assert series["ama paper (Supp T7)"] == [(0.0, 0.61, None), (1.0, 0.73, None), (20.0, 0.91, None)]
    _assert_png(plot_by_p(series, tmp_path / "auroc_vs_p.png", "AUROC vs p"))
    agg.aggregate(g, plots=True)  # the report links the grid's AUROC-vs-p plot
    assert "](plots/auroc_vs_p.png)" in (g / "report.md").read_text()
    _assert_png(g / "plots" / "auroc_vs_p.png")


# ------------------------------------------------------------------------------------------- tabular

def test_tabular_layout_golden(tmp_path):
    g = tmp_path / "runs" / "t_tab"
    ids = []
    for ds, (pr, rc) in {"kdd99": (0.9, 0.95), "thyroid": (0.4, 0.5)}.items():
        for s in (0, 1):
            m = {"precision": pr + 0.01 * s, "recall": rc - 0.01 * s, "auroc": 0.9}
            m["f1"] = 2 * m["precision"] * m["recall"] / (m["precision"] + m["recall"])
            ids.append(make_cell(g, "iforest", ds, "tabular", s, value=m, axes={"dataset": ds}))
    write_manifest(g, ids, metrics=["f1"])
    entries = published_file(tmp_path, [
        {"source": "Simplex T2", "method": "iforest", "protocol": "tabular", "metric": "f1",
         "values": {"kdd99": 0.9294, "thyroid": 0.7}},
        {"source": "Simplex T2", "method": "iforest", "protocol": "tabular", "metric": "precision",
         "values": {"kdd99": 0.92}}])
    tables = agg.build_tables(tbl.load_records(g), ["f1"], "t_tab", published=entries)
    t = tables[0]
    # datasets in rows, methods × P / R / F1 / AUROC in columns
    assert t.layout == "tabular" and t.metrics == ["precision", "recall", "f1", "auroc"]
    assert t.rows == ["kdd99", "thyroid"] and t.columns == ["iforest"] and t.row_header == "dataset"
    d, _ = tbl.delta(t, next(p for p in t.papers if p.entry.metric == "f1" and p.of == "kdd99"), "iforest", "f1")
    f1s = [2 * (0.9 + 0.01 * s) * (0.95 - 0.01 * s) / (1.85) for s in (0, 1)]
    assert d == pytest.approx(np.mean(f1s) - 0.9294)
    # one published table's metrics share one paper line and one Δ line under each dataset it reports
    body = render.to_markdown(t).splitlines()
    paper_lines = [line.split(" | ")[0] for line in body if line.startswith("| ↳")]
    assert paper_lines == ["| ↳ paper (Simplex T2)", "| ↳ Δ dadf − paper"] * 2
    assert "| dataset | iforest P | iforest R | iforest F1 | iforest AUROC |" in body
    check_golden("tabular.md", render.to_markdown(t))
    check_golden("tabular.csv", render.to_csv(tables))


def test_tabular_layout_stays_narrow_at_ten_datasets(tmp_path):
    g = tmp_path / "runs" / "t_tab10"
    datasets = [f"set{i}" for i in range(10)]
    ids = [make_cell(g, method, ds, "tabular", 0, axes={"dataset": ds},
                     value={"precision": 0.5, "recall": 0.4, "f1": 0.44, "auroc": 0.8})
           for ds in datasets for method in ("iforest", "ocsvm", "knn")]
    write_manifest(g, ids, metrics=["f1"])
    t = agg.build_tables(tbl.load_records(g), ["f1"], "t_tab10", published=())[0]
    assert t.rows == datasets and t.columns == ["iforest", "ocsvm", "knn"]
    md = render.to_markdown(t).splitlines()
    header = next(line for line in md if line.startswith("| dataset |"))
    assert header.count("|") == 1 + 1 + 3 * 4  # dataset + 3 methods × P/R/F1/AUROC, whatever the dataset count
    assert [line.split(" | ")[0] for line in md if line.startswith("| set")] == [f"| {d}" for d in datasets]


# ------------------------------------------------------------------------------------------- registries

def test_every_protocol_names_a_registered_layout():
    assert {name: p.layout for name, p in protocols.PROTOCOLS.items()} == {
        "loo": "per_class", "ovr": "per_class", "ood": "ood", "corruption": "by_p", "semisup": "by_p",
        "tabular": "tabular", "gpnd": "per_class", "attribute": "attribute"}
    assert set(layouts.LAYOUTS) == {"per_class", "ood", "by_p", "tabular", "attribute"}


@pytest.fixture
def registries(monkeypatch):
    """Protocols and layouts registered by the test are gone after it."""
    monkeypatch.setattr(protocols, "PROTOCOLS", dict(protocols.PROTOCOLS))
    monkeypatch.setattr(layouts, "LAYOUTS", dict(layouts.LAYOUTS))


def _register_toy_protocol(layout: str) -> None:
    @protocols.register("toy", layout=layout, params={"target_class": protocols.REQUIRED})
    def _toy(rng, source, params, secondary):
        raise AssertionError("the aggregator reads results; it never splits")


class _DatasetRows(layouts.Layout):
    """Rows = datasets, columns = methods."""

    def row(self, rec):
        return rec.cell["dataset"]

    def column(self, rec):
        return rec.cell["method"]


def test_a_registered_protocol_and_layout_make_the_grids_table(tmp_path, registries):
    _register_toy_protocol("dataset_rows")
    layouts.register(_DatasetRows("dataset_rows", row_header="dataset", class_columns=False))
    g = tmp_path / "runs" / "t_toy"
    ids = [make_cell(g, method, ds, "toy", s, value=v + 0.01 * s, axes={"dataset": ds})
           for method, ds, v in (("ae", "mnist", 0.8), ("kde", "mnist", 0.7), ("ae", "cifar10", 0.6)) for s in (0, 1)]
    write_manifest(g, ids)
    table, md = agg.aggregate(g)
    assert table.layout == "dataset_rows" and table.rows == ["mnist", "cifar10"] and table.columns == ["ae", "kde"]
    lines = (g / "table.md").read_text().splitlines()
    assert "| dataset | ae | kde |" in lines and "| cifar10 | 0.605 ± 0.007 | missing |" in lines
    assert "avg" not in md  # the columns are not classes: no average
    assert ("t_toy: AUROC,dadf,cifar10,ae,ae,auroc,0.605,0.00707107,0.541469,0.668531,2,s0=0.6;s1=0.61,2,done=2,,"
            in (g / "table.csv").read_text())


def test_an_unknown_protocol_or_layout_is_an_error_naming_the_registered_ones(tmp_path, registries):
    g = tmp_path / "runs" / "t_unknown"
    write_manifest(g, [make_cell(g, "ae", "mnist", "toy", 0, value=0.8)])
    with pytest.raises(protocols.ProtocolError, match=r"unknown protocol 'toy'; valid choices: \['loo', 'ovr'"):
        agg.aggregate(g, write=False)
    _register_toy_protocol("nope")
    with pytest.raises(ValueError, match=r"unknown table layout 'nope'; registered layouts: \['per_class', 'ood'"):
        agg.aggregate(g, write=False)
    assert not (g / "table.md").exists()


# ------------------------------------------------------------------------------------------- published file

def test_published_file_matches_the_papers_averages():
    entries = pub.load()
    ama = pub.matching(entries, method="ama", protocol="ovr", metric="auroc", dataset="cifar10")
    assert [e.source for e in ama] == ["AMA Table 2"] and ama[0].values["c0"] == 0.752
    for e in entries:  # every per-class row's average is the mean of its classes (a transcription check)
        classes = [v for k, v in e.values.items() if k.startswith("c") and k[1:].isdigit()]
        if len(classes) == 10 and "avg" in e.values:
            assert abs(np.mean(classes) - e.values["avg"]) < 0.004, e
        assert e.source and all(0 <= v <= 1 for v in e.values.values())
    semisup = pub.matching(entries, method="ama", protocol="semisup", metric="auroc", dataset="cifar10", p=20)
    assert semisup[0].values["avg"] == 0.852


def test_ama_ablation_grid_rows_meet_the_papers_ablation_rows(tmp_path):
    g = tmp_path / "runs" / "ama_ablation"
    ids = [make_cell(g, "ama", "fmnist", "ood", 0, value=0.9, secondary="mnist", axes={"method.ablation": a})
           for a in ("none", "no_mirrored")]
    write_manifest(g, ids)
    t = agg.build_tables(tbl.load_records(g), ["auroc"], "ama_ablation")[0]  # the real published.yaml
    pairs = [(pr.of, pr.entry.variant, pr.entry.values["fmnist→mnist"]) for pr in t.papers]
    assert pairs[:2] == [("ama ablation=none", None, 0.987),
                         ("ama ablation=no_mirrored", "w/o mirrored Wasserstein loss", 0.653)]
    assert {p[1] for p in pairs[2:]} == {"w/o simplex interpolation", "w/o atypical selection",
                                          "w/o new anomaly scoring (R-score)"} and all(p[0] is None for p in pairs[2:])


def test_bad_published_file_names_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"entries": [{"source": "X", "method": "ama", "protocol": "ovr",
                                                 "metric": "auroc", "value": 0.9}]}))
    with pytest.raises(ValueError, match=r"unknown keys \['value'\]; valid keys"):
        pub.load(path)
    path.write_text(yaml.safe_dump({"entries": [{"source": "X", "method": "ama", "protocol": "ovr",
                                                 "metric": "auroc"}]}))
    with pytest.raises(ValueError, match="no numbers"):
        pub.load(path)


# ------------------------------------------------------------------------------------------- files + report

def test_aggregate_writes_tables_and_a_report_with_provenance(ovr_grid, capsys):
    g, _ = ovr_grid
    table, md = agg.aggregate(g)
    assert table.rows == ["deep_svdd", "ae"]
    assert (g / "table.md").read_text() == md
    assert (g / "table.csv").read_text().splitlines()[0] == ",".join(render.CSV_HEADER)
    tex = (g / "table.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex
    report = (g / "report.md").read_text()
    for link in ("(table.md)", "(table.csv)", "(table.tex)"):
        assert link in report
    for fact in ("deadbeefcafe", "hash01", "20/0", "10/30", "last@10", "cpu×1 fp32", "Partial grid",
                 "failed: loss is NaN at step 7", "missing"):
        assert fact in report, fact


def test_cli_errors_on_a_folder_that_is_not_a_grid(tmp_path):
    r = run_job("aggregate.py", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "launch_grid.py" in r.stderr


# ------------------------------------------------------------------------------------------- plots

def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_cell_plots_are_valid_pngs_drawn_once(tmp_path):
    g = tmp_path / "runs" / "t_plot"
    cid = make_cell(g, "ae", "mnist", "ovr", 0, value=0.8, target_class=0)
    d = g / cid
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(30), np.ones(20)].astype(np.int64)
    np.savez(d / "scores.npz", scores=rng.normal(truth, 1.0).astype(np.float32), truth=truth, cls=truth)
    x = rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    np.savez(d / "recon.npz", x=x, x_hat=np.clip(x + 0.1, -1, 1), truth=np.array([0, 0, 1, 1]))
    (d / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "critic": 1.0, "ae": 2.0}, {"step": 2, "critic": 0.5, "ae": 1.0},
        {"step": 2, "epoch": 1, "val_auroc": 0.7}, {"step": 3, "critic": 0.2, "ae": 0.7}]) + '\n{"step": 4, "cr')
    made = cell_plots(d, cid)
    assert set(made) == {"roc", "hist", "recon", "curves"}
    for png in made.values():
        _assert_png(png)
    before = {k: p.stat().st_mtime_ns for k, p in made.items()}
    cell_plots(d, cid)  # up to date: nothing redrawn
    assert {k: p.stat().st_mtime_ns for k, p in made.items()} == before
    t = made["roc"].stat().st_mtime + 5
    os.utime(d / "metrics.json", (t, t))  # newer results: redrawn
    cell_plots(d, cid)
    assert made["roc"].stat().st_mtime_ns != before["roc"] and made["curves"].stat().st_mtime_ns == before["curves"]
