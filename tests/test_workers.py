"""Small cells fast and clean: threads that fit the cores, recorded per cell; cells run one after another in one
process leave no state behind; running a cell imports only what it needs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.grid.launch import fit_workers, launch, prepare

TINY = ["trainer.steps=20", "trainer.batch_size=16"]


def _cells(composer, overrides):
    return expand(composer(overrides), overrides, composer)


def _scores(cell) -> np.ndarray:
    with np.load(cell.dir / "scores.npz") as z:
        return z["scores"]


@pytest.mark.parametrize("workers, threads, cells, cores, expected", [
    (None, None, 50, 2, (2, 1)),   # defaults: one thread per worker, as many workers as cores
    (None, 2, 50, 4, (2, 2)),
    (4, 2, 50, 2, (2, 1)),         # more than the cores: clamped
    (1, 8, 50, 2, (1, 2)),
    (None, None, 1, 16, (1, 1)),   # never more workers than cells
])
def test_workers_times_threads_never_exceed_the_cores(workers, threads, cells, cores, expected):
    assert fit_workers(workers, threads, cells, cores) == expected
    n, t = fit_workers(workers, threads, cells, cores)
    assert n * t <= cores


def test_cells_in_one_process_do_not_leak_state(composer, dirs):
    """The debug launcher runs cells one after another in this process: the same cell gives the same scores
    whatever ran before it, and a failing cell does not poison the next one."""
    base = [*dirs, *TINY, "launcher=debug", "grid.classes=[0]"]
    first = _cells(composer, [*base, "grid.methods=[ae,deep_svdd]"])
    assert launch(first, composer(base).launcher).complete
    before = {c.id: _scores(c) for c in first}
    # again, in the other order: each cell now runs after a different one
    again = list(reversed(_cells(composer, [*base, "grid.methods=[ae,deep_svdd]"])))
    assert launch(again, composer(base).launcher, force=True).complete
    for c in again:
        np.testing.assert_array_equal(_scores(c), before[c.id], err_msg=c.id)
    # a failing cell first, then deep_svdd
    failing = [*base, "grid.methods=[ae,deep_svdd]", "+grid.method_overrides.ae=['method.lr=-1']"]
    cells = _cells(composer, failing)
    summary = launch(cells, composer(failing).launcher, force=True)
    assert len(summary.failed) == 1 and len(summary.done) == 1, summary
    svdd = next(c for c in cells if c.id in summary.done)
    np.testing.assert_array_equal(_scores(svdd), before[svdd.id])


def test_metrics_record_threads_and_workers(composer, dirs):
    overrides = [*dirs, *TINY, "launcher=debug", "grid.methods=[ae]", "grid.classes=[0]", "trainer.num_threads=1"]
    threads = torch.get_num_threads()
    try:
        cells = _cells(composer, overrides)
        assert launch(cells, composer(overrides).launcher).complete
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((cells[0].dir / "metrics.json").read_text())
    assert metrics["hardware"]["threads"] == 1 and metrics["hardware"]["workers"] == 1
    assert 0 < metrics["timing"]["train_s"] <= metrics["wall_time_s"]


@pytest.mark.slow
def test_local_workers_use_the_threads_that_fit(composer, dirs):
    overrides = [*dirs, *TINY, "grid.methods=[ae]", "grid.classes=[0,1]", "launcher.workers=2",
                 "launcher.threads_per_worker=64"]
    cells = _cells(composer, overrides)
    assert launch(cells, composer(overrides).launcher).complete
    cores = len(os.sched_getaffinity(0))
    workers, threads = fit_workers(2, 64, 2, cores)
    for c in cells:
        hw = json.loads((c.dir / "metrics.json").read_text())["hardware"]
        assert (hw["workers"], hw["threads"]) == (workers, threads)
        assert hw["workers"] * hw["threads"] <= cores


@pytest.mark.slow  # a fresh interpreter that imports the stack, builds the shards and trains the cell
def test_running_a_cell_imports_only_what_it_needs(composer, dirs):
    overrides = [*dirs, "trainer.steps=5", "trainer.batch_size=16", "grid.methods=[ae]", "grid.classes=[3]"]
    cells = _cells(composer, overrides)
    todo, _ = prepare(cells, force=False, retry_failed=True, write=True)
    code = ("import sys; from dadf.grid.runner import run_cell; run_cell(sys.argv[1]); "
            "print(sorted(m for m in ('matplotlib', 'deepspeed', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(todo[0].dir)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert store.is_done(todo[0].dir)


@pytest.mark.parametrize("argv, started", [
    ([], True),                                   # the default: local launcher, forkserver
    (["grid=tabular", "launcher=local"], True),
    (["launcher=slurm"], False),
    (["launcher=debug"], False),
    (["launcher.start_method=spawn"], False),
])
def test_the_launch_starts_the_forkserver_before_it_imports_torch(argv, started):
    """The launch command starts its workers' forkserver first thing, from the command line alone, so that the
    forkserver imports the training stack while the launcher imports and composes; only when a local launcher with
    a forkserver will run."""
    code = ("import sys; from dadf.grid.forkserver import warm_up_from_argv; warm_up_from_argv(sys.argv[1:]); "
            "from multiprocessing import forkserver; "
            "print(forkserver._forkserver._forkserver_pid is not None, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(started), "False"]
