"""Overrides are judged against the schemas and a grid composes once per method: the quickstart's launch makes one
Hydra composition per method, any key is an axis from the command line (a dataset's params too, which satisfies a
required value), and no code reads Hydra's error wording."""
from pathlib import Path

import hydra
import numpy as np
import pytest
from conftest import REPO

from dadf.cli.launch import run
from dadf.grid.cells import GridError, expand


@pytest.fixture
def counted(monkeypatch):
    """The number of Hydra compositions made (hydra.compose, which the launch calls)."""
    made = []
    real = hydra.compose

    def compose(*args, **kwargs):
        made.append(kwargs.get("overrides"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hydra, "compose", compose)
    return made


def test_the_quickstart_composes_once_per_method(counted, dirs, capsys):
    assert run([*dirs, "launcher=debug", "plan=true"]) == 0
    assert "cells" in capsys.readouterr().out
    assert len(counted) == 5, counted  # ae (the launch's own composition), deep_svdd, ocsvm, iforest, kde


def test_a_dataset_axis_composes_each_dataset_once(counted, dirs, tmp_path, capsys):
    tables(tmp_path / "data", "t1", "t2", "t3")
    axis = "grid.axes.dataset.params.name=[t1,t2,t3]"
    code = run([*dirs, "launcher=debug", "grid=tabular", "dataset=odds", f"dataset.root={tmp_path / 'data'}", axis,
                "plan=true"])
    assert code == 0, capsys.readouterr().err
    # six methods; the three tables are one dataset file's values: no further composition
    assert len(counted) == 6, counted


def tables(root: Path, *names: str) -> None:
    """ODDS-layout tables (X: rows x features, y: 1 = anomalous) under root/odds/."""
    (root / "odds").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        x, y = rng.normal(size=(120, 4)).astype(np.float32), np.zeros(120, np.int64)
        x[:12] += 4
        y[:12] = 1
        np.savez(root / "odds" / f"{name}.npz", X=x, y=y)


@pytest.mark.parametrize("axis", ["grid.axes={dataset.params.name: [t1, t2]}",
                                  "+grid.axes={dataset.params.name: [t1, t2]}",
                                  "grid.axes.dataset.params.name=[t1,t2]"])
def test_a_users_tables_are_an_axis_from_the_command_line(dirs, tmp_path, capsys, axis):
    """The dataset file leaves the table's name required (???): the axis sets it, one dataset per table, each named
    after its table; every cell runs."""
    tables(tmp_path / "data", "t1", "t2")
    code = run([*dirs, "launcher=debug", "grid=tabular", "dataset=odds", f"dataset.root={tmp_path / 'data'}", axis,
                "method=kde", "seed=0"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert "2 cells run" in out.out
    runs = Path(dirs[0].split("=", 1)[1]) / "tabular"
    assert sorted(p.name.split("-")[1] for p in runs.glob("kde-*")) == ["t1", "t2"]


def test_an_axis_key_no_method_has_names_the_keys_there_are(dirs, capsys):
    assert run([*dirs, "launcher=debug", "grid.axes.trainer.nope=[1,2]"]) == 2
    err = capsys.readouterr().err
    assert "trainer.nope=1 (from grid.axes.trainer.nope): 'trainer.nope' is not a config key" in err
    assert "Valid keys under 'trainer': accumulate, batch_size" in err
    assert not Path(dirs[0].split("=", 1)[1]).exists()


def test_a_bad_value_type_is_refused_naming_the_override(dirs, capsys):
    assert run([*dirs, "launcher=debug", "trainer.steps=many"]) == 2
    assert "trainer.steps=many" in capsys.readouterr().err


def test_an_axis_sets_a_key_the_cells_take_from_their_dataset_file(composer, dirs, tmp_path):
    """``grid.axes`` given as a dict merges into the grid's axes: narrowing the dataset axis to odds keeps the
    table axis, and each cell's dataset is named after its table."""
    tables(tmp_path / "data", "t1", "t2")
    over = [*dirs, "grid=tabular", "dataset=odds", f"dataset.root={tmp_path / 'data'}", "method=iforest", "seed=1",
            "+grid.axes={dataset.params.name: [t1, t2]}"]
    cells = expand(composer(over), over, composer)
    assert [(c.cfg.dataset.name, c.cfg.cell.axes["dataset.params.name"]) for c in cells] == [("t1", "t1"),
                                                                                             ("t2", "t2")]


def test_a_required_value_left_unset_is_refused_with_how_to_set_it(dirs, tmp_path, capsys):
    tables(tmp_path / "data", "t1")
    code = run([*dirs, "launcher=debug", "grid=tabular", "dataset=odds", f"dataset.root={tmp_path / 'data'}",
                "method=kde", "seed=0"])
    assert code != 0
    assert "dataset.params.name" in capsys.readouterr().err


def test_no_code_reads_hydras_error_wording():
    """Which override applies where is read from the schemas: no module matches Hydra's messages."""
    wording = ("An item is already at", "Could not override", "full_key:", "Could not append")
    found = [(p.relative_to(REPO).as_posix(), w) for p in (REPO / "dadf").rglob("*.py") for w in wording
             if w in p.read_text()]
    assert not found, found


def test_an_unknown_key_of_every_method_is_one_problem_with_the_valid_keys(composer, dirs):
    over = [*dirs, "grid=quickstart", "+trainer.nope=1"]
    with pytest.raises(GridError) as err:
        expand(composer([*dirs, "grid=quickstart"]), over, composer)
    assert err.value.problems == [
        err.value.problems[0]] and err.value.problems[0].startswith(
        "+trainer.nope=1: 'trainer.nope' is not a config key. Valid keys under 'trainer': accumulate, batch_size")


def test_a_word_that_is_no_override_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    """Hydra's own flags (``--cfg job``) are not taken: read as nothing, they would launch the default grid."""
    monkeypatch.chdir(tmp_path)
    assert run(["--cfg", "job"]) == 2
    assert "'--cfg' is not an override (key=value)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_launcher_value_out_of_its_range_is_refused_before_anything_runs(dirs, capsys):
    assert run([*dirs, "launcher.start_method=spawn", "launcher.cells_per_gpu=0", "plan=true"]) == 2
    assert "launcher.cells_per_gpu=0 must be >= 1" in capsys.readouterr().err
