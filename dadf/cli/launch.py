"""``dadf-launch`` (or ``python jobs/launch_grid.py``): expand a grid into cells, run those not finished yet, print
and save the results table.

    python jobs/launch_grid.py                                   # grid=quickstart, local launcher
    python jobs/launch_grid.py grid=mnist_ovr dataset.root=../shared/data trainer.epochs=3
    python jobs/launch_grid.py grid=mnist_ovr method=ae protocol.target_class=3   # one cell
    python jobs/launch_grid.py grid=tabular dataset=arrhythmia   # any axis key narrows its axis
    python jobs/launch_grid.py grid=quickstart force=true        # rerun finished cells too
    python jobs/launch_grid.py grid=cifar_loo launcher=slurm     # submit job arrays to SLURM and return
    python jobs/launch_grid.py grid=cifar_loo launcher=slurm plan=true   # what it would run and cost; touches nothing
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dadf.cli import setup_logging
from dadf.cli._hydra import CONFIG_DIR, check_overrides

EXIT_CONFIG = 2  # a bad config value: nothing was touched
EXIT_BUSY = 3  # another launch holds the grid


def main() -> None:
    # First: the workers' forkserver imports the training stack while this process imports and composes.
    from dadf.grid.forkserver import warm_up_from_argv

    warm_up_from_argv(sys.argv[1:])
    # plan=true is the short form of plan.show=true (plan is a group of settings: plan.calibrate=true)
    sys.argv = [f"plan.show={a.split('=', 1)[1]}" if a.split("=", 1)[0].lstrip("+") == "plan" else a
                for a in sys.argv]
    # A bad key fails here, with the valid keys listed. An override that only some methods of the grid take
    # (method.nu: ocsvm's) is held back from Hydra's composition of the launch's own config, which has one method
    # and would refuse it, and goes to expand with the others, which judges it cell by cell.
    try:
        held = check_overrides(sys.argv[1:], per_method=True)
        sys.argv = [a for a in sys.argv if a not in held]  # Hydra reads its overrides from sys.argv
        hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")(
            lambda cfg: launch_grid(cfg, held))()
    except KeyboardInterrupt:  # Ctrl-C while the grid is composed, before any cell started: nothing to save
        sys.exit(128 + signal.SIGINT)


def launch_grid(cfg: DictConfig, held: Sequence[str] = ()) -> None:
    setup_logging()
    # Imported here to keep the module's top level cheap: spawned local workers re-import the script that imports it.
    from dadf.data.pipeline import declared_classes, ensure_shards
    from dadf.grid import store
    from dadf.grid.aggregate import aggregate
    from dadf.grid.cells import expand, narrow
    from dadf.grid.launch import GridBusy, launch, warm_up
    from dadf.grid.validate import check_cells

    warm_up(cfg.launcher)

    user = [*HydraConfig.get().overrides.task, *held]
    # A user's own config folders (hydra.searchpath=[file:///my/configs]) are Hydra overrides, not task overrides:
    # every cell's composition needs them too.
    search = [o for o in HydraConfig.get().overrides.hydra if o.split("=", 1)[0].lstrip("+") == "hydra.searchpath"]

    def compose(overrides: list[str]) -> DictConfig:  # expand adds the user's overrides to each cell's
        return hydra.compose(config_name="config", overrides=search + overrides)

    def build(dcfg: DictConfig) -> None:
        try:
            ensure_shards(dcfg, cfg.shards_dir)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: dataset {dcfg.name!r}: {e}") from None

    t0 = time.time()
    planning = bool(cfg.plan.show)  # plan=true writes nothing: no shards are built, no folder is made
    try:
        # Expanding needs each dataset's number of classes: from its shards, so they are built first, unless its
        # source declares its classes (then the shards are built below, once every value is checked).
        for dcfg in ([] if planning else _trained_datasets(cfg, narrow(cfg.grid, user), compose)):
            if declared_classes(dcfg) is None:
                build(dcfg)
            elif cfg.trainer.get("data") == "auto":  # auto decides from the shards' index: build them when the data
                with contextlib.suppress(FileNotFoundError, ValueError):  # is here (else the build below says why)
                    ensure_shards(dcfg, cfg.shards_dir)
        cells = expand(cfg, user, compose)
        # Every value is checked before any cell folder is touched: one line per problem.
        processes = (lambda c: 1) if cfg.launcher.name != "slurm" else _slurm_processes(cfg.launcher)
        problems = check_cells(cells, processes)
        if cfg.launcher.get("start_method", "forkserver") not in ("forkserver", "spawn"):
            problems.append(f"launcher.start_method={cfg.launcher.start_method!r} is not a start method: use "
                            f"forkserver (workers fork from one preloaded process) or spawn")
    except ValueError as e:  # expand's refusals (cells.GridError carries one line per refused override)
        problems = getattr(e, "problems", None) or str(e).splitlines()
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    _print_plan(cells, cfg, calibrate=planning and bool(cfg.plan.calibrate))
    if planning:
        return
    grid_dir = Path(cfg.runs_dir) / cfg.grid.name
    metrics = cfg.grid.metric if OmegaConf.is_list(cfg.grid.metric) else [cfg.grid.metric]
    store.write_json(grid_dir / "grid.json", {"grid": cfg.grid.name, "cells": [c.id for c in cells],
                                              "metrics": list(metrics), "overrides": user})
    # Shards are built once here, not by several cells racing to build them.
    datasets = {}
    for c in cells:
        datasets.setdefault(c.data["dataset"]["name"], c.data["dataset"])
        if c.data["protocol"].get("secondary"):
            datasets.setdefault(c.data["protocol"]["secondary"]["name"], c.data["protocol"]["secondary"])
    for dcfg in datasets.values():
        build(OmegaConf.create(dcfg))
    try:
        summary = launch(cells, cfg.launcher, force=bool(cfg.force), retry_failed=bool(cfg.retry_failed))
    except GridBusy as e:
        print(f"error: {e}: wait for it to end or stop it (Ctrl-C there), or pass launcher.wait=true to wait for it",
              file=sys.stderr)
        raise SystemExit(EXIT_BUSY) from None
    except (ValueError, RuntimeError) as e:
        if cfg.launcher.name != "slurm":
            raise
        raise SystemExit(f"error: {e}") from None
    if cfg.launcher.name == "slurm":
        # Submitting does not wait: the jobs run on the cluster; status.py reads the cell folders and the queue.
        from dadf.grid.slurm import watch_hint

        ids = sorted({j.split("_")[0] for j in summary.submitted.values()}, key=lambda j: (len(j), j))
        print(f"job ids: {' '.join(ids) if ids else '(none submitted)'}")
        print(f"runs folder: {grid_dir.resolve()}")
        print(f"watch it: {watch_hint(grid_dir)}")
        return
    _, md = aggregate(grid_dir, list(metrics), cells=[c.id for c in cells])  # this launch's own cells
    print()
    print(md)
    print(f"{len(summary.done)} cells run, {len(summary.skipped)} skipped (finished), {len(summary.failed)} failed "
          f"in {time.time() - t0:.1f}s; results in {grid_dir}/ (table.md, table.csv, table.tex)")
    _print_unfinished(summary)
    if summary.stopped_by:
        raise SystemExit(128 + summary.stopped_by)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    if not summary.complete:
        raise SystemExit(1)


def _print_plan(cells, cfg: DictConfig, calibrate: bool) -> None:
    """The cells, their groups (job arrays, workers) and estimated cost, as the first lines of a launch."""
    from dadf.grid.plan import make_plan, render

    queued = None
    if cfg.launcher.name == "slurm":
        from dadf.grid import slurm

        try:
            states = slurm.queue_states(float(cfg.launcher.get("squeue_timeout_s") or 60))
            queued = {c.id for c in cells if c.dir.is_dir() and slurm.active_job(c.dir, states)}
        except slurm.SlurmError as e:
            print(f"plan: the queue was not read ({e}); cells queued there count as to run")
    print(render(make_plan(cells, cfg.launcher, cfg.runs_dir, calibrate_missing=calibrate, queued=queued)))


def _trained_datasets(cfg: DictConfig, narrowed, compose) -> list[DictConfig]:
    """The datasets a grid trains on: each value of its (narrowed) `dataset` axis with the user's overrides, else
    its dataset. A value that does not compose is left to expand, which reports it with the grid's other problems."""
    from dadf.grid.cells import compose_dropping

    values = narrowed.axes.get("dataset")
    if not values:
        return [cfg.dataset]
    datasets = []
    for value in values:
        # keys of some methods only (method.nu) are dropped here: the default method lacks them
        dcfg = compose_dropping(compose, [(f"dataset={value}", "axis"), *[(o, "user") for o in narrowed.rest]])
        if dcfg.cfg is not None:
            datasets.append(dcfg.cfg.dataset)
    return datasets


def _slurm_processes(lcfg: DictConfig):
    from dadf.grid.slurm import resources_for

    known: dict[tuple[str, str], int] = {}  # resources depend on the method and dataset only

    def processes(cell) -> int:
        key = (cell.data["method"]["name"], cell.data["dataset"]["name"])
        if key not in known:
            known[key] = resources_for(cell.data, lcfg).ntasks
        return known[key]

    return processes


def _print_unfinished(summary) -> None:
    """What is not done, last, so it is what a user sees: failed cells with their reason, then stopped ones."""
    if summary.stopped_by:
        print(f"stopped by {signal.Signals(summary.stopped_by).name}: {len(summary.requeued)} cell(s) saved a "
              f"checkpoint and were requeued; launch the same command again to resume")
    if summary.disk_full:
        print(f"stopped: {summary.disk_full}")
    for title, cells in (("being run by another process", summary.busy), ("FAILED", summary.failed)):
        if cells:
            print(f"{len(cells)} cell(s) {title}:")
            for cid, reason in cells.items():
                print(f"  {cid}: {reason}")

