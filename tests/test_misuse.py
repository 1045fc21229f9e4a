"""The grid under ordinary misuse: stopping, relaunching, two launches at once, damaged checkpoints, a full disk,
and exit codes. Real launcher processes, real signals, real files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_job

from dadf.grid import store
from dadf.train import checkpoint

LONG = ["trainer.steps=3000", "trainer.batch_size=16", "trainer.log_every=1", "trainer.checkpoint_every=5",
        "grid.methods=[ae]"]


def _start(*args: str) -> subprocess.Popen:
    """launch_grid.py in a process group of its own, as a shell runs a foreground job (Ctrl-C goes to the group)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "launch_grid.py"), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, timeout: float = 180, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _grid(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "quickstart"


def _cells(tmp_path: Path) -> list[Path]:
    """The grid's cells, started or not (a cell's folder is written when a worker takes it)."""
    return sorted(_grid(tmp_path) / cid for cid in store.cell_ids(_grid(tmp_path)))


def _training(tmp_path: Path) -> list[Path]:
    """Cells that have written a checkpoint (so they are inside the step loop)."""
    return [c for c in _cells(tmp_path) if list((c / "checkpoints").glob("step-*"))]


def _worker_pids(launcher_pid: int) -> list[int]:
    """Every process below the launcher: its forkserver (and resource tracker) and the workers forked from it."""
    found, todo = [], [launcher_pid]
    while todo:
        out = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout
        children = [int(p) for p in out.split()]
        found += children
        todo += children
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent has not collected it yet
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _dadf_workers_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if _alive(p)]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_the_local_launcher_requeues_running_cells_and_starts_no_more(dirs, tmp_path, sig, code):
    args = [*dirs, *LONG, "grid.classes=[0,1,2]", "launcher.workers=1"]  # one running cell, two queued
    proc = _start(*args)
    _wait_for(lambda: _training(tmp_path), what="a cell to train")
    workers = _worker_pids(proc.pid)
    assert workers, "the local launcher runs cells in worker processes"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the whole foreground group
    else:
        os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-3000:]
    # the launcher joined its workers before it exited (multiprocessing's resource tracker may take a moment more)
    _wait_for(lambda: not _dadf_workers_alive(workers), timeout=15, what="the launcher's children to exit")
    states = {c.name: store.read_status(c)["state"] for c in _cells(tmp_path)}
    assert list(states.values()).count(store.REQUEUED) == 1, states  # the running cell, with a checkpoint
    assert list(states.values()).count(store.PENDING) == 2, states   # queued cells did not start
    requeued = next(c for c in _cells(tmp_path) if store.read_status(c)["state"] == store.REQUEUED)
    step = store.read_status(requeued)["step"]
    assert checkpoint.complete_checkpoints(requeued / "checkpoints")[-1][0] == step
    assert "requeued" in out and "launch the same command again to resume" in out


def test_ctrl_c_while_the_grid_is_composed_exits_130_and_leaves_no_process(dirs, tmp_path):
    """Ctrl-C before any cell started (the launcher still imports and composes; its forkserver is up already)."""
    proc = _start(*dirs, "grid.classes=[0]", "grid.methods=[ae]")
    _wait_for(lambda: _worker_pids(proc.pid), what="the launcher's forkserver to start")
    children = _worker_pids(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    _wait_for(lambda: not _dadf_workers_alive(children), timeout=15, what="the launcher's children to exit")


@pytest.mark.slow
def test_a_killed_local_launcher_leaves_no_worker_behind(dirs, tmp_path):
    proc = _start(*dirs, *LONG, "grid.classes=[0]")
    _wait_for(lambda: _training(tmp_path), what="a cell to train")
    workers = _worker_pids(proc.pid)
    # the workers fork from a forkserver, which must go with the launcher too (then the kernel tells the workers)
    assert any("forkserver" in _cmdline(p) for p in workers), [_cmdline(p) for p in workers]
    assert len(workers) >= 2, [_cmdline(p) for p in workers]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_for(lambda: not _dadf_workers_alive(workers), timeout=60, what="the forkserver and orphaned worker to exit")
    cell = _cells(tmp_path)[0]
    # The worker heard its parent die (SIGTERM from the kernel): it saved a checkpoint and recorded it.
    status = store.read_status(cell)
    assert status["state"] == store.REQUEUED, status


@pytest.mark.slow
def test_sigterm_to_the_debug_launcher_saves_the_cell_and_runs_no_more(dirs, tmp_path):
    proc = _start(*dirs, *LONG, "grid.classes=[0,1]", "launcher=debug")
    _wait_for(lambda: _training(tmp_path), what="a cell to train")
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    states = sorted(store.read_status(c)["state"] for c in _cells(tmp_path))
    assert states == [store.PENDING, store.REQUEUED], states


@pytest.mark.slow
def test_a_stopped_grid_resumes_on_the_next_launch_with_identical_results(dirs, tmp_path):
    short = [*dirs, "trainer.steps=120", "trainer.batch_size=16", "trainer.log_every=1", "trainer.checkpoint_every=5",
             "grid.methods=[ae]", "grid.classes=[0]"]
    ref = run_job("launch_grid.py", *[a.replace(str(tmp_path), str(tmp_path / "ref")) for a in short])
    assert ref.returncode == 0, ref.stdout[-2000:]
    proc = _start(*short)
    _wait_for(lambda: _training(tmp_path), what="a cell to train")
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    again = run_job("launch_grid.py", *short)
    assert again.returncode == 0, again.stdout[-2000:]
    cell = _cells(tmp_path)[0]
    ref_cell = next((tmp_path / "ref" / "runs" / "quickstart").glob("ae-*"))
    np.testing.assert_array_equal(np.load(cell / "scores.npz")["scores"], np.load(ref_cell / "scores.npz")["scores"])
    # 9: the log follows the checkpoint: one line per step, no step twice, however often it was stopped
    steps = [json.loads(line)["step"] for line in (cell / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121)), steps[:20]


@pytest.mark.slow
def test_a_second_launch_of_the_same_grid_says_who_holds_it(dirs, tmp_path):
    proc = _start(*dirs, *LONG, "grid.classes=[0]")
    try:
        _wait_for(lambda: _training(tmp_path), what="a cell to train")
        second = run_job("launch_grid.py", *dirs, *LONG, "grid.classes=[0]")
        assert second.returncode == 3, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"pid {proc.pid}" in second.stderr and "launcher.wait=true" in second.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_a_cell_is_never_run_by_two_processes(composer, dirs, tmp_path):
    """Two grids may share a cell, or a user may start jobs/train.py by hand: the cell's lock says no."""
    from dadf.grid.cells import expand
    from dadf.grid.launch import launch
    from dadf.grid.runner import CellBusy, run_cell

    overrides = [*dirs, "trainer.steps=3000", "trainer.batch_size=16", "trainer.checkpoint_every=5",
                 "grid.methods=[ae]", "grid.classes=[0]", "launcher=debug"]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    by_hand = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train.py"), str(cell.dir), "--no-progress"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: list((cell.dir / "checkpoints").glob("step-*")), what="jobs/train.py to train")
        with pytest.raises(CellBusy, match=f"pid {by_hand.pid}"):
            run_cell(cell.dir)
        summary = launch([cell], composer(overrides).launcher)
        assert list(summary.busy) == [cell.id] and not summary.done and not summary.complete
        assert store.read_status(cell.dir)["state"] == store.RUNNING  # untouched
        hb = json.loads((cell.dir / "heartbeat.json").read_text())
        assert hb["pid"] == by_hand.pid and time.time() - hb["time"] < store.HEARTBEAT_S + 30
    finally:
        by_hand.kill()
        by_hand.wait()


def test_a_corrupt_newest_checkpoint_is_set_aside_and_the_older_one_used(composer, dirs, tmp_path):
    from dadf.grid.cells import expand
    from dadf.grid.launch import launch

    overrides = [*dirs, "trainer.steps=30", "trainer.batch_size=16", "trainer.checkpoint_every=10",
                 "trainer.keep_checkpoints=5", "launcher=debug", "grid.methods=[deep_svdd]", "grid.classes=[1]"]
    cell = expand(composer(overrides), overrides, composer)[0]
    launch([cell], composer(overrides).launcher)
    uninterrupted = np.load(cell.dir / "scores.npz")["scores"]
    # The job "died" after step 20 and its newest checkpoint was damaged on disk afterwards.
    import shutil

    shutil.rmtree(cell.dir / "checkpoints" / "step-00000030")
    (cell.dir / "checkpoints" / "step-00000020" / "state.pt").write_bytes(b"\0" * 100)
    (cell.dir / "metrics.json").unlink()
    store.write_status(cell.dir, store.FAILED, reason="killed")
    with pytest.warns(UserWarning, match=r"step-00000020/state.pt cannot be read.*set aside"):
        summary = launch([cell], composer(overrides).launcher)
    assert summary.done == [cell.id], summary.failed
    np.testing.assert_array_equal(np.load(cell.dir / "scores.npz")["scores"], uninterrupted)
    assert list((cell.dir / "checkpoints").glob("corrupt-step-00000020-*"))


@pytest.mark.slow
def test_the_launcher_exits_non_zero_when_cells_fail_and_lists_them_last(dirs):
    r = run_job("launch_grid.py", *dirs, "trainer.steps=5", "grid.methods=[ae]", "grid.classes=[0,1]",
                "method.lr=1e30")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    tail = r.stdout.strip().splitlines()
    assert tail[-3].startswith("2 cell(s) FAILED") and "NonFiniteLoss" in tail[-1], tail[-5:]


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({r.stderr.strip()}); needs root with CAP_SYS_ADMIN")


@pytest.mark.slow
def test_a_full_disk_is_reported_on_the_cell_and_stops_the_launch_cleanly(dirs, tmp_path):
    runs = tmp_path / "small"
    _tmpfs(runs, "200k")
    try:
        # ae's checkpoints (~240 kB each) do not fit; the cell's small files do
        r = run_job("launch_grid.py", f"runs_dir={runs}", dirs[1], "trainer.steps=40", "trainer.checkpoint_every=10",
                    "grid.methods=[ae]", "grid.classes=[0,1]", "launcher.workers=1")
        out = r.stdout + r.stderr
        assert r.returncode == 1, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert "disk full" in r.stdout.splitlines()[-1] or "disk full" in out.splitlines()[-1], out[-2000:]
        cells = [runs / "quickstart" / cid for cid in store.cell_ids(runs / "quickstart")]
        states = [store.read_status(c) for c in cells]
        assert [s["state"] for s in states].count(store.FAILED) == 1, states
        assert "disk full" in next(s for s in states if s["state"] == store.FAILED)["reason"]
        assert [s["state"] for s in states].count(store.PENDING) == 1  # the launch stopped: the next did not start
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def test_the_config_hash_is_frozen_in_cell_yaml(composer, dirs):
    from dadf.grid.cells import expand, identity
    from dadf.provenance import config_hash

    cell = expand(composer(dirs), dirs, composer)[0]
    assert cell.cfg.cell.config_hash == config_hash(identity(cell.cfg))
    assert cell.id.endswith(cell.cfg.cell.config_hash[:6])


def test_the_training_layer_imports_nothing_from_the_grid_layer():
    code = ("import sys, dadf.train.loop, dadf.train.checkpoint, dadf.train.preemption; "
            "print(sorted(m for m in sys.modules if m.startswith('dadf.grid')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]", out


def test_accumulate_zero_names_the_key():
    from omegaconf import OmegaConf

    from dadf.train.loop import Schedule

    with pytest.raises(ValueError, match=r"trainer.accumulate=0 must be >= 1"):
        Schedule(OmegaConf.create({"batch_size": 64, "accumulate": 0, "steps": 1, "epochs": 1, "eval_every": None,
                                   "sync_every": 1}), 100, 1)
