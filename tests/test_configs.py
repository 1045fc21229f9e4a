"""The configs against their schemas (dadf/config.py): every option and every grid of the package's config folder
composes, a value of the wrong type is refused when composing (naming the key), and each default has one source."""
from __future__ import annotations

import dataclasses
import enum as enum_
import os
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from dadf import checks, config
from dadf.config import CONFIG_DIR
from dadf.data import datasets
from dadf.grid import slurm

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(CONFIG_DIR)
DATASETS = sorted(p.stem for p in (CONFIGS / "dataset").glob("*.yaml"))
GRIDS = sorted(p.stem for p in (CONFIGS / "grid").glob("*.yaml"))
STORED = [(group, option) for group in ("trainer", "method", "protocol", "launcher")
          for option in config.options(group)]


@pytest.mark.parametrize("group, option", STORED)
def test_every_stored_option_composes_typed_by_its_schema(composer, group, option):
    cfg = composer([f"{group}={option}"])[group]
    assert OmegaConf.get_type(cfg) is config.schema(group, option)
    if group in ("method", "protocol"):
        assert cfg.name == option


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_file_composes_as_it_reads(composer, name):
    """The dataset files are data choices typed by DatasetConfig: each holds every field, and Hydra composes exactly
    what the file says (code that reads a file raw, like datasets.rebuild_overrides, sees the composed values)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / "dataset" / f"{name}.yaml"))
    cfg = composer([f"dataset={name}"]).dataset
    assert OmegaConf.get_type(cfg) is config.DatasetConfig
    assert list(raw) == [f.name for f in dataclasses.fields(config.DatasetConfig)]
    assert OmegaConf.to_container(cfg) == raw


@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid_composes_against_the_schemas(composer, grid):
    cfg = composer([f"grid={grid}"])
    assert cfg.grid.name == grid
    for group in ("trainer", "method", "protocol", "dataset", "launcher"):
        assert OmegaConf.get_type(cfg[group]) is config.schema(group, cfg[group].name if group != "trainer" else None)


@pytest.mark.parametrize("overrides", [
    ["trainer.batch_size=abc"], ["trainer.steps=1.5"], ["trainer.compile=maybe"],
    ["method=ama", "method.lr=abc"], ["method=omasgan", "method.hidden=[a,b]"], ["method=kde", "method.bandwidth=[1]"],
    ["protocol.val_fraction=abc"], ["protocol=corruption", "protocol.p=abc"], ["protocol.target_class=1.5"],
    ["dataset.size=abc"], ["dataset.top_k_percent=abc"],
    ["launcher.workers=abc"], ["launcher=slurm", "launcher.gpus=abc"], ["launcher=debug", "launcher.raise_errors=2.5"],
])
def test_a_value_of_the_wrong_type_is_refused_when_composing(composer, overrides):
    with pytest.raises(ConfigCompositionException) as err:
        composer(overrides)
    assert isinstance(err.value.__cause__, ValidationError)
    key = overrides[-1].split("=")[0]
    assert f"full_key: {key}" in str(err.value.__cause__) and overrides[-1] in str(err.value)


def test_numbers_keep_their_type_where_either_kind_is_valid(composer):
    """Fields typed int | float keep the value as given: a cell id hashes 5 and 5.0 differently."""
    cfg = composer(["protocol=corruption", "protocol.p=5", "dataset=thyroid", "trainer.select_after=1"])
    assert (cfg.protocol.p, cfg.dataset.top_k_percent, cfg.trainer.select_after) == (5, 2.5, 1)
    assert type(cfg.protocol.p) is int and type(cfg.trainer.select_after) is int


@pytest.mark.parametrize("group, option", STORED)
def test_choices_are_enums_whose_members_are_their_strings(group, option):
    """A field with a closed set of values is a Choice enum (Hydra refuses other values, naming the valid ones); its
    members are named by their values, so ``to_container(enum_to_str=True)`` (cell.yaml, the cell ids) holds the
    very strings a str field held, and plain strings compare equal to the members."""
    for name, hint in typing.get_type_hints(config.schema(group, option)).items():
        for enum in (t for t in typing.get_args(hint) or (hint,) if isinstance(t, type) and issubclass(t, enum_.Enum)):
            assert issubclass(enum, checks.Choice), (option, name)
            assert all(m.name == m.value == str(m) == f"{m}" and m == m.value for m in enum), (option, name)
    plain = OmegaConf.to_container(config.node(group, option), enum_to_str=True)
    assert all(type(v) is str for v in _leaves(plain) if isinstance(v, str)), plain


def _leaves(data):
    if isinstance(data, dict):
        return [x for v in data.values() for x in _leaves(v)]
    if isinstance(data, list):
        return [x for v in data for x in _leaves(v)]
    return [data]


def test_a_choice_is_named_by_its_value():
    with pytest.raises(TypeError, match="named by its value"):
        checks.Choice("Bad", {"fp32": "FP32"})
    spaced = checks.choices("Spaced", ("sn+gp", "a b"))
    assert spaced("sn+gp") is spaced["sn+gp"] and spaced.values() == ("sn+gp", "a b")


@pytest.mark.parametrize("group", ["method", "protocol", "launcher", "trainer", "dataset", "grid"])
def test_an_unknown_option_lists_the_valid_ones(composer, group):
    with pytest.raises(MissingConfigException) as err:
        composer([f"{group}=nope"])
    valid = config.options(group) if group in ("method", "protocol", "launcher", "trainer") else \
        (DATASETS if group == "dataset" else GRIDS)
    assert all(f"\t{option}\n" in f"{err.value}\n" for option in valid), err.value


def test_an_unset_required_parameter_shows_as_missing(composer):
    """A protocol parameter without a default (MISSING in its dataclass, REQUIRED for make_split) is ??? until a
    grid's class axis or an override sets it."""
    cfg = composer(["protocol=semisup"]).protocol
    assert OmegaConf.is_missing(cfg, "p") and OmegaConf.is_missing(cfg, "target_class")
    assert composer(["protocol=semisup", "protocol.p=10"]).protocol.p == 10


# ------------------------------------------------------------------------------------------- one source
@pytest.mark.parametrize("group, option", STORED)
def test_no_yaml_file_shadows_a_stored_option(group, option):
    """A stored option is its dataclass: a file of the same name would hide it (Hydra reads the config folder first)
    and write its defaults twice. A file that extends it (defaults: [slurm, _self_]) has a name of its own."""
    assert not (CONFIGS / group / f"{option}.yaml").exists()


def test_registries_and_schemas_agree():
    from dadf.data import protocols
    from dadf.methods import available, get_method

    assert config.options("method") == available()
    for name in available():
        assert dataclasses.is_dataclass(get_method(name).params_class)
    for name in config.options("protocol"):  # make_split's parameters are what protocol=<name> composes
        node, spec = config.node("protocol", name), protocols.get(name).params
        assert set(node) - {"name", "secondary"} == set(spec), name
        required = {k for k, v in spec.items() if v is protocols.REQUIRED}
        assert required == {k for k in spec if OmegaConf.is_missing(node, k)}, name
        assert all(node[k] == v for k, v in spec.items() if v is not protocols.REQUIRED), name


def test_slurm_resources_and_launcher_keys_come_from_the_schema(composer):
    launcher = composer(["launcher=slurm"]).launcher
    slurm.check_config(launcher)
    assert slurm.LAUNCHER_KEYS == list(launcher.keys())
    defaults = slurm.Resources()
    assert {k: getattr(defaults, k) for k in slurm.RESOURCE_KEYS} == {k: launcher[k] for k in slurm.RESOURCE_KEYS}


def test_the_dataset_folder_is_the_config_folders():
    assert datasets.PACKAGE_DATASETS == CONFIGS / "dataset"


def test_identity_leaves_out_exactly_the_marked_fields():
    """What says where things are or how they are watched. Changing this set changes every cell id."""
    def unhashed(schema):
        return {f.name for f in dataclasses.fields(schema) if f.metadata.get("identity") is False}

    assert unhashed(config.DatasetConfig) == {"root", "download"}
    assert unhashed(config.TrainerConfig) == {"progress", "num_threads", "log_every", "device", "sync_every",
                                              "data_on_device", "tracker", "memory_budget", "data_workers"}
    trainer = OmegaConf.to_container(OmegaConf.structured(config.TrainerConfig))
    # a field added later (``added``) joins the identity only when its value differs from what the code did before
    as_before = {f.name for f in dataclasses.fields(config.TrainerConfig)
                 if "before" in f.metadata and trainer[f.name] == f.metadata["before"]}
    assert as_before == {"sync_bn"}
    assert set(config.hashed("trainer", trainer)) == set(trainer) - unhashed(config.TrainerConfig) - as_before


def test_register_again_changes_nothing(composer):
    before = OmegaConf.to_container(composer(["method=ama", "launcher=slurm"]))
    config.register()
    assert OmegaConf.to_container(composer(["method=ama", "launcher=slurm"])) == before


@pytest.mark.slow
def test_a_built_wheel_ships_configs_and_launches_outside_the_checkout(tmp_path):
    """configs/ at the checkout's root is the one copy; the wheel carries it as dadf.configs, so an installed dadf
    composes every grid and runs a cell from any folder."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("dadf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [p for p in CONFIGS.rglob("*.yaml") if f"dadf/configs/{p.relative_to(CONFIGS).as_posix()}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import dadf.config, dadf.cli.launch, sys; print(dadf.config.CONFIG_DIR); sys.argv = ['dadf-launch', "
              "'grid.methods=[kde]', 'grid.classes=[3]', 'runs_dir=runs', 'shards_dir=shards']; dadf.cli.launch.main()")
    r = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == str(site / "dadf" / "configs")
    assert "1 cells run" in r.stdout and (elsewhere / "runs" / "quickstart" / "table.md").is_file()


