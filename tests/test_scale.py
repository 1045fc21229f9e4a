"""Grids of thousands of cells: expansion without a config object per cell, cell folders written when a cell is
scheduled (or in one synced pass for SLURM), GPUs given out by the local launcher, ``plan=true`` that prints the
cost and touches nothing, and a forkserver that never outlives its launcher."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run_job
from omegaconf import OmegaConf

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.grid.launch import launch, plan_slots, prepare, visible_gpus


def _quickstart(composer, dirs, *extra):
    overrides = [*dirs, "grid=quickstart", *extra]
    return expand(composer(overrides), overrides, composer), composer(overrides)


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root with its content hash and mtime: equal trees were left untouched."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ expansion

def test_a_large_grid_makes_no_config_object_per_cell(composer, dirs, monkeypatch):
    """Cells are frozen as plain data, one composition per method: building an OmegaConf config per cell made a
    10,000-cell grid wait minutes before its first cell."""
    import dadf.grid.cells as cells_mod

    made = []
    real = cells_mod.OmegaConf.create

    def spy(*args, **kwargs):  # counts the configs dadf builds (Hydra's composition builds its own)
        if sys._getframe(1).f_globals.get("__name__", "").startswith("dadf."):
            made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cells_mod.OmegaConf, "create", spy)
    cells, _ = _quickstart(composer, dirs, "grid.seeds=[0,1,2,3,4,5,6,7]")
    assert len(cells) == 400
    assert len(made) <= 20, f"{len(made)} configs built for {len(cells)} cells"
    first = cells[0]
    assert first.cfg.cell.id == first.id == first.data["cell"]["id"]  # the config is there when asked for


def test_cells_written_from_plain_data_read_back_as_the_frozen_config(composer, dirs, tmp_path):
    cells, _ = _quickstart(composer, dirs, "method=ae", "protocol.target_class=3")
    store.write_cell_config(tmp_path / "c", cells[0].data)
    assert OmegaConf.to_container(store.read_cell_config(tmp_path / "c")) == cells[0].data


def test_local_launch_writes_a_cell_folder_only_when_the_cell_is_scheduled(composer, dirs):
    cells, _ = _quickstart(composer, dirs)
    todo, skipped = prepare(cells, force=False, retry_failed=True)
    assert len(todo) == 50 and not skipped
    assert not any(c.dir.exists() for c in cells), "prepare wrote folders of cells that are not scheduled yet"


def test_slurm_prepare_writes_every_folder_in_one_pass_with_one_sync(composer, dirs, monkeypatch):
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.__setitem__("fsync", calls["fsync"] + 1) or real_fsync(fd))
    monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    cells, _ = _quickstart(composer, dirs)
    todo, _ = prepare(cells, force=False, retry_failed=True, write=True)
    assert len(todo) == 50 and all((c.dir / "cell.yaml").is_file() for c in cells)
    assert all(store.read_status(c.dir)["state"] == store.PENDING for c in cells)
    assert all(store.read_cell_data(c.dir) == c.data for c in cells)
    assert calls == {"fsync": 0, "sync": 1}


# ------------------------------------------------------------------------------------------------ GPUs

def test_visible_gpus_come_from_the_setting_then_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    assert visible_gpus([0, 2]) == ["0", "2"]
    assert visible_gpus([]) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_torch_cells_get_a_gpu_worker_each_and_shallow_cells_cpu_workers(composer, dirs):
    cells, cfg = _quickstart(composer, dirs, "launcher.gpus=[0,1]", "launcher.cells_per_gpu=2")
    slots = plan_slots(cells, cfg.launcher, cores=8)
    assert slots.gpu == ["0", "0", "1", "1"]
    assert 1 <= slots.cpu <= 4  # the cores the GPU workers leave, for the 30 shallow cells
    shallow, _ = _quickstart(composer, dirs, "launcher.gpus=[0,1]", "grid.methods=[kde,ocsvm]")
    assert plan_slots(shallow, cfg.launcher, cores=8).gpu == []  # no torch cell: no GPU worker
    cpu_only = plan_slots(cells, OmegaConf.merge(cfg.launcher, {"gpus": []}), cores=2)
    assert cpu_only.gpu == [] and cpu_only.cpu == 2


@pytest.mark.slow
def test_each_worker_sees_its_own_gpu_and_metrics_record_it(composer, dirs):
    """Two pretended GPUs: every torch cell runs with one of them as its CUDA_VISIBLE_DEVICES, every shallow cell
    with none; metrics.json records which (no CUDA here, so the cells themselves train on the CPU)."""
    cells, cfg = _quickstart(composer, dirs, "grid.methods=[ae,kde]", "grid.classes=[0,1]", "trainer.steps=5",
                             "launcher.gpus=[0,1]", "launcher.workers=1")
    summary = launch(cells, cfg.launcher)
    assert sorted(summary.done) == sorted(c.id for c in cells), summary.failed
    seen = {}
    for c in cells:
        hw = json.loads((c.dir / "metrics.json").read_text())["hardware"]
        seen[c.id] = hw.get("cuda_visible_devices")
    assert {v for k, v in seen.items() if k.startswith("ae-")} <= {"0", "1"}
    assert {v for k, v in seen.items() if k.startswith("kde-")} == {""}


# ------------------------------------------------------------------------------------------------ plan=true

def test_plan_prints_the_cells_and_their_groups_and_touches_nothing(tmp_path):
    runs, shards = tmp_path / "runs", tmp_path / "shards"
    out = run_job("launch_grid.py", "plan=true", f"runs_dir={runs}", f"shards_dir={shards}", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "plan: 50 cells (50 new); 50 to run (local launcher)" in out.stdout
    assert "CPU workers" in out.stdout and "no estimate for" in out.stdout
    assert not runs.exists() and not shards.exists(), "plan=true created folders"


@pytest.mark.slow  # two launches in fresh interpreters, one running a cell in a worker process
def test_plan_estimates_from_finished_cells_and_leaves_the_runs_folder_as_it_was(tmp_path):
    runs, shards = tmp_path / "runs", tmp_path / "shards"
    args = [f"runs_dir={runs}", f"shards_dir={shards}", "method=kde"]
    done = run_job("launch_grid.py", *args, "protocol.target_class=0", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    before = _tree(runs)
    out = run_job("launch_grid.py", *args, "plan=true", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _tree(runs) == before
    assert "plan: 10 cells (9 new, 1 done); 9 to run" in out.stdout
    assert "kde on digits (cpu): ~" in out.stdout and "estimate from 1 finished cell" in out.stdout


def test_plan_warns_when_a_cell_is_longer_than_the_time_limit(composer, dirs, tmp_path, monkeypatch):
    """A finished cell of the same method and dataset that took two hours, and a SLURM limit of one hour."""
    from dadf.grid.launch import launcher_for
    from dadf.grid.plan import make_plan, render

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no SLURM commands: the limits are the launcher's settings
    runs = Path(dirs[0].split("=", 1)[1])
    cells, cfg = _quickstart(composer, dirs, "method=ae", "launcher=slurm", "launcher.time_min=60",
                             "launcher.max_array_size=1001", "launcher.max_submit_jobs=5000")
    old = runs / "older_grid" / "ae-digits-ovr-c0-s9-000000"
    old.mkdir(parents=True)
    (old / "metrics.json").write_text(json.dumps({"wall_time_s": 7300.0, "timing": {"train_s": 7200.0},
                                                  "steps": 300, "hardware": {"device": "cuda:0"}}))
    text = render(make_plan(cells, launcher_for(cfg.launcher), runs))
    assert "ae on digits (cuda): ~7300 s a cell (estimate from 1 finished cell)" in text
    assert "longer than time_min=60: about 2 requeue(s) a cell (20 in all)" in text
    assert "GPU" in text and "20.28 h GPU" in text  # 10 cells x 7300 s x 1 GPU


# ------------------------------------------------------------------------------------------------ forkserver

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_the_forkserver_ends_with_a_launcher_killed_while_it_still_imports(tmp_path):
    """The forkserver imports the training stack while the launcher composes; a launcher killed then (kill -9) must
    not leave it, or the resource tracker waiting on it, behind. A slow module in its preload list holds it in its
    imports for a minute."""
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(60)\n")
    script = tmp_path / "launcher.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from dadf.grid import forkserver
        forkserver.WORKER_PRELOAD = [*forkserver.WORKER_PRELOAD, "slow_import"]
        forkserver.worker_context("forkserver")
        print("started", flush=True)
        time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    launcher = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    helpers: list[int] = []
    try:
        assert launcher.stdout.readline().strip() == "started"
        helpers = _children(launcher.pid)  # the forkserver and the resource tracker
        assert helpers, "no forkserver was started"
        time.sleep(1.0)  # well inside its minute of imports
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in helpers):
            time.sleep(0.2)
        left = [p for p in helpers if _alive(p)]
        assert not left, f"processes {left} outlived their launcher"
    finally:
        for p in [launcher.pid, *helpers]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        launcher.wait()


def test_status_counts_cells_not_scheduled_yet_as_pending(composer, dirs, capsys):
    """A stopped launch leaves cells that no worker took without a folder: they are pending, not missing."""
    from dadf.cli.status import main as status_main
    from dadf.grid.launch import materialise

    cells, _ = _quickstart(composer, dirs, "grid.methods=[kde]", "grid.classes=[0,1,2]")
    grid = cells[0].dir.parent
    store.write_json(grid / "grid.json", {"grid": "quickstart", "cells": [c.id for c in cells], "metrics": ["auroc"]})
    materialise(cells[0])
    assert status_main([str(grid), "--no-queue", "--no-table"]) == 0
    assert f"{grid}: 3 cells   pending 3" in capsys.readouterr().out
