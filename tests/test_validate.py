"""Every value of a grid is checked before any cell runs (dadf/grid/validate.py), and an override that some
methods of the grid do not have is refused by ``expand`` with one message per override."""
from pathlib import Path

import pytest
from conftest import run_job
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from dadf.config import CONFIG_DIR
from dadf.grid.cells import expand

GRIDS = sorted(p.stem for p in (Path(CONFIG_DIR) / "grid").glob("*.yaml"))


def _cells(composer, *overrides):
    return expand(composer(list(overrides)), list(overrides), composer)


def _problems(composer, *overrides, processes=None):
    from dadf.grid.validate import check_cells

    cells = _cells(composer, *overrides)
    return check_cells(cells) if processes is None else check_cells(cells, processes)


def _one(composer, *overrides) -> str:
    """The single problem of a one-cell grid (ae, digits, class 0)."""
    problems = _problems(composer, "method=ae", "protocol.target_class=0", *overrides)
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------------------------- no false alarm
@pytest.mark.parametrize("grid", GRIDS)
def test_existing_grids_at_their_defaults_have_no_problem(composer, dirs, grid):
    assert _problems(composer, *dirs, f"grid={grid}") == []


# ------------------------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size=0 must be >= 1 (e.g. trainer.batch_size=64)"),
    ("trainer.steps=-1", "trainer.steps=-1 must be >= 1"),
    ("trainer.accumulate=0", "trainer.accumulate=0 must be >= 1"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0 must be >= 1"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0 must be >= 1"),
    ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints=0 must be >= 1"),
    ("trainer.sync_every=0", "trainer.sync_every=0 must be >= 1"),
    ("trainer.log_every=-5", "trainer.log_every=-5 must be >= 1"),
    ("trainer.eval_every=0", "trainer.eval_every=0 must be >= 1"),
    ("trainer.num_threads=0", "trainer.num_threads=0 must be >= 1"),
    ("trainer.select_after=-1", "trainer.select_after=-1 must be >= 0"),
    ("trainer.zero_stage=3", "trainer.zero_stage=3 must be in 0..2"),
    ("trainer.precision=fp64", "trainer.precision='fp64' must be one of fp32, bf16, fp16"),
    ("trainer.strategy=fsdp", "trainer.strategy='fsdp' must be one of ddp, deepspeed"),
    ("trainer.device=gpu", "trainer.device='gpu' must be one of auto, cpu"),
    ("seed=-1", "seed=-1 must be >= 0"),
])
def test_bad_trainer_values_are_named_with_their_fix(composer, dirs, override, message):
    assert _one(composer, *dirs, override).startswith(message)


# A value of the wrong type never reaches these checks: Hydra refuses it when it composes (the schemas in
# dadf/config.py and the params dataclasses), naming the key. A value that reads as the type is converted.
@pytest.mark.parametrize("overrides", [
    ["trainer.batch_size=abc"], ["trainer.batch_size=64.0"], ["trainer.batch_size=true"], ["trainer.steps=abc"],
    ["trainer.compile=maybe"], ["trainer.progress=sometimes"], ["method=ae", "method.lr=abc"],
    ["method=ae", "method.latent_dim=32.5"], ["method=ocsvm", "method.pca_components=2.5"],
])
def test_a_value_of_the_wrong_type_is_refused_when_composing(composer, dirs, overrides):
    with pytest.raises(ConfigCompositionException) as err:
        composer([*dirs, *overrides])
    assert overrides[-1] in str(err.value) and isinstance(err.value.__cause__, ValidationError), err.value


def test_a_value_that_reads_as_its_type_is_converted(composer, dirs):
    cfg = composer([*dirs, "method=ae", "method.latent_dim='32'", "method.lr=1", "trainer.compile=yes"])
    assert (cfg.method.latent_dim, cfg.method.lr, cfg.trainer.compile) == (32, 1.0, True)


def test_epochs_below_one_without_steps(composer, dirs):
    assert _one(composer, *dirs, "trainer.steps=null", "trainer.epochs=-1") == \
        "trainer.epochs=-1 must be >= 1 (or set trainer.steps)"
    assert _one(composer, *dirs, "trainer.steps=null", "trainer.epochs=0").startswith("trainer.epochs=0 must be >= 1")


def test_batch_must_split_over_processes_and_micro_batches(composer, dirs):
    assert _one(composer, *dirs, "trainer.batch_size=60", "trainer.accumulate=8") == (
        "trainer.batch_size=60 must split evenly over 1 process(es) x trainer.accumulate=8 micro-batches: "
        "choose a multiple of 8")
    one = ["method=ae", "protocol.target_class=0", *dirs]
    assert _problems(composer, *one, "trainer.batch_size=64", processes=lambda c: 3) == [
        "trainer.batch_size=64 must split evenly over 3 process(es) x trainer.accumulate=1 micro-batches: "
        "choose a multiple of 3"]
    assert _problems(composer, *one, "trainer.batch_size=64", "trainer.accumulate=2", processes=lambda c: 4) == []
    # accumulate=0 is its own problem, not "a multiple of 0/1"
    assert _one(composer, *dirs, "trainer.accumulate=0").startswith("trainer.accumulate=0 must be >= 1")


def test_several_problems_one_message_each(composer, dirs):
    problems = _problems(composer, *dirs, "method=ae", "protocol.target_class=0", "trainer.batch_size=0",
                         "trainer.precision=fp64", "method.lr=-1")
    assert len(problems) == 3, problems
    assert any(p.startswith("trainer.batch_size=0") for p in problems)
    assert any(p.startswith("trainer.precision='fp64'") for p in problems)
    assert any(p.startswith("method.lr=-1.0 (method ae) must be > 0") for p in problems)


def test_a_problem_shared_by_many_cells_is_reported_once_with_where(composer, dirs):
    problems = _problems(composer, *dirs, "trainer.batch_size=0")
    assert problems == ["trainer.batch_size=0 must be >= 1 (e.g. trainer.batch_size=64) [all 50 cells]"]
    problems = _problems(composer, *dirs, "+grid.method_overrides.ae=['method.lr=-1']")
    assert problems == ["method.lr=-1.0 (method ae) must be > 0 (e.g. method.lr=0.001) [10 of 50 cells: ae]"]


# ------------------------------------------------------------------------------------------- method
@pytest.mark.parametrize("overrides, message", [
    (["method=ae", "method.lr=-1"], "method.lr=-1.0 (method ae) must be > 0"),
    (["method=ae", "method.lr=0"], "method.lr=0.0 (method ae) must be > 0"),
    (["method=ae", "method.width=0"], "method.width=0 (method ae) must be >= 1 (e.g. method.width=32)"),
    (["method=aae", "method.critic_lr=-0.1"], "method.critic_lr=-0.1 (method aae) must be > 0"),
    (["method=aae", "method.betas=[0.5]"], "method.betas=[0.5] (method aae) must be a list of 2 numbers"),
    (["method=ama", "method.ablation=nope"], "method ama: method option ablation='nope'; choose one of"),
    (["method=ama", "method.lr_gamma=0"], "method.lr_gamma=0.0 (method ama) must be > 0"),
    (["method=piad", "method.lr_critic=0"], "method.lr_critic=0.0 (method piad) must be > 0"),
    (["method=piad", "method.n_critic=0"], "method.n_critic=0 (method piad) must be >= 1"),
    (["method=simplex_ae", "method.lr=-1"], "method.lr=-1.0 (method simplex_ae) must be > 0"),
    (["method=omasgan", "method.delta=2.0"], "method omasgan: delta=2.0 must lie in [0, 1]"),
    (["method=iforest", "method.n_estimators=0"], "method.n_estimators=0 (method iforest) must be >= 1"),
])
def test_method_values_are_checked_against_the_params_dataclass(composer, dirs, overrides, message):
    problems = _problems(composer, *dirs, "protocol.target_class=0", *overrides)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_params_class_is_found_through_the_registry():
    from dadf.grid.validate import params_class
    from dadf.methods.autoencoder import AEParams
    from dadf.methods.shallow import KDEParams, OCSVMParams

    assert params_class("ae") is AEParams
    assert params_class("ocsvm") is OCSVMParams and params_class("kde") is KDEParams
    assert params_class("no_such_method") is None


# ------------------------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("overrides, message", [
    (["protocol.target_class=12"], "protocol.target_class=12 (dataset digits, 10 classes) must be a class index "
                                   "in 0..9"),
    (["protocol.target_class=-1"], "protocol.target_class=-1 (dataset digits, 10 classes)"),
    (["protocol.val_fraction=1.5"], "protocol.val_fraction=1.5 (protocol ovr) must be 0 <= x < 1"),
    (["protocol.val_anomalies=-1"], "protocol.val_anomalies=-1 (protocol ovr) must be an integer >= 0"),
    (["protocol=corruption", "protocol.p=-2"], "protocol.p=-2 (protocol corruption) must be a number >= 0"),
    (["protocol=gpnd", "protocol.train_fraction=0"], "protocol.train_fraction=0.0 (protocol gpnd) must be 0 < x < 1"),
    (["protocol=ood", "protocol.secondary=mnist", "protocol.ratio=0"],
     "protocol.ratio=0.0 (protocol ood) must be a number > 0"),
    (["protocol=ood"], "protocol.secondary=null (protocol ood) must name a dataset"),
    (["protocol=tabular"], "protocol=tabular does not fit dataset=digits (image, parts ['train', 'test']): "
                           "protocol 'tabular' needs part(s) ['all']"),
])
def test_protocol_values_are_checked_against_the_dataset(composer, dirs, overrides, message):
    problems = _problems(composer, *dirs, "method=kde", *overrides)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_image_protocol_on_a_tabular_dataset_says_which_protocols_fit(composer, dirs):
    problems = _problems(composer, *dirs, "method=kde", "dataset=thyroid", "protocol=ovr")
    assert len(problems) == 1, problems
    assert problems[0].startswith("protocol=ovr does not fit dataset=thyroid (tabular, parts ['all']): protocol "
                                  "'ovr' needs part(s) ['train', 'test']")
    assert "protocols that fit it: tabular" in problems[0] and "loo" not in problems[0]


def test_class_out_of_range_in_some_cells_says_which(composer, dirs):
    problems = _problems(composer, *dirs, "grid.classes=[0,12]", "grid.methods=[ae,kde]")
    assert problems == ["protocol.target_class=12 (dataset digits, 10 classes) must be a class index in 0..9 "
                        "[2 of 4 cells: ae, kde]"]


# ------------------------------------------------------------------------------------------- expand
def _refused(composer, overrides, prepend_user: bool):
    """expand's refusal; with prepend_user the compose puts the user's overrides first, as launch_grid.py does."""
    comp = (lambda o: composer([*overrides, *o])) if prepend_user else composer
    base = composer([o for o in overrides if not o.startswith("method.")])
    with pytest.raises(ValueError) as err:
        expand(base, overrides, comp)
    return str(err.value).splitlines()


@pytest.mark.parametrize("prepend_user", [False, True])
def test_override_some_methods_lack_names_them_and_the_fix(composer, dirs, prepend_user):
    lines = _refused(composer, [*dirs, "method.lr=0.01"], prepend_user)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("method.lr=0.01 does not apply to method(s) ocsvm, iforest, kde of grid 'quickstart'")
    assert "method=ae" in line and "method=deep_svdd" in line
    assert "+grid.method_overrides.ae=[\"method.lr=0.01\"]" in line


def test_each_refused_override_is_one_problem(composer, dirs):
    lines = _refused(composer, [*dirs, "method.lr=0.01", "method.weight_decay=0.1"], prepend_user=False)
    assert len(lines) == 2, lines
    assert lines[0].startswith("method.lr=0.01 does not apply to method(s) ocsvm, iforest, kde")
    assert lines[1].startswith("method.weight_decay=0.1 does not apply to method(s) ocsvm, iforest, kde")


def test_the_suggested_fix_works(composer, dirs):
    cells = _cells(composer, *dirs, '+grid.method_overrides.ae=["method.lr=0.01"]')
    assert {c.cfg.method.lr for c in cells if c.cfg.method.name == "ae"} == {0.01}
    assert len(cells) == 50


def test_grid_axis_some_methods_lack_is_one_problem_per_axis(composer, dirs):
    lines = _refused(composer, [*dirs, "grid=piad_ablation", "grid.methods=[piad,ae]"], prepend_user=False)
    assert len(lines) == 2, lines
    assert all("does not apply to method(s) ae" in ln and "grid.methods" in ln for ln in lines)
    assert "method.rec_loss=l2" in lines[0] and "method.weighting=fixed" in lines[1]


# ------------------------------------------------------------------------------------------- the CLI
# jobs/launch_grid.py calls check_cells(cells) right after expand, before writing anything: each problem (and
# each line of expand's refusal) is printed on its own line as "error: <problem>", the exit status is not 0,
# and no runs/<grid>/ folder is created.
def _cli_refuses(tmp_path: Path, *overrides: str) -> list[str]:
    runs = tmp_path / "runs"
    r = run_job("launch_grid.py", f"runs_dir={runs}", f"shards_dir={tmp_path / 'shards'}", *overrides, timeout=300)
    assert r.returncode != 0, r.stdout[-2000:]
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))[:5]
    return [ln[len("error: "):] for ln in r.stderr.splitlines() if ln.startswith("error: ")]


def test_cli_refuses_a_bad_value_before_any_cell_runs(tmp_path):
    errors = _cli_refuses(tmp_path, "method=ae", "protocol.target_class=0", "trainer.steps=-1")
    assert errors == ["trainer.steps=-1 must be >= 1 (e.g. trainer.steps=1000)"]


@pytest.mark.slow
def test_cli_prints_every_problem_on_its_own_line(tmp_path):
    errors = _cli_refuses(tmp_path, "method=ae", "protocol.target_class=0", "trainer.batch_size=0",
                          "trainer.precision=fp64", "method.lr=-1")
    assert len(errors) == 3, errors
    assert {e.split("=", 1)[0] for e in errors} == {"trainer.batch_size", "trainer.precision", "method.lr"}


def test_cli_refuses_a_value_of_the_wrong_type_naming_the_key(tmp_path):
    errors = _cli_refuses(tmp_path, "trainer.batch_size=abc")
    assert len(errors) == 1 and "trainer.batch_size=abc" in errors[0] and "Integer" in errors[0], errors


@pytest.mark.slow
def test_cli_refuses_an_override_some_methods_lack(tmp_path):
    errors = _cli_refuses(tmp_path, "method.lr=0.01")
    assert len(errors) == 1, errors
    assert errors[0].startswith("method.lr=0.01 does not apply to method(s) ocsvm, iforest, kde")


@pytest.mark.slow
def test_cli_prints_each_line_of_expands_refusal_as_an_error(tmp_path):
    errors = _cli_refuses(tmp_path, "grid=piad_ablation", "grid.methods=[piad,ae]")
    assert len(errors) == 2, errors
    assert all("does not apply to method(s) ae" in e for e in errors)
