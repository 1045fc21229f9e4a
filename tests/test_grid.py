"""The whole path: grid -> cells -> train -> score -> table, through the launchers and the CLI."""
import json

import numpy as np
import pytest
from conftest import run_job

from dadf.grid import store
from dadf.grid.aggregate import aggregate
from dadf.grid.cells import expand
from dadf.grid.launch import launch

TINY = ["trainer.steps=20", "trainer.batch_size=16"]


def _launch(composer, overrides, **kw):
    base = composer(overrides)
    cells = expand(base, overrides, composer)
    store.write_json(cells[0].dir.parent / "grid.json", {"grid": base.grid.name, "cells": [c.id for c in cells],
                                                         "metrics": ["auroc"]})
    return cells, launch(cells, base.launcher, **kw)


@pytest.mark.slow
def test_quickstart_cli_end_to_end_then_relaunch_skips(dirs, tmp_path):
    args = [*dirs, "trainer.steps=10", "grid.methods=[ae,iforest]", "grid.classes=[0,1,2]", "launcher.workers=2"]
    first = run_job("launch_grid.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 cells run, 0 skipped" in first.stdout
    table = (tmp_path / "runs" / "quickstart" / "table.md").read_text()
    assert "| ae |" in table and "| iforest |" in table and "avg" in table
    assert "missing" not in table and "failed" not in table
    for name in ("table.csv", "table.tex"):
        assert (tmp_path / "runs" / "quickstart" / name).stat().st_size > 0
    again = run_job("launch_grid.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 cells run, 6 skipped" in again.stdout
    assert table in again.stdout  # the same table


@pytest.mark.slow
def test_unknown_option_lists_the_valid_ones(dirs):
    r = run_job("launch_grid.py", *dirs, "grid=nope")
    assert r.returncode != 0
    assert "quickstart" in r.stderr and "mnist_ovr" in r.stderr
    r = run_job("launch_grid.py", *dirs, "trainer.nope=1")
    assert r.returncode != 0
    assert "'trainer.nope' is not a config key" in r.stderr and "batch_size" in r.stderr


def test_failing_cell_is_recorded_and_the_grid_goes_on(composer, dirs, tmp_path):
    overrides = [*dirs, *TINY, "launcher=debug", "grid.methods=[ae,iforest]", "grid.classes=[0]",
                 "+grid.method_overrides.ae=['method.lr=-1']"]
    cells, summary = _launch(composer, overrides)
    assert len(summary.failed) == 1 and len(summary.done) == 1
    failed = next(c for c in cells if c.id in summary.failed)
    status = store.read_status(failed.dir)
    assert status["state"] == "failed" and "method.lr=-1.0 (method ae) must be > 0" in status["reason"]
    _, md = aggregate(tmp_path / "runs" / "quickstart")
    row = next(line for line in md.splitlines() if line.startswith("| ae |"))
    assert "failed" in row and row.rstrip().endswith("| – |")
    assert "failed: " + failed.id in md


def test_non_finite_loss_stops_the_cell_with_step_and_loss_name(composer, dirs):
    overrides = [*dirs, *TINY, "launcher=debug", "grid.methods=[ae]", "grid.classes=[0]", "method.lr=1e30"]
    cells, summary = _launch(composer, overrides)
    reason = summary.failed[cells[0].id]
    assert "NonFiniteLoss" in reason and "rec=" in reason and "step" in reason


def test_resume_from_checkpoint_gives_identical_results(composer, dirs, tmp_path):
    overrides = [*dirs, "trainer.steps=30", "trainer.batch_size=16", "trainer.checkpoint_every=10",
                 "trainer.keep_checkpoints=5", "launcher=debug", "grid.methods=[deep_svdd]", "grid.classes=[1]"]
    cells, _ = _launch(composer, overrides)
    cell = cells[0].dir
    uninterrupted = np.load(cell / "scores.npz")["scores"]
    # Pretend the job died after step 10: keep only that checkpoint and forget the results.
    for d in ("step-00000020", "step-00000030"):
        import shutil

        shutil.rmtree(cell / "checkpoints" / d)
    (cell / "metrics.json").unlink()
    (cell / "status.json").unlink()
    _, summary = _launch(composer, overrides)
    assert summary.done == [cells[0].id]
    np.testing.assert_array_equal(np.load(cell / "scores.npz")["scores"], uninterrupted)


def test_split_counts_are_saved_with_the_results(composer, dirs):
    cells, _ = _launch(composer, [*dirs, *TINY, "launcher=debug", "grid.methods=[kde]", "grid.classes=[4]"])
    result = json.loads((cells[0].dir / "metrics.json").read_text())
    assert result["split"]["train"]["anomalous"] == 0
    assert result["split"]["test"]["normal"] > 0 and result["split"]["test"]["anomalous"] > 0
    assert cells[0].id.endswith(result["config_hash"][:6]) and result["selection"]["rule"] == "last"


def test_axis_overrides_apply_to_the_cells_of_their_axis_value_only(composer, dirs):
    overrides = [*dirs, "grid=simplex_tabular", "trainer.epochs=7"]
    cells = expand(composer(overrides), overrides, composer)
    by_dataset = {c.cfg.dataset.name: c.cfg.trainer for c in cells}
    assert {k: t.batch_size for k, t in by_dataset.items()} == {"kdd99": 256, "arrhythmia": 32, "thyroid": 64}
    assert {t.epochs for t in by_dataset.values()} == {7}  # the user's override still wins
    bad = [*dirs, "grid=simplex_tabular", "+grid.axis_overrides.dataset.mnist=['trainer.epochs=1']"]
    with pytest.raises(ValueError, match=r"\['dataset.mnist'\] name no axis value.*kdd99"):
        expand(composer(bad), bad, composer)
