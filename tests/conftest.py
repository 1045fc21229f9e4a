"""Shared test fixtures: Hydra composition of the real configs, isolated runs/ and shards/ folders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dadf.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def composer():
    """compose(overrides) over the package's configs, like launch_grid.py does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        yield lambda overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture
def dirs(tmp_path):
    """runs_dir / shards_dir overrides pointing into a fresh temporary folder."""
    return [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}"]


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
