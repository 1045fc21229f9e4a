"""Grids on the real dev SLURM cluster (slurm/up.sh): arrays, preemption and requeue, relaunch, status, DDP cells.

Everything is submitted at once by the module fixture so the cells run side by side; each test then checks its
part. Cells are tiny (synthetic data, the AE baseline, CPU).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .slurm_helpers import REPO, cell_dirs, job_ids, launch, run_job, state, wait_finished, wait_until

pytestmark = pytest.mark.slurm  # needs the dev cluster (conftest.py brings it up)

# CPU cells: launcher.gpus=0 (cells of torch methods ask for a GPU by default)
COMMON = ["launcher.job_name=dadf-test", "dataset=synthetic", "grid.classes=[0]", "trainer.batch_size=16",
          "trainer.log_every=100", "launcher.gpus=0", "launcher.cpus=1", "launcher.mem_gb=1", "launcher.time_min=15"]
# Long enough (tens of seconds) that a signal lands mid-training; the same config in three runs folders.
LONG = [*COMMON, "grid.methods=[ae]", "trainer.steps=4000", "trainer.checkpoint_every=100000"]
GRID = ["launcher.job_name=dadf-test", "dataset=synthetic", "grid.methods=[ae,iforest,deep_svdd]", "grid.classes=[0,1]",
        "trainer.steps=200", "trainer.batch_size=16", "launcher.gpus=0", "launcher.cpus=1", "launcher.mem_gb=1",
        "launcher.time_min=15",
        # deep_svdd's cells fail at run time (NonFiniteLoss), after validation has let them through
        "launcher.resources={iforest:{cpus:2}}", "+grid.method_overrides.deep_svdd=['method.lr=1e30']"]


def _popen_launch(runs: Path, shards: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "jobs" / "launch_grid.py"), "launcher=slurm", f"runs_dir={runs}",
           f"shards_dir={shards}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def grids(slurm_cluster):
    # Not pytest's tmp_path: other pytest sessions on the machine prune /tmp/pytest-of-<user>/ while jobs still run.
    root = Path(tempfile.mkdtemp(prefix="dadf-slurm-tests-"))
    try:
        yield _submit_all(root)
    finally:
        subprocess.run(["scancel", "--name=dadf-test"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _read_status(cell: Path) -> dict:
    try:
        return json.loads((cell / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _log_lines(cell: Path) -> int:
    try:
        return len((cell / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _watch_time_limited_cell(cell: Path, seen: dict) -> None:
    """Record every status the time-limited cell passes through (``seen["states"]``) until it is done or failed.

    A run of the cell is paused (SIGSTOP, no CPU used) as soon as it has logged a training step, until its time
    limit's warning signal is due (80 s after the job started): the signal then lands mid-training whatever the
    machine's load. SLURM itself sends SIGCONT with the signal, so the run may go on before then; as soon as its
    status moves on it is let go. A run that got the signal during start-up is requeued too; the next run is then
    paused in turn, until one has been requeued mid-training. A requeued status lasts the ~12 s SLURM takes to
    restart the job, far longer than the 0.05 s between polls.
    """
    states: list[tuple] = []
    seen["states"] = states

    def observe() -> dict:
        status = _read_status(cell)
        key = (status.get("state"), status.get("step"), status.get("pid"))
        if status and (not states or states[-1][:3] != key):
            states.append((*key, status.get("reason")))
        return status

    paused: set[int] = set()
    lines_at_start: dict[int, int] = {}
    deadline = time.time() + 900
    try:
        while time.time() < deadline:
            status = observe()
            if status.get("state") in ("done", "failed"):
                return
            pid = status.get("pid")
            if status.get("state") == "running" and pid not in paused and not _requeued_mid_training(states):
                lines_at_start.setdefault(pid, _log_lines(cell))
                if _log_lines(cell) > lines_at_start[pid]:  # this run is in its step loop
                    paused.add(pid)
                    due = _signal_due(job_ids(cell)[0])
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                    try:  # a run caught on its way out (its status moves on) is let go at once
                        while time.time() < due and _same_run(observe(), pid):
                            time.sleep(0.05)
                    finally:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGCONT)  # SLURM's SIGUSR2 is pending (or comes now): the loop saves
            time.sleep(0.05)
        raise AssertionError(f"the time-limited cell did not finish in 900 s: {states}")
    except BaseException as e:  # noqa: BLE001 -- reported by the test
        seen["error"] = repr(e)


def _requeued_mid_training(states: list[tuple]) -> list[tuple]:
    return [s for s in states if s[0] == "requeued" and s[1] is not None and 0 < s[1] < 4000]


def _same_run(status: dict, pid: int) -> bool:
    return status.get("state") == "running" and status.get("pid") == pid


def _signal_due(job: str) -> float:
    """When the time limit's warning signal is surely sent: 80 s after the job started (it comes 45-75 s after)."""
    start = subprocess.run(["squeue", "-h", "-j", job, "-o", "%S"], capture_output=True, text=True).stdout.strip()
    started = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) if start[:2] == "20" else time.time()
    return started + 80


def _submit_all(root: Path) -> dict:
    shards = root / "shards"
    # Shards first (one builder), then every grid submitted in parallel.
    r = run_job("build_shards.py", "dataset=synthetic", f"shards_dir={shards}")
    assert r.returncode == 0, r.stderr[-3000:]
    specs = {
        "grid": (root / "grid", GRID),
        "preempt": (root / "preempt", LONG),
        "reference": (root / "reference", LONG),
        # A real time limit: 2 min, warning 45 s before (SLURM sends it up to ~30 s earlier still: 45-75 s after
        # the start); submitit counts each as a timeout (time_min <= 10).
        "timelimit": (root / "timelimit", [*LONG, "launcher.time_min=2", "launcher.signal_delay_s=45",
                                           "launcher.max_num_timeout=15"]),
        "ddp": (root / "ddp", [*COMMON, "grid.methods=[ae]", "trainer.steps=40", "launcher.tasks=2"]),
    }
    procs = {name: _popen_launch(runs, shards, *ov) for name, (runs, ov) in specs.items()}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name}: launch_grid.py failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        grid_dir = specs[name][0] / "quickstart"
        out[name] = {"dir": grid_dir, "cells": cell_dirs(grid_dir), "stdout": stdout, "runs": specs[name][0],
                     "overrides": specs[name][1], "shards": shards}
        if name == "timelimit":  # start watching it at once: it must not finish before the signal
            seen: dict = {}
            thread = threading.Thread(target=_watch_time_limited_cell, args=(out[name]["cells"][0], seen), daemon=True)
            thread.start()
            out[name].update(seen=seen, thread=thread)
    return out


def test_submitting_returns_at_once_with_job_ids_and_the_status_command(grids):
    g = grids["grid"]
    out = g["stdout"]
    # two resource groups (iforest asks for 2 CPUs) -> two arrays
    assert out.count("submitted job ") == 2, out
    assert "6 submitted (slurm launcher)" in out and "job ids: " in out
    assert f"runs folder: {g['dir'].resolve()}" in out and "jobs/status.py" in out
    assert all(len(job_ids(c)) == 1 for c in g["cells"])
    assert {job_ids(c)[0].split("_")[0] for c in g["cells"]} == {
        line.split()[2] for line in out.splitlines() if line.startswith("submitted job ")}


def test_relaunch_while_queued_or_running_submits_nothing(grids):
    g = grids["grid"]
    # retry_failed=false: the deep_svdd cells fail within seconds, and a default relaunch rightly retries them.
    again = launch(g["runs"], g["shards"], *g["overrides"], "retry_failed=false")
    assert "0 submitted" in again.stdout, again.stdout
    assert all(len(job_ids(c)) == 1 for c in g["cells"])


def test_status_works_while_the_grid_runs(grids):
    g = grids["preempt"]
    r = run_job("status.py", str(g["dir"]))
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "1 cells" in first and "done" in first and "failed" in first
    assert any(s in first for s in ("queued 1", "pending 1", "running 1", "done 1")), first


def _log_steps(cell: Path) -> int:
    try:
        lines = (cell / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
        return 0


def _same_results(a: Path, b: Path) -> None:
    sa, sb = np.load(a / "scores.npz"), np.load(b / "scores.npz")
    np.testing.assert_array_equal(sa["scores"], sb["scores"])
    ma, mb = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (a, b))
    assert ma == mb


def test_scancel_usr2_mid_training_requeues_and_ends_like_an_uninterrupted_run(grids):
    cell = grids["preempt"]["cells"][0]
    ref = grids["reference"]["cells"][0]
    steps_before = wait_until(lambda: state(cell) == "running" and _log_steps(cell) >= 200 and _log_steps(cell),
                              180, "the preempted cell to train 200 steps")
    job = job_ids(cell)[0]
    pid = json.loads((cell / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGSTOP)  # held mid-training while scancel's signal is on its way, whatever the load
    try:
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
        time.sleep(2)
    finally:
        os.kill(pid, signal.SIGCONT)
    status = wait_until(lambda: state(cell) == "requeued" and json.loads((cell / "status.json").read_text()),
                        120, "the cell to be marked requeued", every=0.1)
    assert steps_before <= (status.get("step") or -1) < 4000, status  # mid-training
    wait_finished([cell, ref], 300)
    assert state(cell) == "done" and state(ref) == "done"
    _same_results(cell, ref)
    log = Path(json.loads((cell / "slurm.json").read_text())["jobs"][0]["stdout"]).read_text()
    assert f"Requeued job {job}" in log
    assert job_ids(cell) == [job]  # requeued by SLURM under the same id, never resubmitted by the launcher


def test_a_real_time_limit_signals_checkpoints_and_requeues(grids):
    """--time=2 with --signal=USR2@45: a run is paused until the signal is due (see _watch_time_limited_cell)."""
    cell = grids["timelimit"]["cells"][0]
    ref = grids["reference"]["cells"][0]
    grids["timelimit"]["thread"].join(timeout=960)
    seen = grids["timelimit"]["seen"]
    assert "error" not in seen, seen
    states = seen["states"]
    # saved mid-training on the signal, then marked requeued (not failed), and finished by a later run of the job
    mid = _requeued_mid_training(states)
    assert mid and "SIGUSR2" in mid[0][3], states
    assert "failed" not in [s[0] for s in states] and states[-1][0] == "done", states
    wait_finished([ref], 300)
    _same_results(cell, ref)
    log = Path(json.loads((cell / "slurm.json").read_text())["jobs"][0]["stdout"]).read_text()
    assert "Requeued job" in log and "timed-out" in log
    assert len(job_ids(cell)) == 1


def test_failing_cells_are_reported_and_the_others_finish(grids):
    g = grids["grid"]
    wait_finished(g["cells"], 300)
    states = {c.name: state(c) for c in g["cells"]}
    failed = [c for c in g["cells"] if states[c.name] == "failed"]
    assert sorted(c.name.split("-")[0] for c in failed) == ["deep_svdd", "deep_svdd"], states
    assert sum(s == "done" for s in states.values()) == 4, states
    r = run_job("status.py", str(g["dir"]))
    assert r.returncode == 0, r.stderr
    assert "done 4" in r.stdout and "failed 2" in r.stdout
    for c in failed:
        assert f"FAILED  {c.name}: " in r.stdout and "NonFiniteLoss" in r.stdout
        log = json.loads((c / "slurm.json").read_text())["jobs"][0]["stderr"]
        assert f"log: {log}" in r.stdout and Path(log).exists()
    assert "| ae |" in r.stdout and "| iforest |" in r.stdout  # the table so far


def test_relaunch_after_the_run_submits_nothing_twice(grids):
    g = grids["grid"]
    wait_finished(g["cells"], 300)
    again = launch(g["runs"], g["shards"], *g["overrides"], "retry_failed=false")
    assert "6 already finished" in again.stdout and "0 submitted" in again.stdout, again.stdout
    for name in ("preempt", "timelimit"):
        h = grids[name]
        wait_finished(h["cells"], 400)
        again = launch(h["runs"], h["shards"], *h["overrides"])
        assert "0 submitted" in again.stdout, again.stdout
        assert len(job_ids(h["cells"][0])) == 1


def test_two_task_cell_runs_ddp(grids):
    cell = grids["ddp"]["cells"][0]
    wait_finished([cell], 300)
    assert state(cell) == "done", json.loads((cell / "status.json").read_text())
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["hardware"]["num_processes"] == 2


def test_a_lost_job_is_shown_and_resubmitted(grids):
    """A job that ends without recording an end state (here: scancel'ed while running) shows as lost in status.py,
    and a relaunch submits the cell again, which resumes from its folder."""
    g = grids["ddp"]
    cell = g["cells"][0]
    wait_finished([cell], 300)
    # Make the cell look like it was killed mid-run: status running, its job gone from the queue.
    status = json.loads((cell / "status.json").read_text())
    (cell / "status.json").write_text(json.dumps({**status, "state": "running"}))
    (cell / "metrics.json").unlink()
    r = run_job("status.py", str(g["dir"]), "--no-table")
    assert r.returncode == 0 and "lost 1" in r.stdout and "LOST" in r.stdout, r.stdout
    again = launch(g["runs"], g["shards"], *g["overrides"])
    assert "1 submitted" in again.stdout, again.stdout
    assert len(job_ids(cell)) == 2
    wait_finished([cell], 300)
    assert state(cell) == "done" and (cell / "metrics.json").exists()


def test_a_refused_submission_is_a_clear_error(slurm_cluster, tmp_path):
    r = run_job("launch_grid.py", "launcher=slurm", f"runs_dir={tmp_path}/runs", f"shards_dir={tmp_path}/shards",
                "dataset=synthetic", "grid.methods=[iforest]", "grid.classes=[0]", "launcher.partition=nope")
    assert r.returncode != 0
    assert "sbatch refused the array for 1 cells" in r.stderr and "partition" in r.stderr and "nope" in r.stderr
