"""The field's baselines: ``knn`` (PyOD's default k-NN scoring on scikit-learn's neighbours) and any PyOD detector
through ``method=pyod``, on the same splits and metrics as every method, each detector a row of its own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_job

from dadf.grid.cells import expand
from dadf.methods import get_method
from dadf.methods.base import DataInfo

NO_PYOD = "PyOD (the optional extra dadf[pyod]) is not installed: pip install -e '.[pyod]'"


def _pyod(module: str):
    return pytest.importorskip(f"pyod.models.{module}", reason=NO_PYOD)


def _table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normal training rows and a test set with a few far rows (small: exact neighbours, no approximation)."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(120, 6))
    test = np.concatenate([rng.normal(size=(40, 6)), rng.normal(4.0, 1.0, size=(8, 6))])
    return train, test


def _fitted(composer, *overrides):
    from accelerate import Accelerator

    cfg = composer(list(overrides)).method
    method = get_method(cfg.name)(cfg, DataInfo("tabular", (6,), 120), Accelerator(cpu=True), 0)
    train, test = _table()
    method.fit(torch.from_numpy(train).float())
    return method, method.score(torch.from_numpy(test).float()).numpy(), train, test


@pytest.mark.parametrize("extra, pyod_kwargs", [((), {}), (("method.n_neighbors=3", "method.method=mean"),
                                                           {"n_neighbors": 3, "method": "mean"})])
def test_knn_scores_are_pyods_knn_scores(composer, extra, pyod_kwargs):
    knn = _pyod("knn")
    _, scores, train, test = _fitted(composer, "method=knn", *extra)
    # the features go through float32 tensors on their way in: compare on the same rows
    train, test = train.astype(np.float32).astype(np.float64), test.astype(np.float32).astype(np.float64)
    expected = knn.KNN(**pyod_kwargs).fit(train).decision_function(test)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores[-8:].min() > scores[:40].max()  # the far rows score highest


def test_pyod_method_runs_the_named_detector_with_its_keywords(composer):
    lof = _pyod("lof")
    method, scores, train, test = _fitted(composer, "method=pyod", "method.detector=LOF",
                                          "method.kwargs={n_neighbors:10}")
    assert type(method.model) is lof.LOF and method.model.n_neighbors == 10
    train, test = train.astype(np.float32).astype(np.float64), test.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(scores, lof.LOF(n_neighbors=10).fit(train).decision_function(test), rtol=1e-6)


def test_a_seeded_detector_gets_the_cells_seed(composer):
    _pyod("iforest")
    method, *_ = _fitted(composer, "method=pyod", "method.detector=IForest")
    assert method.model.random_state == 0


def test_each_detector_is_a_method_of_its_own_in_ids_and_tables(composer, dirs):
    _pyod("lof")
    overrides = [*dirs, "grid=tabular", "seed=0", "method=pyod", "method.detector=LOF"]
    cells = expand(composer(overrides), overrides, composer)
    assert {c.cfg.cell.method for c in cells} == {"pyod_lof"}
    assert all(c.id.startswith("pyod_lof-") for c in cells)
    knn = [*dirs, "grid=tabular", "seed=0", "method=knn"]
    assert {c.id.split("-")[0] for c in expand(composer(knn), knn, composer)} == {"knn"}


def test_the_tabular_grid_runs_knn(composer):
    assert "knn" in composer(["grid=tabular"]).grid.methods


@pytest.mark.parametrize("override, message", [
    ("method.detector=LOFF", "method.detector='LOFF' is not a PyOD detector (did you mean LOF"),
    ("method.detector=lof", "(did you mean LOF?)"),
    ("method.kwargs={n_neighbor:10}", "PyOD's KNN takes no ['n_neighbor']; it takes "),
    ("method.kwargs=3", "method.kwargs=3 must be the detector's keyword arguments as a dict"),
])
def test_a_bad_detector_or_keyword_is_refused_at_launch_with_the_valid_ones(composer, dirs, override, message):
    _pyod("knn")
    from dadf.grid.validate import check_cells

    overrides = [*dirs, "grid=tabular", "seed=0", "method=pyod", override]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert len(problems) == 1 and message in problems[0], problems
    if "detector" in override:
        assert all(name in problems[0] for name in ("ECOD", "COPOD", "IForest", "KNN"))


def test_without_pyod_the_params_name_the_extra(monkeypatch):
    """``sys.modules['pyod'] = None`` makes ``import pyod`` raise ImportError: PyOD is absent for real."""
    from dadf.methods import pyod_detector

    monkeypatch.setitem(sys.modules, "pyod", None)
    pyod_detector.detectors.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'PyOD is not installed.*pip install -e "\.\[pyod\]"'):
            pyod_detector.PyODParams(detector="LOF")
    finally:
        pyod_detector.detectors.cache_clear()


@pytest.mark.slow
def test_without_pyod_the_launch_names_the_extra(dirs):
    """PyOD made unimportable for real (``sys.modules['pyod'] = None`` makes ``import pyod`` raise ImportError):
    the launch is refused before any cell runs, naming the extra to install."""
    code = "import sys; sys.modules['pyod'] = None; from dadf.cli.launch import main; main()"  # dadf-launch
    out = subprocess.run([sys.executable, "-c", code, *dirs, "grid=tabular", "seed=0", "method=pyod",
                          "method.detector=LOF", "launcher=debug"], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert out.returncode == 2, out.stderr[-3000:]
    assert 'PyOD is not installed' in out.stderr and 'pip install -e ".[pyod]"' in out.stderr, out.stderr[-3000:]
    runs = Path(dirs[0].split("=", 1)[1])
    assert not list(runs.glob("tabular/*/status.json")), "a cell was touched before the refusal"


def _tiny_odds_table(root, name: str = "thyroid", rows: int = 400, outliers: int = 20, seed: int = 0) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(rows - outliers, 6)), rng.normal(5.0, 1.0, size=(outliers, 6))])
    y = np.concatenate([np.zeros(rows - outliers), np.ones(outliers)])[:, None]
    (root / "odds").mkdir(parents=True)
    savemat(root / "odds" / f"{name}.mat", {"X": x, "y": y})


@pytest.mark.slow
def test_tabular_grid_with_knn_and_a_pyod_detector_tables_both(dirs, tmp_path):
    _pyod("lof")
    _tiny_odds_table(tmp_path / "data")
    out = run_job("launch_grid.py", *dirs, "grid=tabular", f"dataset.root={tmp_path / 'data'}", "seed=0",
                  "grid.axes.dataset=[thyroid]", "grid.methods=[knn,pyod]",
                  "+grid.method_overrides.pyod=['method.detector=LOF']", "launcher=debug")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    for text in (out.stdout, (tmp_path / "runs" / "tabular" / "table.md").read_text()):
        # the methods name the rows, or the column groups when datasets are the rows ("knn F1")
        cells = {c.strip().split(" ")[0] for line in text.splitlines() if line.startswith("|")
                 for c in line.strip("|").split("|")}
        assert {"knn", "pyod_lof"} <= cells, text
