"""``dadf-launch`` (or ``python jobs/launch_grid.py``): expand a grid into cells, run those not finished yet, print
and save the results table.

    python jobs/launch_grid.py                                   # grid=quickstart, local launcher
    python jobs/launch_grid.py grid=mnist_ovr dataset.root=/data trainer.epochs=3
    python jobs/launch_grid.py grid=mnist_ovr method=ae protocol.target_class=3   # one cell
    python jobs/launch_grid.py grid=tabular dataset=arrhythmia   # any axis key narrows its axis
    python jobs/launch_grid.py grid=tabular dataset=odds grid.axes.dataset.params.name=[cardio,satellite]  # your tables
    python jobs/launch_grid.py grid=quickstart force=true        # rerun finished cells too
    python jobs/launch_grid.py grid=cifar_loo launcher=slurm     # submit job arrays to SLURM and return
    python jobs/launch_grid.py grid=cifar_loo launcher=slurm plan=true   # what it would run and cost; touches nothing

Exit status: 0 every cell finished (slurm: every cell submitted, queued or finished); 1 a cell failed or a dataset
could not be built; 2 a bad config value (nothing was touched); 3 another launch holds the grid; 128 + N stopped by
signal N (130 for Ctrl-C), the running cells requeued with a checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

EXIT_FAILED = 1  # a cell failed, or a dataset could not be built
EXIT_CONFIG = 2  # a bad config value: nothing was touched
EXIT_BUSY = 3  # another launch holds the grid


def main() -> None:
    # First: the workers' forkserver imports the training stack while this process imports and composes.
    from dadf.grid.forkserver import warm_up_from_argv

    warm_up_from_argv(sys.argv[1:])
    code = run(sys.argv[1:])
    # Everything is written and said: leave without tearing down torch and its compiler stack module by module,
    # which takes about a second. The forkserver ends with this process (dadf/grid/parent_watch.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(argv: list[str]) -> int:
    """Launch as the command line ``argv`` asks; the exit status (the module's docstring lists them)."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    previous = signal.getsignal(signal.SIGINT)
    interrupted = _note_ctrl_c()
    try:
        return _run(argv, interrupted)
    finally:
        with contextlib.suppress(ValueError, TypeError):  # not the main thread / a handler Python did not set
            signal.signal(signal.SIGINT, previous)


def _run(argv: list[str], interrupted: list[int]) -> int:
    try:
        from dadf.cli import setup_logging
        from dadf.grid.cells import GridError
        from dadf.grid.launch import GridBusy, LaunchError

        setup_logging()
        try:
            summary = launch_grid(argv)
        except GridError as e:  # one line per problem; nothing was written
            print("\n".join(f"error: {p}" for p in e.problems), file=sys.stderr)
            return EXIT_CONFIG
        except GridBusy as e:
            print(f"error: {e}: wait for it to end or stop it (Ctrl-C there), or pass launcher.wait=true to wait for "
                  f"it", file=sys.stderr)
            return EXIT_BUSY
        except LaunchError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C while the grid is composed, before any cell started: nothing to save
        return 128 + signal.SIGINT
    except Exception:
        if interrupted:  # Ctrl-C landed inside a library that reports it as an error of its own (OmegaConf does)
            return 128 + signal.SIGINT
        raise
    if summary is None or summary.complete:
        return 0
    return 128 + summary.stopped_by if summary.stopped_by else EXIT_FAILED


def _note_ctrl_c() -> list[int]:
    """A Ctrl-C raises KeyboardInterrupt as usual and is also noted in the list returned (the local launcher's own
    handler takes over while cells run)."""
    noted: list[int] = []

    def interrupt(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread: Python's default stays
        pass
    return noted


def launch_grid(argv: list[str]):
    """plan -> check -> launch -> report. The LaunchSummary, or None for plan=true (nothing launched)."""
    from dadf.cli._hydra import read, session, set_values
    from dadf.grid import store
    from dadf.grid.cells import GridError, cells_of, compose_grid
    from dadf.grid.launch import launcher_for
    from dadf.grid.validate import check_cells, launcher_problems

    t0 = time.time()
    # plan=true is the short form of plan.show=true (plan is a group of settings: plan.calibrate=true)
    argv = [f"plan.show={a.split('=', 1)[1]}" if a.split("=", 1)[0].lstrip("+") == "plan" else a for a in argv]
    overrides = read(argv)
    user = [o.text for o in overrides if not o.hydra]
    with session(overrides) as compositions:
        cfg = compositions.base()
        set_values(cfg, overrides, strict=False)  # what applies to some methods only is judged per method below
        launcher = launcher_for(cfg.launcher)
        launcher.warm_up()
        composed = compose_grid(cfg, user, compositions)  # every override judged against every method's schemas
        planning = bool(cfg.plan.show)  # plan=true writes nothing: no shards are built, no folder is made
        if not planning:  # a dataset's classes come from its shards unless its source declares them
            _build(composed.datasets, cfg, compositions.searchpath, only_undeclared=True)
        cells = cells_of(composed)
    # every value, before any cell folder is touched
    problems = launcher_problems(cfg.launcher) + check_cells(cells, launcher.processes)
    if problems:
        raise GridError(problems)
    _print_plan(cells, cfg, launcher, calibrate=planning and bool(cfg.plan.calibrate))
    if planning:
        return None
    grid_dir = Path(cfg.runs_dir) / cfg.grid.name
    metrics = list(cfg.grid.metric) if OmegaConf.is_list(cfg.grid.metric) else [cfg.grid.metric]
    store.write_json(grid_dir / "grid.json", {"grid": cfg.grid.name, "cells": [c.id for c in cells],
                                              "metrics": metrics, "overrides": user})
    # once here, not by cells racing to build them
    _build([OmegaConf.create(d) for d in _cell_datasets(cells)], cfg, compositions.searchpath)
    summary = launcher.submit(cells, force=bool(cfg.force), retry_failed=bool(cfg.retry_failed))
    launcher.report(summary, cells, grid_dir, metrics, time.time() - t0)
    return summary


def _build(datasets: list[DictConfig], cfg: DictConfig, searchpath: list[str], only_undeclared: bool = False) -> None:
    """Build the datasets' shards. ``only_undeclared``: those whose classes are known from their data only (and
    those the memory/stream decision reads, where their data is here)."""
    from dadf.data.datasets import declared_classes, ensure_shards
    from dadf.grid.launch import LaunchError

    for dcfg in datasets:
        needed = declared_classes(dcfg) is None
        if only_undeclared and not needed:
            if cfg.trainer.get("data") == "auto":  # auto decides from the shards' index: build them when the data
                try:  # is here (else the build after the checks says why)
                    ensure_shards(dcfg, cfg.shards_dir, searchpath=searchpath)
                except (FileNotFoundError, ValueError):
                    pass
            continue
        try:
            ensure_shards(dcfg, cfg.shards_dir, searchpath=searchpath)
        except (FileNotFoundError, ValueError) as e:
            raise LaunchError(f"dataset {dcfg.name!r}: {e}") from None


def _cell_datasets(cells) -> list[dict]:
    datasets = {}
    for c in cells:
        datasets.setdefault(c.data["dataset"]["name"], c.data["dataset"])
        if c.data["protocol"].get("secondary"):
            datasets.setdefault(c.data["protocol"]["secondary"]["name"], c.data["protocol"]["secondary"])
    return list(datasets.values())


def _print_plan(cells, cfg: DictConfig, launcher, calibrate: bool) -> None:
    """The cells, their groups (job arrays, workers) and estimated cost, as the first lines of a launch."""
    from dadf.grid.plan import make_plan, render

    queued = launcher.queued(cells)
    print(render(make_plan(cells, launcher, cfg.runs_dir, calibrate_missing=calibrate, queued=queued)))
