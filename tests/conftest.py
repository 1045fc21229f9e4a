"""Shared test fixtures: Hydra composition of the real configs, isolated runs/ and shards/ folders."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import __version__ as HYDRA_VERSION
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from dadf.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


_COMPOSED: dict[tuple, DictConfig] = {}  # the session's compositions of group choices, each made once
_STORE_NODES: dict[int, object] = {}  # the ConfigStore nodes a key names: kept alive, so no other takes their id
_PLAIN_SEARCH_PATH: dict[tuple, bool] = {}


def _store_state() -> tuple:
    """The ConfigStore's options as (path, node id): registering or removing an option changes it."""
    nodes = []

    def walk(tree: dict, prefix: str) -> None:
        for name, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}/")
            else:
                nodes.append((f"{prefix}{name}", value))

    walk(ConfigStore.instance().repo, "")
    _STORE_NODES.update((id(node), node) for _, node in nodes)
    return tuple(sorted((path, id(node)) for path, node in nodes))


def _main_adds_no_search_path(loader) -> bool:
    """Whether the main config leaves Hydra's search path as it is (no hydra.searchpath of its own)."""
    sources = tuple((s.provider, s.path) for s in loader.repository.get_sources())
    if sources not in _PLAIN_SEARCH_PATH:
        _, repo = loader._parse_overrides_and_create_caching_repo("config", [])
        _PLAIN_SEARCH_PATH[sources] = tuple((s.provider, s.path) for s in repo.get_sources()) == sources
    return _PLAIN_SEARCH_PATH[sources]


def _composed_from_choices(overrides: list[str]) -> DictConfig | None:
    """Hydra's composition of ``overrides`` made as Hydra makes it: the config of the group choices (composed once a
    session, then copied), and the value overrides applied to it after, by Hydra's own code. None where that does
    not hold: an override of Hydra's settings (a user's config folder, whose files a test may rewrite), a sweep, or
    a Hydra other than 1.3 (whose composition this follows, with its internal functions)."""
    if not HYDRA_VERSION.startswith("1.3."):
        return None
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    loader = GlobalHydra.instance().hydra.config_loader
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    if any(o.is_hydra_override() or o.is_sweep_override() for o in parsed) or not _main_adds_no_search_path(loader):
        return None
    repo = loader.repository
    # Hydra's split (hydra._internal.defaults_list.Overrides): a dict value or a key that is no group is a value
    values = [o for o in parsed if isinstance(o.value(), dict) or not repo.group_exists(o.key_or_group)]
    choices = [o.input_line for o in parsed if not any(o is v for v in values)]
    key = (tuple(choices), tuple((s.provider, s.path) for s in repo.get_sources()), _store_state())
    if key not in _COMPOSED:
        _COMPOSED[key] = compose(config_name="config", overrides=choices)
    cfg = copy.deepcopy(_COMPOSED[key])
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # what compose does last, after the choices
    return cfg


def compose_once(overrides) -> DictConfig:
    """compose(config_name="config", overrides) over the search path in use, with each composition of group choices
    made once a session (a composition costs a fraction of a second and the tests repeat the same few hundred).
    Whatever does not come out that way (a failure included) is composed by Hydra from scratch: its error is
    Hydra's."""
    overrides = list(overrides)
    try:
        cfg = _composed_from_choices(overrides)
    except Exception:
        cfg = None
    return cfg if cfg is not None else compose(config_name="config", overrides=overrides)


@pytest.fixture
def composer():
    """compose(overrides) over the package's configs, like launch_grid.py does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        yield compose_once
    GlobalHydra.instance().clear()


@pytest.fixture
def dirs(tmp_path):
    """runs_dir / shards_dir overrides pointing into a fresh temporary folder."""
    return [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}"]


@pytest.fixture(scope="session")
def _grids_at_defaults(tmp_path_factory) -> tuple[list[str], dict]:
    """The session's runs_dir / shards_dir overrides for the grids expanded at their defaults, and those grids."""
    root = tmp_path_factory.mktemp("grids")
    return [f"runs_dir={root / 'runs'}", f"shards_dir={root / 'shards'}"], {}


@pytest.fixture
def grid_cells(composer, _grids_at_defaults):
    """grid_cells(name): the cells of the grid file ``name`` at its defaults, expanded once a session (runs_dir and
    shards_dir in a folder of the session that nothing writes to; expanding writes nothing). Read them only."""
    from dadf.grid.cells import expand

    dirs, expanded = _grids_at_defaults

    def cells(grid: str) -> list:
        if grid not in expanded:
            overrides = [*dirs, f"grid={grid}"]
            expanded[grid] = expand(composer(overrides), overrides, composer)
        return list(expanded[grid])

    return cells


def run_job(script: str, *args: str, timeout: int = 600, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a jobs/ script (``launch_grid.py``) or an installed command (``dadf-launch``) the way a user does, in a
    fresh interpreter; ``env`` is added to this process's environment."""
    command = ([sys.executable, str(REPO / "jobs" / script)] if script.endswith(".py")
               else [str(Path(sys.executable).parent / script)])  # console scripts sit beside the venv's python
    return subprocess.run([*command, *args], cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (the shared data folder beside the repo)")
    return SHARED_DATA


def run_one_cell(composer, overrides: list[str]) -> tuple:
    """Expand ``overrides`` (which must select one cell), run it with the launcher they name; (cell, metrics.json)."""
    from dadf.grid import store
    from dadf.grid.cells import expand
    from dadf.grid.launch import launch

    cells = expand(composer(overrides), overrides, composer)
    assert len(cells) == 1, [c.id for c in cells]
    summary = launch(cells, composer(overrides).launcher)
    assert summary.done == [cells[0].id], summary.failed
    return cells[0], store.read_json(cells[0].dir / "metrics.json")
