"""Launchers: run a grid's cells that are not done yet. A failing cell is recorded and the grid goes on.

- ``local`` (default): worker processes on this machine; a worker that dies takes only its cell down.
- ``debug``: one after another in this process, so breakpoints work.
- ``slurm``: submitit job arrays on a SLURM cluster (dadf/grid/slurm.py); submits and returns without waiting.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from dadf.grid import store
from dadf.grid.cells import Cell


@dataclass
class LaunchSummary:
    skipped: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)          # slurm: already queued or running, not resubmitted
    submitted: dict[str, str] = field(default_factory=dict)  # slurm: cell id -> job id


def prepare(cells: list[Cell], force: bool, retry_failed: bool) -> tuple[list[Cell], list[Cell]]:
    """Write each cell's frozen config; split into (to run, skipped)."""
    todo, skipped = [], []
    for cell in cells:
        state = store.read_status(cell.dir).get("state")
        finished = store.is_done(cell.dir) or (state == store.FAILED and not retry_failed)
        if finished and not force:
            skipped.append(cell)
            continue
        if force:
            _clear(cell.dir)
        store.write_cell_config(cell.dir, cell.cfg)
        store.write_status(cell.dir, store.PENDING)
        todo.append(cell)
    return todo, skipped


def _clear(cell_dir: Path) -> None:
    import shutil

    for name in ("metrics.json", "scores.npz", "log.jsonl", "status.json"):
        (cell_dir / name).unlink(missing_ok=True)
    shutil.rmtree(cell_dir / "checkpoints", ignore_errors=True)


def _short(reason: str) -> str:
    return reason if len(reason) < 160 else reason[:157] + "..."


def _worker_init(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(cell_dir: str) -> tuple[str, str | None, float | None, float]:
    """(state, failure reason, auroc, seconds); never raises, so one cell cannot take the pool down."""
    from dadf.train.loop import run_cell

    t0 = time.time()
    try:
        result = run_cell(cell_dir)
        return store.DONE, None, result["metrics"].get("auroc"), time.time() - t0
    except BaseException:  # noqa: BLE001 -- run_cell recorded the reason in status.json
        return store.FAILED, store.read_status(Path(cell_dir)).get("reason", "unknown error"), None, time.time() - t0


def _progress_bar(total: int):
    # On a terminal a live bar; in logs (SLURM, CI, pipes) only the per-cell lines.
    return tqdm(total=total, desc="cells", unit="cell", file=sys.stdout, dynamic_ncols=True,
                disable=not sys.stdout.isatty())


def _report(bar, summary: LaunchSummary, cell: Cell, state: str, reason: str | None, auroc, seconds: float) -> None:
    bar.update(1)
    count = f"[{len(summary.done) + len(summary.failed) + 1}/{bar.total}]"
    if state == store.DONE:
        summary.done.append(cell.id)
        score = f"  auroc={auroc:.4f}" if auroc is not None and auroc == auroc else ""
        tqdm.write(f"{count} done    {cell.id}{score}  ({seconds:.1f}s)", file=sys.stdout)
    else:
        summary.failed[cell.id] = reason or "unknown error"
        tqdm.write(f"{count} FAILED  {cell.id}: {_short(reason or '')}", file=sys.stdout)


def run_local(todo: list[Cell], lcfg: DictConfig, summary: LaunchSummary) -> None:
    workers = max(1, int(lcfg.workers))
    threads = lcfg.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    pending = list(todo)
    with _progress_bar(len(todo)) as bar:
        while pending:
            before = len(pending)
            ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
            with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
                started = {pool.submit(_run_in_worker, str(c.dir)): c for c in pending}
                pending = []
                for fut in cf.as_completed(started):
                    cell = started[fut]
                    try:
                        state, reason, auroc, seconds = fut.result()
                    except cf.process.BrokenProcessPool:
                        # A dead worker breaks the whole pool: its cell (the one on disk as running) failed; the
                        # cells that never started go to a fresh pool.
                        if store.read_status(cell.dir).get("state") == store.RUNNING:
                            reason = "the worker process died (killed, out of memory or crashed) while running it"
                            store.write_status(cell.dir, store.FAILED, reason=reason)
                            _report(bar, summary, cell, store.FAILED, reason, None, 0.0)
                        else:
                            pending.append(cell)
                        continue
                    _report(bar, summary, cell, state, reason, auroc, seconds)
            if len(pending) == before:  # the pool died before any cell started: do not loop forever
                for cell in pending:
                    reason = "worker processes die before starting a cell (see the log above)"
                    store.write_status(cell.dir, store.FAILED, reason=reason)
                    _report(bar, summary, cell, store.FAILED, reason, None, 0.0)
                pending = []


def run_debug(todo: list[Cell], lcfg: DictConfig, summary: LaunchSummary) -> None:
    from dadf.train.loop import run_cell

    with _progress_bar(len(todo)) as bar:
        for cell in todo:
            t0 = time.time()
            try:
                result = run_cell(cell.dir, progress=True)
                _report(bar, summary, cell, store.DONE, None, result["metrics"].get("auroc"), time.time() - t0)
            except Exception:
                if lcfg.raise_errors:
                    raise
                _report(bar, summary, cell, store.FAILED, store.read_status(cell.dir).get("reason"), None,
                        time.time() - t0)


LAUNCHERS = {"local": run_local, "debug": run_debug}


def launch(cells: list[Cell], lcfg: DictConfig, force: bool = False, retry_failed: bool = True) -> LaunchSummary:
    if lcfg.name == "slurm":
        return launch_slurm(cells, lcfg, force, retry_failed)
    if lcfg.name not in LAUNCHERS:
        raise ValueError(f"launcher {lcfg.name!r} is not available; choose one of {sorted(LAUNCHERS) + ['slurm']}")
    todo, skipped = prepare(cells, force, retry_failed)
    summary = LaunchSummary(skipped=[c.id for c in skipped])
    print(f"{len(cells)} cells: {len(skipped)} already finished, {len(todo)} to run ({lcfg.name} launcher)")
    if todo:
        LAUNCHERS[lcfg.name](todo, lcfg, summary)
    return summary


def launch_slurm(cells: list[Cell], lcfg: DictConfig, force: bool = False, retry_failed: bool = True) -> LaunchSummary:
    """Submit the cells that are neither finished nor queued/running as job arrays; return at once."""
    from dadf.grid import slurm

    finished, queued, todo, submitted = slurm.run_slurm(cells, lcfg, force, retry_failed, prepare)
    summary = LaunchSummary(skipped=[c.id for c in finished], queued=[c.id for c in queued], submitted=submitted)
    print(f"{len(cells)} cells: {len(finished)} already finished, {len(queued)} already queued or running, "
          f"{len(todo)} submitted (slurm launcher)")
    return summary
