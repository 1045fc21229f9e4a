"""Every value of a grid is checked before any cell runs (dadf/grid/validate.py), and an override that some
methods of the grid do not have is refused by ``expand`` with one message per override."""
import copy
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
def test_existing_grids_at_their_defaults_have_no_problem(grid_cells, grid):
    from dadf.grid.validate import check_cells

    assert check_cells(grid_cells(grid)) == []


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
    ("trainer.data_workers=-1", "trainer.data_workers=-1 must be >= 0"),
    ("seed=-1", "seed=-1 must be >= 0"),
])
def test_bad_trainer_values_are_named_with_their_fix(composer, dirs, override, message):
    assert _one(composer, *dirs, override).startswith(message)


# A choice outside its set is refused when Hydra composes (the field is a Choice enum: dadf/checks.py), naming the
# valid values, whether it comes from the command line or from a grid file's axis.
@pytest.mark.parametrize("overrides, valid", [
    (["trainer.precision=fp64"], "[fp32, bf16, fp16]"),
    (["trainer.strategy=fsdp"], "[ddp, deepspeed]"),
    (["trainer.device=gpu"], "[auto, cpu]"),
    (["trainer.data=disk"], "[auto, memory, stream]"),
    (["trainer.tracker=visdom"], "[auto, none, tensorboard, wandb, mlflow]"),
    (["launcher.start_method=fork"], "[forkserver, spawn]"),
    (["method=ama", "method.ablation=nope"], "[none, no_mirrored, no_simplex,"),
    (["method=ama", "method.lipschitz=sn+sn"], "[auto, sn, gp, sn+gp]"),
    (["method=piad", "method.rec_loss=l1"], "[l2, perc, perc_l1, rel_perc_l1]"),
    (["method=knn", "method.method=max"], "[largest, mean, median]"),
    (["protocol=tabular", "protocol.top_k_rule=floor"], "[percentile, round]"),
])
def test_a_bad_choice_is_refused_when_composing_naming_the_valid_ones(composer, dirs, overrides, valid):
    with pytest.raises(ConfigCompositionException) as err:
        composer([*dirs, *overrides])
    assert isinstance(err.value.__cause__, ValidationError)
    bad = overrides[-1].split("=", 1)[1]
    assert f"Invalid value '{bad}', expected one of {valid}" in str(err.value.__cause__), err.value.__cause__
    assert overrides[-1] in str(err.value)


def test_a_bad_choice_on_a_grid_files_axis_is_refused_when_expanding(composer, dirs, tmp_path):
    (tmp_path / "configs" / "grid").mkdir(parents=True)
    (tmp_path / "configs" / "grid" / "bad_axis.yaml").write_text(
        "# @package _global_\ngrid:\n  name: bad_axis\n  methods: [ae]\n  classes: [0]\n  seeds: [0]\n"
        "  axes:\n    trainer.precision: [fp32, fp64]\n  method_overrides: {}\n  metric: auroc\n")
    search = [f"hydra.searchpath=[file://{tmp_path / 'configs'}]"]  # a user's own config folder

    def compose(overrides):
        return composer([*search, *overrides])

    overrides = [*dirs, "grid=bad_axis"]
    with pytest.raises(ValueError) as err:
        expand(compose(overrides), overrides, compose)
    message = str(err.value)
    assert message.startswith("grid 'bad_axis': ") and "trainer.precision=fp64" in message, message
    assert message.endswith("Invalid value 'fp64', expected one of [fp32, bf16, fp16]"), message


def test_a_choice_given_by_its_value_composes_as_that_string(composer, dirs):
    cfg = composer([*dirs, "method=ama", "method.lipschitz=sn+gp", "trainer.precision=bf16"])
    assert cfg.method.lipschitz == "sn+gp" and cfg.trainer.precision == "bf16" and str(cfg.trainer.precision) == "bf16"
    (cell,) = _cells(composer, *dirs, "method=ae", "protocol.target_class=0", "trainer.precision=bf16",
                     "grid.seeds=[0]")
    assert type(cell.data["trainer"]["precision"]) is str  # plain data: what cell.yaml and the id hold


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
                         "trainer.zero_stage=3", "method.lr=-1")
    assert len(problems) == 3, problems
    assert any(p.startswith("trainer.batch_size=0") for p in problems)
    assert any(p.startswith("trainer.zero_stage=3") for p in problems)
    assert any(p.startswith("method.lr=-1.0 (method ae) must be > 0") for p in problems)


def test_a_problem_shared_by_many_cells_is_reported_once_with_where(composer, dirs):
    problems = _problems(composer, *dirs, "trainer.batch_size=0")
    assert problems == ["trainer.batch_size=0 must be >= 1 (e.g. trainer.batch_size=64) [all 50 cells]"]
    problems = _problems(composer, *dirs, "+grid.method_overrides.ae=['method.lr=-1']")
    assert problems == ["method.lr=-1.0 (method ae) must be > 0 (e.g. method.lr=0.001) [10 of 50 cells: ae]"]


# ------------------------------------------------------------------------------------------- the one checker
# A cell runs from its cell.yaml, which a user may edit by hand: the trainer and the method's params run the checker
# of the launch again, with the same messages.
def _edited_cell(composer, dirs, **edits):
    from dadf.grid import store

    (cell,) = _cells(composer, *dirs, "method=ae", "protocol.target_class=0", "trainer.steps=2")
    data = copy.deepcopy(cell.data)
    for key, value in edits.items():
        group, field = key.split(".")
        data[group][field] = value
    store.write_cell_config(cell.dir, data)
    return cell


@pytest.mark.parametrize("key, value, message", [
    ("trainer.zero_stage", 3, "trainer.zero_stage=3 must be in 0..2 (e.g. trainer.zero_stage=0)"),
    ("trainer.eval_batch_size", 0, "trainer.eval_batch_size=0 must be >= 1 (e.g. trainer.eval_batch_size=512)"),
    ("trainer.precision", "fp64", "trainer.precision='fp64' must be one of fp32, bf16, fp16"),
    ("method.lr", -1.0, "method.lr=-1.0 (method ae) must be > 0 (e.g. method.lr=0.001)"),
])
def test_a_value_edited_into_cell_yaml_is_refused_as_at_launch(composer, dirs, key, value, message):
    from dadf.grid import store
    from dadf.grid.runner import run_cell
    from dadf.grid.validate import cell_problems

    cell = _edited_cell(composer, dirs, **{key: value})
    assert cell_problems(store.read_cell_data(cell.dir)) == [message]  # the launch's check of these values
    with pytest.raises(ValueError) as err:
        run_cell(cell.dir)
    assert message in str(err.value)
    assert store.read_status(cell.dir)["state"] == store.FAILED


def test_the_batch_split_is_one_rule_that_launch_and_trainer_share(composer, dirs, monkeypatch):
    from omegaconf import OmegaConf

    from dadf import checks
    from dadf.train.loop import Schedule

    assert checks.batch_split(64, 2, 4) is None
    assert checks.batch_split(60, 8, 1) == ("trainer.batch_size=60 must split evenly over 1 process(es) x "
                                            "trainer.accumulate=8 micro-batches: choose a multiple of 8")
    assert checks.batch_split(0, 1, 1) is None  # a batch below 1 is its range's problem
    seen = []

    def rule(batch_size, accumulate, processes):
        seen.append((batch_size, accumulate, processes))
        return "the one batch rule"

    monkeypatch.setattr(checks, "batch_split", rule)
    assert _one(composer, *dirs) == "the one batch rule"
    with pytest.raises(ValueError, match="the one batch rule"):
        Schedule(OmegaConf.create({"batch_size": 64, "accumulate": 2, "steps": 1, "epochs": 1, "eval_every": None}),
                 100, 4)
    assert seen == [(64, 1, 1), (64, 2, 4)]


@pytest.mark.parametrize("method, selection, problem", [
    ("ae", "feature_loss", "trainer.selection='feature_loss' is no criterion of method ae: choose one of last, "
                           "val_auroc"),
    ("ae", "val_auroc", None),
    ("simplex_ae", "train_feature_loss", None),
    ("simplex_ae", "train_val_auroc", "trainer.selection='train_val_auroc' is no criterion of method simplex_ae: "
                                      "choose one of last, val_auroc, feature_loss, train_feature_loss"),
])
def test_selection_names_a_criterion_of_the_method(composer, dirs, method, selection, problem):
    problems = _problems(composer, *dirs, f"method={method}", "protocol.target_class=0", "protocol.val_anomalies=5",
                         "protocol.val_fraction=0.1", f"trainer.selection={selection}")
    assert problems == ([problem] if problem else []), problems


def test_launcher_ranges_are_checked(composer, dirs):
    from dadf.grid.validate import launcher_problems

    assert launcher_problems(composer(dirs).launcher) == []
    lcfg = composer([*dirs, "launcher.cells_per_gpu=0", "launcher.threads_per_worker=0"]).launcher
    assert launcher_problems(lcfg) == [
        "launcher.threads_per_worker=0 must be >= 1 (e.g. launcher.threads_per_worker=1)",
        "launcher.cells_per_gpu=0 must be >= 1 (e.g. launcher.cells_per_gpu=1)"]


# ------------------------------------------------------------------------------------------- method
@pytest.mark.parametrize("overrides, message", [
    (["method=ae", "method.lr=-1"], "method.lr=-1.0 (method ae) must be > 0"),
    (["method=ae", "method.lr=0"], "method.lr=0.0 (method ae) must be > 0"),
    (["method=ae", "method.width=0"], "method.width=0 (method ae) must be >= 1 (e.g. method.width=32)"),
    (["method=aae", "method.critic_lr=-0.1"], "method.critic_lr=-0.1 (method aae) must be > 0"),
    (["method=aae", "method.betas=[0.5]"], "method.betas=[0.5] (method aae) must be a list of 2 numbers"),
    (["method=ama", "method.lr_gamma=0"], "method.lr_gamma=0.0 (method ama) must be > 0"),
    (["method=ama", "method.atypical_fraction=1.0"], "method.atypical_fraction=1.0 (method ama) must be in [0, 1)"),
    (["method=piad", "method.lr_critic=0"], "method.lr_critic=0.0 (method piad) must be > 0"),
    (["method=piad", "method.n_critic=0"], "method.n_critic=0 (method piad) must be >= 1"),
    (["method=simplex_ae", "method.lr=-1"], "method.lr=-1.0 (method simplex_ae) must be > 0"),
    (["method=omasgan", "method.delta=2.0"], "method.delta=2.0 (method omasgan) must be in [0, 1] (e.g. "
                                             "method.delta=0.5)"),
    (["method=omasgan", "method.task_fractions=[0.5,0.5]"], "method.task_fractions=[0.5,0.5] (method omasgan) must "
                                                            "be a list of 4 numbers"),
    (["method=simplex_ae", "method.simplex_n=1"], "method.simplex_n=1 (method simplex_ae) must be >= 2"),
    (["method=ama", "method.simplex_k=1"], "method ama: simplex_k=1: a simplex needs at least 2 points"),
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
def _refused(composer, overrides):
    """expand's refusal, one line per problem."""
    base = composer([o for o in overrides if not o.startswith("method.")])
    with pytest.raises(ValueError) as err:
        expand(base, overrides, composer)
    return str(err.value).splitlines()


def test_override_some_methods_lack_names_them_and_the_fix(composer, dirs):
    lines = _refused(composer, [*dirs, "method.lr=0.01"])
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("method.lr=0.01 does not apply to method(s) ocsvm, iforest, kde of grid 'quickstart'")
    assert "method=ae" in line and "method=deep_svdd" in line
    assert "+grid.method_overrides.ae=[\"method.lr=0.01\"]" in line


def test_each_refused_override_is_one_problem(composer, dirs):
    lines = _refused(composer, [*dirs, "method.lr=0.01", "method.weight_decay=0.1"])
    assert len(lines) == 2, lines
    assert lines[0].startswith("method.lr=0.01 does not apply to method(s) ocsvm, iforest, kde")
    assert lines[1].startswith("method.weight_decay=0.1 does not apply to method(s) ocsvm, iforest, kde")


def test_the_suggested_fix_works(composer, dirs):
    cells = _cells(composer, *dirs, '+grid.method_overrides.ae=["method.lr=0.01"]')
    assert {c.cfg.method.lr for c in cells if c.cfg.method.name == "ae"} == {0.01}
    assert len(cells) == 50


def test_grid_axis_some_methods_lack_is_one_problem_per_axis(composer, dirs):
    lines = _refused(composer, [*dirs, "grid=piad_ablation", "grid.methods=[piad,ae]"])
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
                          "trainer.zero_stage=3", "method.lr=-1")
    assert len(errors) == 3, errors
    assert {e.split("=", 1)[0] for e in errors} == {"trainer.batch_size", "trainer.zero_stage", "method.lr"}


@pytest.mark.slow  # a launch in a fresh interpreter: the fast tier's is the first test of this section
def test_cli_refuses_a_bad_choice_naming_the_valid_ones(tmp_path):
    errors = _cli_refuses(tmp_path, "method=ae", "protocol.target_class=0", "trainer.precision=fp64")
    assert len(errors) == 1 and "Invalid value 'fp64', expected one of [fp32, bf16, fp16]" in errors[0], errors


@pytest.mark.slow  # a launch in a fresh interpreter: the fast tier's is the first test of this section
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
