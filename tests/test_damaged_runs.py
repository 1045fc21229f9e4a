"""Grids with damage in them: unreadable cell files, a read-only runs folder, a cell whose process died.

One bad file or one dead process must neither stop the launcher, status.py or the aggregator nor hide the cell:
the cell shows as ``unreadable`` or ``lost`` with a reason that names the file or the process, and the next launch
reruns it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_job
from omegaconf import OmegaConf
from test_aggregate import make_cell, write_manifest

from dadf.grid import aggregate as agg
from dadf.grid import slurm, store
from dadf.grid.cells import Cell
from dadf.grid.launch import materialise, prepare

DAMAGE = {"garbage": b"\x00\xff\xfe\x89PNG not json \xc3\x28", "truncated": None}  # None: cut the file in half


@pytest.fixture
def grid(tmp_path):
    """A finished three-cell grid (kde on digits, classes 0-2), written the way the launcher and trainer do."""
    g = tmp_path / "runs" / "g"
    ids = [make_cell(g, "kde", "digits", "ovr", 0, value=v, target_class=c, num_classes=10)
           for c, v in enumerate([0.91, 0.82, 0.73])]
    write_manifest(g, ids)
    return g, ids


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(DAMAGE[how] if DAMAGE[how] is not None else data[:len(data) // 2])


def table_row(md: str, method: str = "kde") -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith(f"| {method} |"))
    return [x.strip() for x in row.strip("|").split("|")][1:]


def set_running(cell_dir: Path, host: str, pid: int, age_s: float, heartbeat: bool = True) -> None:
    """What a running cell leaves on disk: status.json (state running, host, pid, time) and its heartbeat."""
    t = time.time() - age_s
    store.write_json(cell_dir / "status.json", {"state": "running", "host": host, "pid": pid, "time": t})
    (cell_dir / "metrics.json").unlink(missing_ok=True)
    if heartbeat:
        store.write_json(cell_dir / "heartbeat.json", {"host": host, "pid": pid, "time": t})


# ------------------------------------------------------------------------------------------- A: unreadable files

# the fast tier damages one file, one way; the slow tier every file, both ways
@pytest.mark.parametrize("how", ["garbage", pytest.param("truncated", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["status.json", pytest.param("metrics.json", marks=pytest.mark.slow),
                                  pytest.param("cell.yaml", marks=pytest.mark.slow)])
def test_a_damaged_cell_file_makes_that_cell_unreadable_and_the_grid_goes_on(grid, name, how):
    g, ids = grid
    bad = g / ids[1] / name
    damage(bad, how)

    agg_run = run_job("aggregate.py", str(g))
    assert agg_run.returncode == 0, agg_run.stderr[-3000:]
    assert table_row(agg_run.stdout)[:3] == ["0.910", "unreadable", "0.730"]
    assert f"unreadable: {ids[1]}: {bad} (" in agg_run.stdout  # the footnote names the cell and the file
    assert (g / "table.md").read_text() in agg_run.stdout
    assert f"unreadable: {ids[1]}: {bad} (" in (g / "report.md").read_text()

    st = run_job("status.py", str(g))
    assert st.returncode == 0, st.stderr[-3000:]
    assert table_row(st.stdout)[:3] == ["0.910", "unreadable", "0.730"]
    assert "done 2" in st.stdout and "unreadable 1" in st.stdout
    assert f"UNREADABLE {ids[1]}: {bad} (" in st.stdout


def test_the_unreadable_reason_is_short_and_names_the_error(grid):
    g, ids = grid
    (g / ids[0] / "status.json").write_text('{"state": "do')
    status = store.read_status(g / ids[0])
    assert status["state"] == "unreadable"
    assert status["reason"].startswith(f"unreadable: {g / ids[0] / 'status.json'} (JSONDecodeError: ")
    assert "\n" not in status["reason"] and len(status["reason"]) < 300


def test_prepare_reruns_cells_with_damaged_files_and_skips_the_intact_one(grid):
    g, ids = grid
    extra = make_cell(g, "kde", "digits", "ovr", 1, value=0.5, target_class=0, num_classes=10)
    ids = ids + [extra]
    cells = [Cell(cid, OmegaConf.load(g / cid / "cell.yaml"), g / cid) for cid in ids]
    damage(g / ids[0] / "status.json", "garbage")
    damage(g / ids[1] / "metrics.json", "truncated")
    damage(g / ids[2] / "cell.yaml", "garbage")
    todo, skipped = prepare(cells, force=False, retry_failed=True)
    assert [c.id for c in todo] == ids[:3] and [c.id for c in skipped] == [extra]
    for cell in todo:  # scheduled, each is ready to run again: a readable pending status and the frozen config back
        materialise(cell)
    for cid in ids[:3]:
        assert store.read_status(g / cid)["state"] == "pending"
        assert store.read_cell_config(g / cid).cell.id == cid


@pytest.mark.slow
def test_relaunch_reruns_the_damaged_cells_of_a_real_grid(dirs, tmp_path):
    args = [*dirs, "trainer.steps=5", "grid.methods=[kde]", "grid.classes=[0,1,2]"]
    first = run_job("launch_grid.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    g = tmp_path / "runs" / "quickstart"
    ids = json.loads((g / "grid.json").read_text())["cells"]
    damage(g / ids[0] / "status.json", "garbage")
    damage(g / ids[1] / "metrics.json", "truncated")
    again = run_job("launch_grid.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 cells run, 1 skipped" in again.stdout
    for cid in ids:
        assert store.read_status(g / cid)["state"] == "done" and store.is_done(g / cid)
    assert "unreadable" not in (g / "table.md").read_text()


@pytest.mark.parametrize("how", ["garbage", pytest.param("truncated", marks=pytest.mark.slow)])
def test_a_damaged_grid_json_falls_back_to_the_cell_folders_with_a_warning(grid, how):
    g, ids = grid
    damage(g / "grid.json", how)
    for script in ("status.py", "aggregate.py"):
        r = run_job(script, str(g))
        assert r.returncode == 0, r.stderr[-3000:]
        assert table_row(r.stdout)[:3] == ["0.910", "0.820", "0.730"], script
        assert r.stderr.count(f"unreadable: {g / 'grid.json'} (") == 1, r.stderr  # warned once, naming it
        assert "listing the cell folders instead" in r.stderr
    with pytest.warns(UserWarning, match="grid.json"):
        assert [r.id for r in agg.load_records(g)] == sorted(ids)


# ------------------------------------------------------------------------------------------- B: read-only folders

def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_status_writes_nothing(grid):
    g, _ = grid
    before = _snapshot(g.parent)
    r = run_job("status.py", str(g))
    assert r.returncode == 0 and "| kde |" in r.stdout, r.stderr[-3000:]
    assert _snapshot(g.parent) == before


@pytest.fixture
def read_only_grid(grid, tmp_path):
    """The finished grid copied onto a tmpfs that is then remounted read-only (a real EROFS, which root gets too)."""
    g, ids = grid
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        shutil.copytree(g, mnt / g.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        with pytest.raises(OSError):
            (mnt / g.name / "probe").write_text("x")
        yield mnt / g.name, ids
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_status_and_aggregate_read_a_read_only_grid(read_only_grid):
    g, _ = read_only_grid
    st = run_job("status.py", str(g))
    assert st.returncode == 0, st.stderr[-3000:]
    assert "done 3" in st.stdout and table_row(st.stdout)[:3] == ["0.910", "0.820", "0.730"]
    assert "not writable" not in st.stderr  # it does not even try

    r = run_job("aggregate.py", str(g))
    assert r.returncode == 0, r.stderr[-3000:]
    assert table_row(r.stdout)[:3] == ["0.910", "0.820", "0.730"]
    assert r.stderr.count("is not writable") == 1 and f"{g} is not writable" in r.stderr, r.stderr
    assert "report:" not in r.stdout
    assert not (g / "table.md").exists()


def test_aggregate_function_on_a_read_only_grid_warns_and_returns_the_table(read_only_grid):
    g, _ = read_only_grid
    with pytest.warns(UserWarning, match="is not writable"):
        table, md = agg.aggregate(g)
    assert table.rows == ["kde"] and table_row(md)[:3] == ["0.910", "0.820", "0.730"]
    _, md2 = agg.aggregate(g, write=False)  # write=False does not try, so does not warn
    assert md2 == md


# ------------------------------------------------------------------------------------------- C: lost processes

def test_a_cell_whose_local_process_was_killed_shows_lost(grid):
    g, ids = grid
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        set_running(g / ids[1], socket.gethostname(), proc.pid, age_s=0)
        proc.kill()
    finally:
        proc.wait()  # reaped: a zombie would still answer kill(pid, 0)
    st = run_job("status.py", str(g))
    assert st.returncode == 0, st.stderr[-3000:]
    assert "running 0" in st.stdout and "lost 1" in st.stdout
    line = next(x for x in st.stdout.splitlines() if x.strip().startswith("LOST"))
    assert ids[1] in line and f"pid {proc.pid}" in line and "relaunch to resume from its last checkpoint" in line
    assert table_row(st.stdout)[:3] == ["0.910", "lost", "0.730"]
    rec = next(r for r in agg.load_records(g) if r.id == ids[1])
    assert rec.state == "lost" and f"pid {proc.pid}" in rec.reason


def test_a_cell_whose_process_lives_stays_running(grid):
    g, ids = grid
    set_running(g / ids[1], socket.gethostname(), os.getpid(), age_s=5)
    st = run_job("status.py", str(g))
    assert st.returncode == 0, st.stderr[-3000:]
    assert "running 1" in st.stdout and "lost" not in st.stdout
    assert table_row(st.stdout)[:3] == ["0.910", "running", "0.730"]


def test_a_stale_heartbeat_from_another_host_is_lost_a_fresh_one_is_not(grid):
    g, ids = grid
    set_running(g / ids[0], "node-17", 4242, age_s=3600)  # far past store.STALE_S
    set_running(g / ids[2], "node-18", 4243, age_s=10)
    st = run_job("status.py", str(g))
    assert st.returncode == 0, st.stderr[-3000:]
    assert "running 1" in st.stdout and "lost 1" in st.stdout
    line = next(x for x in st.stdout.splitlines() if x.strip().startswith("LOST"))
    assert ids[0] in line and "node-17" in line and "heartbeat" in line
    assert table_row(st.stdout)[:3] == ["lost", "0.820", "running"]


def test_liveness_falls_back_to_status_json_without_a_heartbeat(grid):
    g, ids = grid
    d = g / ids[0]
    set_running(d, "node-17", 4242, age_s=store.STALE_S + 60, heartbeat=False)  # written by an older version
    assert "node-17" in store.liveness(d, store.read_status(d))
    set_running(d, "node-17", 4242, age_s=10, heartbeat=False)
    assert store.liveness(d, store.read_status(d)) is None
    set_running(d, "node-17", 4242, age_s=store.STALE_S + 60)
    store.write_json(d / "heartbeat.json", {"host": "node-17", "pid": 4242, "time": time.time()})
    assert store.liveness(d, store.read_status(d)) is None  # the heartbeat is newer than status.json
    store.write_json(d / "status.json", {"state": "requeued", "host": "node-17", "pid": 4242, "time": 0})
    assert store.liveness(d, store.read_status(d)) is None  # only a running cell can be lost


def test_the_slurm_queue_decides_for_a_cell_it_knows(grid):
    g, ids = grid
    d = g / ids[0]
    set_running(d, "node-17", 4242, age_s=3600)  # stale heartbeat...
    store.write_json(d / slurm.RECORD, {"jobs": [{"job_id": "77_0", "stdout": "o", "stderr": "e"}]})
    assert slurm.cell_view(d, {"77_0": "RUNNING"})["state"] == "running"  # ...but squeue says it runs
    view = slurm.cell_view(d, {})
    assert view["state"] == "lost" and "no longer in the queue" in view["reason"]
    assert slurm.cell_view(d, None)["state"] == "lost"  # queue not read: the heartbeat decides
