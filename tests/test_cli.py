"""The commands: installed console scripts and the jobs/ scripts run the same code, the jobs/ scripts refuse another
checkout's dadf, and notes reach the user through the dadf logger."""
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_job

COMMANDS = ["dadf-launch", "dadf-train", "dadf-status", "dadf-aggregate", "dadf-build-shards"]
ONE_CELL = ["grid.methods=[kde]", "grid.classes=[3]"]


def test_every_console_script_is_installed():
    missing = [c for c in COMMANDS if not (Path(sys.executable).parent / c).exists()]
    assert not missing, f"{missing} are not installed beside {sys.executable}: pip install -e . in this checkout"
    for command in ("dadf-train", "dadf-status", "dadf-aggregate"):  # dadf-launch and dadf-build-shards run below
        r = run_job(command, "--help", timeout=120)
        assert r.returncode == 0 and command.removeprefix("dadf-") in r.stdout, r.stderr[-2000:]


@pytest.mark.slow  # two launches in fresh interpreters, each running the cell in a worker process
def test_dadf_launch_from_any_folder_runs_the_grid_that_the_script_runs(tmp_path):
    dirs = [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}"]
    first = run_job("dadf-launch", *dirs, *ONE_CELL, cwd=tmp_path)  # the configs are found from outside the checkout
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 cells run, 0 skipped" in first.stdout
    again = run_job("launch_grid.py", *dirs, *ONE_CELL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 cells run, 1 skipped" in again.stdout
    assert (tmp_path / "runs" / "quickstart" / "table.md").read_text() in again.stdout  # the same table


def test_notes_go_to_stderr_as_plain_lines_results_to_stdout(composer, tmp_path):
    from dadf.data.datasets import ensure_shards

    ensure_shards(composer(["dataset=digits"]).dataset, tmp_path / "shards")
    kept = run_job("dadf-build-shards", "dataset=digits", f"shards_dir={tmp_path / 'shards'}")
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "classes" in kept.stdout and "kept the shards" not in kept.stdout
    assert kept.stderr == f"kept the shards already in {tmp_path / 'shards' / 'digits'}; force=true rebuilds them\n"


def test_a_jobs_script_refuses_another_checkouts_dadf(tmp_path):
    other = tmp_path / "other-checkout"
    shutil.copytree(REPO / "dadf", other / "dadf", ignore=shutil.ignore_patterns("__pycache__"))
    r = run_job("status.py", str(tmp_path), env={"PYTHONPATH": str(other)}, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"status.py is in the checkout {REPO}, but {sys.executable} imports dadf from {other / 'dadf'}" in r.stderr
    assert f"cd {REPO} && pip install -e ." in r.stderr and f"the checkout that holds {other / 'dadf'}" in r.stderr


def test_a_users_own_config_folder_adds_grids_through_hydras_search_path(tmp_path):
    grid = tmp_path / "my_configs" / "grid" / "my_grid.yaml"
    grid.parent.mkdir(parents=True)
    grid.write_text("# @package _global_\ndefaults:\n  - override /dataset: digits\n  - override /protocol: ovr\n"
                    "grid:\n  name: my_grid\n  methods: [kde]\n  classes: [2]\n  seeds: [0]\n  axes: {}\n"
                    "  method_overrides: {}\n  metric: auroc\n")
    r = run_job("launch_grid.py", f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", "grid=my_grid",
                f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 cells run" in r.stdout and (tmp_path / "runs" / "my_grid" / "table.md").exists()
