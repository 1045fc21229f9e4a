"""One study from several grids (one table, one comparison; mixed layouts or metrics refused), the Bayesian
signed-rank test with a rope against baycomp, a shallow method's selection, and the line reader of cell.yaml
against PyYAML."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from test_aggregate import make_cell, write_manifest
from test_results_stats import _grid, eight_datasets

from dadf.cli.aggregate import main as aggregate_main
from dadf.grid import aggregate as agg
from dadf.grid import report, results, stats, store
from dadf.grid import table as tbl


def _comparison(report_md: str) -> str:
    return report_md[report_md.index("## Method comparison"):report_md.index("## Cells and provenance")]


# ------------------------------------------------------------------------------------------- one study, many grids

@pytest.fixture
def two_grids(tmp_path):
    """The baselines in one grid, simplex_ae in another, on the same eight datasets."""
    base = _grid(tmp_path, eight_datasets(("ocsvm", "iforest", "knn")), name="tabular")
    mine = _grid(tmp_path, eight_datasets(("simplex_ae",)), name="simplex_tabular")
    return base, mine


def test_a_study_tables_both_grids_as_one_table_with_one_comparison(two_grids, tmp_path, capsys):
    base, mine = two_grids
    out = tmp_path / "runs" / "study"
    assert aggregate_main([str(base), str(mine), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table, _ = agg.aggregate([base, mine], out=out, write=False)
    assert table.columns == ["ocsvm", "iforest", "knn", "simplex_ae"] and table.rows == [f"set{d}" for d in range(8)]
    for name in ("table.md", "table.csv", "table.tex", "report.md"):
        assert (out / name).is_file(), name
    md = (out / "table.md").read_text()
    assert md in printed and "| dataset | ocsvm P | ocsvm R | ocsvm F1 | ocsvm AUROC | iforest P |" in md
    assert "simplex_ae F1" in md
    text = (out / "report.md").read_text()
    assert text.count("## Method comparison") == 1 and "# study (tabular + simplex_tabular)" in text
    section = _comparison(text)
    assert "(4 methods, 8 units)" in section and "| simplex_ae | 3.75 |" in section
    cmp = report.method_comparison(tbl.load_records(base) + tbl.load_records(mine), "f1")
    assert cmp.methods == ["ocsvm", "iforest", "knn", "simplex_ae"] and len(cmp.pairs) == 6
    # the provenance links reach into the grids' folders
    first = tbl.load_records(mine)[0].id
    assert f"[{first}](../simplex_tabular/{first}/cell.yaml)" in text
    assert not (base / "report.md").exists() or "simplex_ae" not in (base / "report.md").read_text()


def test_the_study_frame_names_each_cells_grid(two_grids):
    base, mine = two_grids
    df = results.load([base, mine])
    assert set(df.grid) == {"tabular", "simplex_tabular"}
    assert set(df[df.grid == "simplex_tabular"].method) == {"simplex_ae"}
    assert list(results.paired(df, "f1").columns) == ["ocsvm", "iforest", "knn", "simplex_ae"]
    assert len(results.load(base)) == len(df[df.grid == "tabular"])  # one folder: as before


def test_a_method_in_two_grids_with_different_configs_stays_apart(tmp_path):
    a = _grid(tmp_path, eight_datasets(("ocsvm", "knn")), name="a")
    b = _grid(tmp_path, eight_datasets(("knn",), offset=0.05), name="b")
    for cid in store.cell_ids(b):  # another config of knn: another id
        (b / cid).rename(b / cid.replace("abc123", "def456"))
    write_manifest(b, [c.replace("abc123", "def456") for c in store.cell_ids(b)], metrics=["f1"])
    table, _ = agg.aggregate([a, b], out=tmp_path / "s", write=False)
    assert table.columns == ["ocsvm", "knn grid=a", "knn grid=b"]


def test_the_same_cell_in_two_grids_is_tabled_once(tmp_path):
    a = _grid(tmp_path, eight_datasets(("ocsvm", "knn")), name="a")
    b = _grid(tmp_path, eight_datasets(("knn",)), name="b")  # the same ids: the same frozen configs
    records = results.load_grids([a, b])
    assert len(records) == len({r.id for r in records}) == 8 * 2 * 3
    assert {r.grid for r in records} == {"a"}


def test_grids_of_different_layouts_are_refused_naming_them(tmp_path, capsys):
    tab = _grid(tmp_path, eight_datasets(("knn",)), name="tabular")
    ovr = tmp_path / "runs" / "mnist_ovr"
    write_manifest(ovr, [make_cell(ovr, "ae", "mnist", "ovr", 0, value=0.8, target_class=0)], metrics=["f1"])
    with pytest.raises(agg.StudyError, match=r"different table layouts: .*tabular \(tabular\), .*mnist_ovr "
                                             r"\(per_class\)"):
        agg.aggregate([tab, ovr], out=tmp_path / "s")
    assert aggregate_main([str(tab), str(ovr), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: these grids have different table layouts") and "mnist_ovr (per_class)" in err
    assert not (tmp_path / "s" / "report.md").exists()


def test_grids_of_different_metrics_are_refused_unless_one_is_chosen(tmp_path, capsys):
    a = _grid(tmp_path, eight_datasets(("knn",)), name="a", metrics=("f1",))
    b = _grid(tmp_path, eight_datasets(("ocsvm",)), name="b", metrics=("auroc",))
    assert aggregate_main([str(a), str(b), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "rank by different metrics" in err and "a (f1)" in err and "b (auroc)" in err and "--metric" in err
    assert aggregate_main([str(a), str(b), "--out", str(tmp_path / "s"), "--metric", "auroc"]) == 0
    assert "## Method comparison (AUROC)" in (tmp_path / "s" / "report.md").read_text()


def test_a_study_needs_out(two_grids, capsys):
    assert aggregate_main([str(p) for p in two_grids]) == 2
    assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- Bayesian test

def test_bayesian_signed_rank_sums_to_one_and_favours_the_better_method():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.6, 0.9, 12)
    better = stats.bayes_signed_rank(x + 0.05 + 0.01 * rng.standard_normal(12), x)
    assert sum(better) == pytest.approx(1.0) and better[0] > 0.95
    worse = stats.bayes_signed_rank(x, x + 0.05)
    assert worse[2] > 0.95 and sum(worse) == pytest.approx(1.0)
    same = stats.bayes_signed_rank(x, x + 0.001 * rng.standard_normal(12))  # within the ±0.01 rope
    assert same[1] > 0.95
    wide = stats.bayes_signed_rank(x, x + 0.03, rope=0.05)  # a wider rope makes the gap equivalent
    assert wide[1] > 0.95


def test_bayesian_signed_rank_is_baycomps_with_the_same_draws():
    import baycomp

    rng = np.random.default_rng(5)
    x = rng.uniform(0.6, 0.9, 9)
    for y in (x + rng.normal(0.005, 0.02, 9), np.round(x + rng.choice([-0.01, 0.0, 0.01, 0.02], 9), 2)):
        ours = stats.bayes_signed_rank(x, y, rope=0.01)
        ref = baycomp.SignedRankTest.probs(x, y, rope=0.01, nsamples=stats.BAYES_SAMPLES,
                                           random_state=stats.BAYES_SEED)
        assert ours == pytest.approx(tuple(float(p) for p in ref), abs=1e-12)


def test_the_report_gives_the_bayesian_probabilities_with_the_rope_asked_for(tmp_path, capsys):
    g = _grid(tmp_path, eight_datasets())
    assert aggregate_main([str(g), "--rope", "0.2"]) == 0
    capsys.readouterr()
    section = _comparison((g / "report.md").read_text())
    assert "region of practical equivalence of ±0.2 f1" in section
    cmp = report.method_comparison(tbl.load_records(g), "f1", rope=0.2)
    assert all(pr.p_equivalent > 0.95 for pr in cmp.pairs)  # every gap is within ±0.2
    assert all(p.p_a_better + p.p_equivalent + p.p_b_better == pytest.approx(1.0) for p in cmp.pairs)
    assert aggregate_main([str(g), "--rope", "-1"]) == 2 and "rope -1.0 is negative" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- shallow selection

def test_a_shallow_methods_selection_shows_a_dash(tmp_path):
    g = tmp_path / "runs" / "t_shallow"
    ids = [make_cell(g, "iforest", "thyroid", "tabular", 0, value=0.9, axes={"dataset": "thyroid"}),
           make_cell(g, "ae", "thyroid", "tabular", 0, value=0.8, axes={"dataset": "thyroid"})]
    m = store.read_json(g / ids[0] / "metrics.json")
    m.update(steps=None, selection={"rule": "last"})  # what the runner records for a method fit once
    store.write_json(g / ids[0] / "metrics.json", m)
    write_manifest(g, ids)
    agg.aggregate(g)
    text = (g / "report.md").read_text()
    shallow = next(line for line in text.splitlines() if line.startswith(f"| [{ids[0]}]"))
    assert "last@?" not in text and " | – | 1.5 |" in shallow
    assert "last@10" in next(line for line in text.splitlines() if line.startswith(f"| [{ids[1]}]"))
    assert "- model selection: last, – (fit once)" in text


# ------------------------------------------------------------------------------------------- reading cell.yaml

PLAIN = """seed: 3
method:
  name: ama
  lr: 0.0002
  betas: 1.
  big: 1.5e+3
  ablation: none
  flag: false
  on_word: on
  empty: {}
  nothing:
  name_like_number: 1e3
trainer:
  - a list, skipped unparsed
dataset:
  name: cifar10
  root: /data/some dir/x
  num_classes: 10
  params:
    deep:
      deeper: -2
  arrow: fmnist→mnist
protocol:
  name: semisup
  p: 5.0
  target_class: 0
cell:
  id: ama-cifar10-semisup-c0-p5-s3-abc123
  method: ama
  dataset: cifar10
  protocol: semisup
  target_class: 0
  seed: 3
  secondary: null
  axes:
    protocol.p: 5.0
    method.atypical.enabled: false
"""


def test_the_line_reader_reads_plain_blocks_as_pyyaml_does():
    keys = ("cell", "protocol", "dataset", "method")
    full = yaml.safe_load(PLAIN.replace("  - a list, skipped unparsed\n", "  x: 1\n"))
    assert tbl.plain_blocks(PLAIN, keys) == {k: full[k] for k in keys}


@pytest.mark.parametrize("line", ["  name: 'quoted'", "  name: [a, b]", "  name: &anchor x", "  name: a # note",
                                  "  name: 010", "  name: 1_000", "  name: 2020-01-01", "  name: .inf",
                                  "    misindented: 1", "  - item", "\tname: tab", "  yes: 1", "--- ", "  name: x "])
def test_the_line_reader_leaves_anything_else_to_pyyaml(line):
    text = f"cell:\n  method: ae\n{line}\n  dataset: d\n"
    assert tbl.plain_blocks(text, ("cell",)) is None


@pytest.mark.parametrize("value", ["kdd99", "ocsvm-set1-tabular-s0-abc", "629f6fbe", "0.1", "5", "-3", "+3", "1.",
                                   "1.5e+3", "1e3", "null", "Null", "true", "False", "yes", "no", "on", "Off",
                                   "nothing", "offset", "/a/b c", "fmnist→mnist", "a:b", "a#b", "{}", "[]"])
def test_the_line_reader_types_a_scalar_as_pyyaml_does(value):
    assert tbl.plain_blocks(f"cell:\n  v: {value}\n", ("cell",)) == yaml.safe_load(f"cell:\n  v: {value}\n")


def test_records_read_the_same_through_either_reader(tmp_path, monkeypatch):
    g = tmp_path / "runs" / "t_read"
    ids = [make_cell(g, "ama", "cifar10", "semisup", s, value=0.7, target_class=1, p=5.0,
                     axes={"protocol.p": 5.0, "method.atypical.enabled": False}) for s in (0, 1)]
    (g / ids[1] / "cell.yaml").write_text(PLAIN)  # the full config's shape
    fast = tbl.load_records(g, ids)
    monkeypatch.setattr(tbl, "plain_blocks", lambda text, keys: None)  # every cell through PyYAML
    full = tbl.load_records(g, ids)
    assert [(r.cell, r.protocol, r.num_classes, r.p) for r in fast] == [
        (r.cell, r.protocol, r.num_classes, r.p) for r in full]


def test_seed_means_from_records_match_the_frame(tmp_path):
    g = _grid(tmp_path, eight_datasets())
    recs = tbl.load_records(g)
    units, variants, values = results.unit_means(results.seed_values(recs, "f1"))
    wide = results.paired(results.frame(recs), "f1")
    pd.testing.assert_frame_equal(pd.DataFrame(values, index=units, columns=variants), wide, check_names=False)
