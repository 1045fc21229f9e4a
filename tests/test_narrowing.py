"""The command line narrows a grid along any axis, `+key=` and `++key=` work on launch, and keys are checked against
every method of the grid."""
import numpy as np
import pytest
from conftest import run_job

from dadf.grid.cells import GridError, compose_grid, expand


def _cells(composer, *overrides):
    return expand(composer(list(overrides)), list(overrides), composer)


def _refusal(composer, dirs, *overrides) -> str:
    """The problems a launch with ``overrides`` reports (one per line) before reading any data, or "" when every
    override applies."""
    base = [*dirs, *(o for o in overrides if o.split("=")[0] in ("grid", "method"))]
    try:
        compose_grid(composer(base), [*dirs, *overrides], composer)
    except GridError as e:
        return str(e)
    return ""


# ------------------------------------------------------------------------------------------- narrowing any axis
def test_dataset_on_the_command_line_narrows_the_dataset_axis(composer, dirs):
    whole = _cells(composer, *dirs, "grid=tabular", "seed=0")
    cells = _cells(composer, *dirs, "grid=tabular", "seed=0", "dataset=arrhythmia")
    assert len(cells) == len(composer([*dirs, "grid=tabular"]).grid.methods)
    assert {c.cfg.dataset.name for c in cells} == {"arrhythmia"}
    # the very cells of the whole grid: a narrowed launch finishes the grid's own cells
    assert [c.id for c in cells] == [c.id for c in whole if c.cfg.dataset.name == "arrhythmia"]


def test_a_value_the_axis_lacks_replaces_the_axis(composer, dirs):
    cells = _cells(composer, *dirs, "grid=tabular", "dataset=odds", "dataset.params.name=cardio", "method=kde")
    assert {(c.cfg.dataset.name, c.cfg.dataset.source) for c in cells} == {("cardio", "odds")}


def test_any_axis_key_narrows_its_axis_and_keeps_the_axis_values_type(composer, dirs):
    one = [*dirs, "grid=ama_corruption_cifar", "protocol.target_class=0"]
    whole = _cells(composer, *one)
    cells = _cells(composer, *one, "protocol.p=10")
    assert {c.cfg.protocol.p for c in cells} == {10} and {c.cfg.cell.axes["protocol.p"] for c in cells} == {10}
    assert [c.id for c in cells] == [c.id for c in whole if c.cfg.protocol.p == 10]


def test_axis_overrides_of_values_left_out_do_not_apply(composer, dirs):
    for narrowing in ("grid.axes.dataset=[arrhythmia]", "dataset=arrhythmia"):
        cells = _cells(composer, *dirs, "grid=simplex_tabular", narrowing)
        assert {c.cfg.dataset.name for c in cells} == {"arrhythmia"}
        assert {c.cfg.trainer.batch_size for c in cells} == {32}  # arrhythmia's own axis_overrides apply
    # a value the grid file names that its (untouched) axis lacks is still a slip of the file
    bad = [*dirs, "grid=simplex_tabular", "+grid.axis_overrides.dataset.mnist=['trainer.epochs=1']"]
    with pytest.raises(ValueError, match=r"\['dataset.mnist'\] name no axis value"):
        expand(composer(bad), bad, composer)


# ------------------------------------------------------------------------------------------- + and ++
@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_plus_forms_add_to_an_open_dict(composer, dirs, prefix):
    cells = _cells(composer, *dirs, "grid=tabular", "dataset=odds", f"{prefix}dataset.params.name=cardio",
                   "method=kde")
    assert {c.cfg.dataset.params.name for c in cells} == {"cardio"}


def test_plus_on_a_key_the_cell_has_sets_it(composer, dirs):
    base = composer([*dirs, "grid=tabular", "method=ocsvm"])  # the launch's own config, composed without it
    cells = expand(base, [*dirs, "grid=tabular", "method=ocsvm", "+method.nu=0.3"], composer)
    assert cells and {c.cfg.method.nu for c in cells} == {0.3}


@pytest.mark.parametrize("prefix", ["+", "++"])
def test_plus_forms_add_no_key_a_schema_lacks(composer, dirs, prefix):
    with pytest.raises(GridError, match=rf"\{prefix}trainer.nope=1: 'trainer.nope' is not a config key"):
        _cells(composer, *dirs, f"{prefix}trainer.nope=1")


def test_a_key_of_the_chosen_method_is_set_and_a_key_of_none_lists_the_valid_keys(composer, dirs):
    assert _refusal(composer, dirs, "grid=tabular", "method=ocsvm", "+method.nu=0.3") == ""
    assert _refusal(composer, dirs, "++trainer.nope=1").startswith(
        "++trainer.nope=1: 'trainer.nope' is not a config key. Valid keys under 'trainer': accumulate, batch_size")


def test_the_unknown_key_error_recommends_a_form_that_composes(composer, dirs):
    assert _refusal(composer, dirs, "dataset.params.zzz=1").endswith("to add it, write +dataset.params.zzz=...")
    assert _refusal(composer, dirs, "+dataset.params.zzz=1") == ""
    # a key some dataset files set: ++ sets it there and adds it elsewhere
    message = _refusal(composer, dirs, "dataset.params.name=cardio")
    assert "some dataset files set it (odds)" in message and "write ++dataset.params.name=..." in message
    assert _refusal(composer, dirs, "++dataset.params.name=cardio") == ""


# ------------------------------------------------------------------------------------------- keys of every method
@pytest.mark.parametrize("override", ["method.nu=0.3", "+method.nu=0.3", "++method.nu=0.3"])
def test_a_key_of_another_method_of_the_grid_is_refused_with_the_fix(composer, dirs, override):
    """One behaviour for the three forms: refused where some methods of the grid lack the key, naming them and the
    two fixes; the command line's key check lets it through to this refusal."""
    one = [*dirs, "grid=tabular", "dataset=arrhythmia", "seed=0"]
    with pytest.raises(GridError) as err:
        expand(composer(one), [*one, override], composer)
    assert str(err.value) == (
        f"{override} does not apply to method(s) ae, deep_svdd, iforest, kde, knn of grid 'tabular' (they have no key "
        f"'method.nu'): narrow the grid with method=ocsvm, or give it to the methods it fits, e.g. "
        f"'+grid.method_overrides.ocsvm=[\"{override}\"]'")
    fixed = _cells(composer, *one, f"+grid.method_overrides.ocsvm=['{override}']")
    assert {c.cfg.method.name: c.cfg.method.get("nu") for c in fixed}["ocsvm"] == 0.3


def test_a_key_no_method_of_the_grid_has_lists_the_valid_keys_and_who_has_it(composer, dirs):
    message = _refusal(composer, dirs, "method=ae", "method.nu=0.3")
    assert message.startswith("method.nu=0.3: 'method.nu' is not a config key. Valid keys under 'method': latent_dim, "
                              "lr")
    assert "It is a key of method(s) ocsvm" in message


# ------------------------------------------------------------------------------------------- unknown dataset
def test_an_unknown_dataset_names_the_dataset_files_and_the_generic_sources(dirs, capsys):
    from dadf.cli.launch import run

    assert run([*dirs, "launcher=debug", "dataset=cardio"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: dataset=cardio is not a dataset file")
    assert "arrhythmia" in message and "docs/data.md" in message
    for source in ("odds", "csv_table", "idx", "image_folder", "image_arrays"):
        assert f"{source} (" in message


def test_an_unknown_dataset_in_the_grids_axis_names_the_generic_sources(composer, dirs):
    with pytest.raises(GridError, match=r"grid 'tabular': dataset=cardio is not a dataset file.*odds \("):
        _cells(composer, *dirs, "grid=tabular", "grid.axes.dataset=[cardio]")


# ------------------------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_refuses_a_key_of_some_methods_with_the_fix_not_as_unknown(tmp_path):
    r = run_job("launch_grid.py", f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}",
                "method.nu=0.3", timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.startswith("error: method.nu=0.3 does not apply to method(s) ae, deep_svdd, iforest, kde of grid "
                               "'quickstart'"), r.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_runs_the_baselines_on_a_users_table_with_plus_overrides(tmp_path):
    """A user's command, with + forms: the user's table, no file written, one ocsvm cell with its nu."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)).astype(np.float32), np.zeros(200, np.int64)
    x[:20] += 4
    y[:20] = 1
    (tmp_path / "data" / "odds").mkdir(parents=True)
    np.savez(tmp_path / "data" / "odds" / "cardio.npz", X=x, y=y)
    r = run_job("launch_grid.py", f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}",
                "launcher=debug", "grid=tabular", "dataset=odds", "+dataset.params.name=cardio",
                f"dataset.root={tmp_path / 'data'}", "method=ocsvm", "+method.nu=0.3", "seed=0")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 cells run" in r.stdout
    (cell,) = (tmp_path / "runs" / "tabular").glob("ocsvm-cardio-tabular-s0-*/cell.yaml")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cell)
    assert (cfg.method.nu, cfg.dataset.name) == (0.3, "cardio")
