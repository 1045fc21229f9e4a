"""Launchers: run a grid's cells that are not done yet. A failing cell is recorded and the grid goes on.

- ``local`` (default): worker processes on this machine; a worker that dies takes only its cell down.
- ``debug``: one after another in this process, so breakpoints work.
- ``slurm``: submitit job arrays on a SLURM cluster (dadf/grid/slurm.py); submits and returns without waiting.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from dadf import atomic
from dadf.grid import forkserver, locks, store
from dadf.grid.cells import Cell
from dadf.train.preemption import Preempted, PreemptionGuard

log = logging.getLogger(__name__)


@dataclass
class LaunchSummary:
    skipped: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    requeued: dict[str, str] = field(default_factory=dict)   # stopped with a checkpoint; the next launch resumes
    busy: dict[str, str] = field(default_factory=dict)       # run by another process right now; left alone
    queued: list[str] = field(default_factory=list)          # slurm: already queued or running, not resubmitted
    submitted: dict[str, str] = field(default_factory=dict)  # slurm: cell id -> job id
    stopped_by: int | None = None  # the signal (SIGINT/SIGTERM) that stopped the launch
    disk_full: str | None = None   # why the launch stopped early: no space left

    @property
    def complete(self) -> bool:
        """Every cell of the launch is finished (the only case in which launch_grid.py exits 0)."""
        return not (self.failed or self.requeued or self.busy or self.stopped_by or self.disk_full)


class GridBusy(locks.Busy):
    """Another launch holds this grid."""


class LaunchError(RuntimeError):
    """A launch that cannot go on: a dataset that cannot be built, a cluster that refuses the jobs."""


def prepare(cells: list[Cell], force: bool, retry_failed: bool, summary: LaunchSummary | None = None,
            write: bool = False) -> tuple[list[Cell], list[Cell]]:
    """Split into (to run, skipped). A cell that another process is running right now is neither touched nor run
    (listed in ``summary.busy``); a forced cell's old results are cleared.

    A cell's folder is written when the cell is scheduled (``materialise``), not here: a grid of 10,000 cells
    starts training at once, and a folder is never half-made (the launcher writes it complete just before a worker
    reads it). ``write=True`` (SLURM: its jobs read their folders) writes every cell to run in one pass with a
    single sync at the end."""
    todo, skipped = [], []
    for cell in cells:
        if cell.dir.is_dir():  # a cell of a grid that was launched before: finished, busy or to rerun
            holder = locks.holder(cell.dir / store.CELL_LOCK)
            if holder is not None:
                if summary is not None:
                    summary.busy[cell.id] = f"being run by {holder}"
                continue
            status = store.read_status(cell.dir)
            finished = store.is_done(cell.dir, status) or (status.get("state") == store.FAILED and not retry_failed)
            if finished and not force:
                skipped.append(cell)
                continue
            if force:
                store.CellDir(cell.dir).clear_for_rerun()
        todo.append(cell)
    if write:
        for cell in todo:
            materialise(cell, sync=False)
        atomic.sync_all()
    return todo, skipped


def materialise(cell: Cell, sync: bool = True) -> None:
    """Write the cell's folder as a run reads it: its frozen config, and status pending. A new folder in a bulk
    write (``sync=False``) gets no status file: an absent one reads as pending, and one file less per cell counts
    at 10,000 cells."""
    new = not cell.dir.is_dir()
    store.write_cell_config(cell.dir, cell.data, sync=sync)
    if sync or not new:
        store.write_status(cell.dir, store.PENDING, sync=sync)


def _short(reason: str) -> str:
    return reason if len(reason) < 160 else reason[:157] + "..."


# ------------------------------------------------------------------------------------------- one cell, one outcome
BUSY, DISK_FULL = "busy", "disk_full"


def _run_one(cell_dir: str, progress: bool = False, workers: int = 1) -> tuple[str, str | None, float | None, float]:
    """(state, reason, auroc, seconds) of running one cell here; never raises but for KeyboardInterrupt."""
    from dadf.grid import runner

    t0 = time.time()
    try:
        result = runner.run_cell(cell_dir, progress=progress, workers=workers)
        return store.DONE, None, result["metrics"].get("auroc"), time.time() - t0
    except Preempted as p:
        return store.REQUEUED, str(p), None, time.time() - t0
    except runner.CellBusy as e:
        return BUSY, str(e), None, time.time() - t0
    except runner.DiskFull as e:
        return DISK_FULL, e.strerror, None, time.time() - t0
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 -- run_cell recorded the reason in status.json
        reason = store.read_status(Path(cell_dir)).get("reason") or "unknown error (see the cell's status.json)"
        return store.FAILED, reason, None, time.time() - t0


# ------------------------------------------------------------------------------------------------ local workers
def _die_with_launcher(lifeline) -> None:
    """SIGTERM to this worker when the launcher dies, however it dies (kill -9 included): the cell then saves a
    checkpoint at its next step and the worker exits, instead of training on with nobody watching.

    Two ways, as the worker's parent is the forkserver, not the launcher: the kernel's PR_SET_PDEATHSIG for the
    forkserver's death, and a thread that waits on a pipe only the launcher holds open (it reads EOF when the
    launcher is gone; the forkserver itself lives on while a worker holds its fds, so it cannot be the only sign)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                lifeline.recv()  # the launcher never sends: this returns only at EOF
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dadf-launcher-watch", daemon=True).start()


def _worker_main(conn, lifeline, threads: int, workers: int, visible: str | None = None) -> None:
    # A session of its own: Ctrl-C at the terminal reaches the launcher only, which tells the workers with SIGTERM.
    with contextlib.suppress(OSError):
        os.setsid()
    if visible is not None:  # the GPU given to this worker ("" = none); read when CUDA starts, after the fork
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    with PreemptionGuard() as guard:  # SIGTERM while idle ends the worker; while busy, the cell saves and stops
        _die_with_launcher(lifeline)
        import torch

        torch.set_num_threads(threads)
        while guard.signum is None:
            if not conn.poll(0.2):
                continue
            try:
                cell_dir = conn.recv()
            except EOFError:
                break
            if cell_dir is None:
                break
            outcome = _run_one(cell_dir, workers=workers)
            try:
                conn.send(outcome)
            except OSError:  # the launcher is gone
                break
        guard.acted_on = True  # the signal has done its job: end normally


def _cores() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fit_workers(workers: int | None, threads: int | None, cells: int, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) such that workers x threads never exceeds the cores; a clamp is logged."""
    cores = cores or _cores()
    threads = max(1, int(threads or 1))
    asked = int(workers) if workers else None
    n = asked if asked else max(1, cores // threads)
    n = max(1, min(n, cells))
    if n > cores:
        log.info("launcher.workers=%d is more than the %d cores: running %d workers", n, cores, cores)
        n = cores
    if n * threads > cores:
        fit = max(1, cores // n)
        log.info("launcher.threads_per_worker=%d x %d workers is more than the %d cores: %d thread(s) per worker",
                 threads, n, cores, fit)
        threads = fit
    return n, threads


def visible_gpus(spec=None) -> list[str]:
    """The GPUs the local launcher may give cells: ``launcher.gpus`` when it lists them, else those
    CUDA_VISIBLE_DEVICES names, else every GPU torch sees (none on a machine without CUDA)."""
    if spec is not None:
        return [str(g) for g in spec]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        names = [g.strip() for g in env.split(",") if g.strip()]
        return [] if names[:1] == ["-1"] else names
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Slots:
    """What each local worker is given: ``gpus`` (one entry per GPU worker: its CUDA_VISIBLE_DEVICES) and the number
    of CPU workers; torch cells run on GPU workers where there are any, the other cells on CPU workers."""

    gpu: list[str]
    cpu: int
    threads: int

    @property
    def total(self) -> int:
        return len(self.gpu) + self.cpu


def plan_slots(cells: list[Cell], lcfg: DictConfig, cores: int | None = None) -> Slots:
    """Workers for these cells: with GPUs, ``cells_per_gpu`` workers per GPU for the torch cells and CPU workers
    (GPUs hidden) beside them for the shallow ones; without GPUs, CPU workers for all (``fit_workers``)."""
    from dadf.methods.registry import accelerated

    gpus = visible_gpus(lcfg.get("gpus"))
    torch_cells = sum(accelerated(c.data["method"]["name"]) for c in cells) if gpus else 0
    if not torch_cells:
        n, threads = fit_workers(lcfg.get("workers"), lcfg.get("threads_per_worker"), len(cells), cores)
        return Slots([], n, threads)
    per_gpu = max(1, int(lcfg.get("cells_per_gpu") or 1))
    gpu = [g for g in gpus for _ in range(per_gpu)][:torch_cells]
    threads = max(1, int(lcfg.get("threads_per_worker") or 1))
    shallow = len(cells) - torch_cells
    cpu = 0
    if shallow:
        room = max(1, ((cores or _cores()) - len(gpu) * threads) // threads)
        cpu = min(shallow, int(lcfg.get("workers") or room), room)
    return Slots(gpu, cpu, threads)


@dataclass
class _Worker:
    proc: mp.process.BaseProcess
    conn: object
    lifeline: object  # our end of the pipe whose EOF tells the worker that the launcher is gone
    visible: str | None  # its CUDA_VISIBLE_DEVICES: a GPU, "" (a CPU worker beside GPU ones), None (no GPUs)
    cell: Cell | None = None
    t0: float = 0.0

    @property
    def on_gpu(self) -> bool:
        return bool(self.visible)


class _Local:
    """The local launcher: long-lived worker processes (forked from a forkserver that imported the training stack
    once), one cell at a time each. Stops on SIGINT/SIGTERM: running cells save a checkpoint and are requeued, queued
    cells do not start; a second Ctrl-C kills the workers at once (their cells resume from their newest checkpoint)."""

    def __init__(self, todo: list[Cell], lcfg: DictConfig, summary: LaunchSummary, bar, stop: PreemptionGuard):
        from dadf.methods.registry import accelerated

        self.summary, self.bar, self.stop = summary, bar, stop
        self.slots = plan_slots(todo, lcfg)
        self.n, self.threads = self.slots.total, self.slots.threads
        # with GPUs, two queues: torch cells for the GPU workers, the others for the CPU workers
        on_gpu = [bool(self.slots.gpu) and accelerated(c.data["method"]["name"]) for c in todo]
        self.queues = {True: collections.deque(c for c, g in zip(todo, on_gpu) if g),
                       False: collections.deque(c for c, g in zip(todo, on_gpu) if not g)}
        self.ctx = forkserver.worker_context(str(lcfg.get("start_method") or "forkserver"))
        self.workers: list[_Worker] = []
        self.told = False
        self.deaths_without_cell = 0
        if self.slots.gpu:
            log.info("%d GPU worker(s) (CUDA_VISIBLE_DEVICES %s) for %d torch cell(s), %d CPU worker(s) for %d other "
                     "cell(s)", len(self.slots.gpu), ",".join(self.slots.gpu), len(self.queues[True]),
                     self.slots.cpu, len(self.queues[False]))

    @property
    def pending(self) -> list[Cell]:
        return [*self.queues[True], *self.queues[False]]

    def _start(self, visible: str | None) -> None:
        ours, theirs = self.ctx.Pipe()
        life_r, life_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(theirs, life_r, self.threads, self.n, visible),
                                name="dadf-worker")
        proc.start()
        theirs.close()
        life_r.close()
        self.workers.append(_Worker(proc, ours, life_w, visible))

    def _stopping(self) -> bool:
        return self.stop.signum is not None or self.summary.disk_full is not None

    def run(self) -> None:
        try:
            for gpu in self.slots.gpu:
                self._start(gpu)
            for _ in range(self.slots.cpu):
                self._start("" if self.slots.gpu else None)
            while True:
                if not self._stopping():
                    for w in self.workers:
                        queue = self.queues[w.on_gpu]
                        if w.cell is None and queue and w.proc.is_alive():
                            w.cell, w.t0 = queue.popleft(), time.time()
                            materialise(w.cell)
                            w.conn.send(str(w.cell.dir))
                elif not self.told:
                    self._tell_workers()
                busy = [w for w in self.workers if w.cell is not None]
                if not busy and (self._stopping() or not any(self.queues.values())):
                    return
                mpc.wait([w.conn for w in busy] + [w.proc.sentinel for w in self.workers], timeout=0.5)
                self._collect()
        except KeyboardInterrupt:  # the second Ctrl-C
            self._kill_now()
        finally:
            self._shutdown()

    def _tell_workers(self) -> None:
        self.told = True
        busy = [w for w in self.workers if w.cell is not None]
        why = (signal.Signals(self.stop.signum).name if self.stop.signum else "disk full")
        if busy:
            again = "; Ctrl-C again to stop at once" if self.stop.signum else ""
            log.info("stopping (%s): %d running cell(s) save a checkpoint and are requeued; %d queued cell(s) do not "
                     "start%s", why, len(busy), len(self.pending), again)
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                if w.proc.pid:
                    os.kill(w.proc.pid, signal.SIGTERM)

    def _collect(self) -> None:
        for w in list(self.workers):
            if w.cell is not None and w.conn.poll():
                try:
                    outcome = w.conn.recv()
                except (EOFError, OSError):
                    outcome = None
                if outcome is not None:
                    cell, w.cell = w.cell, None
                    _report(self.bar, self.summary, cell, *outcome)
            if not w.proc.is_alive():
                w.proc.join()
                w.lifeline.close()
                self.workers.remove(w)
                if w.cell is not None:
                    self._worker_died(w)
                elif not self._stopping():
                    self.deaths_without_cell += 1
                if self.queues[w.on_gpu] and not self._stopping():
                    if self.deaths_without_cell >= 3:  # they die before taking a cell: do not loop forever
                        for cell in self.pending:
                            reason = "worker processes die before starting a cell (see the log above)"
                            materialise(cell)
                            store.write_status(cell.dir, store.FAILED, reason=reason)
                            _report(self.bar, self.summary, cell, store.FAILED, reason, None, 0.0)
                        for queue in self.queues.values():
                            queue.clear()
                    else:
                        self._start(w.visible)

    def _worker_died(self, w: _Worker) -> None:
        code = w.proc.exitcode
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        reason = (f"the worker process died ({how}: killed, out of memory or crashed) while running it; relaunch to "
                  f"resume from its newest checkpoint")
        state = store.FAILED
        with contextlib.suppress(OSError):
            status = store.read_status(w.cell.dir)
            if status.get("state") == store.REQUEUED:  # it saved before it went
                state, reason = store.REQUEUED, status.get("reason")
            else:
                store.write_status(w.cell.dir, state, reason=reason)
        _report(self.bar, self.summary, w.cell, state, reason, None, time.time() - w.t0)
        w.cell = None

    def _kill_now(self) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
        for w in self.workers:
            w.proc.join()
            if w.cell is not None:
                reason = "stopped at once by a second Ctrl-C; relaunch to resume from its newest complete checkpoint"
                with contextlib.suppress(OSError):
                    store.write_status(w.cell.dir, store.REQUEUED, reason=reason)
                _report(self.bar, self.summary, w.cell, store.REQUEUED, reason, None, time.time() - w.t0)
                w.cell = None

    def _shutdown(self) -> None:
        """No worker outlives the launch: ask the idle ones to leave, then make sure."""
        for w in self.workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        deadline = time.time() + 10
        for w in self.workers:
            w.proc.join(max(0.1, deadline - time.time()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
            w.lifeline.close()
        self.workers = []


def _progress_bar(total: int):
    # On a terminal a live bar; in logs (SLURM, CI, pipes) only the per-cell lines.
    return tqdm(total=total, desc="cells", unit="cell", file=sys.stdout, dynamic_ncols=True,
                disable=not sys.stdout.isatty())


def _report(bar, summary: LaunchSummary, cell: Cell, state: str, reason: str | None, auroc, seconds: float) -> None:
    bar.update(1)
    ended = len(summary.done) + len(summary.failed) + len(summary.requeued) + len(summary.busy)
    count = f"[{ended + 1}/{bar.total}]"
    if state == store.DONE:
        summary.done.append(cell.id)
        score = f"  auroc={auroc:.4f}" if auroc is not None and auroc == auroc else ""
        line = f"{count} done    {cell.id}{score}  ({seconds:.1f}s)"
    elif state == store.REQUEUED:
        summary.requeued[cell.id] = reason or ""
        line = f"{count} stopped {cell.id}: requeued with a checkpoint; the next launch resumes it"
    elif state == BUSY:
        summary.busy[cell.id] = reason or ""
        line = f"{count} busy    {cell.id}: {_short(reason or '')}"
    else:
        summary.failed[cell.id] = reason or "unknown error"
        if state == DISK_FULL:
            summary.disk_full = reason
        line = f"{count} FAILED  {cell.id}: {_short(reason or '')}"
    tqdm.write(line, file=sys.stdout)


def run_local(todo: list[Cell], lcfg: DictConfig, summary: LaunchSummary, stop: PreemptionGuard) -> None:
    with _progress_bar(len(todo)) as bar:
        _Local(todo, lcfg, summary, bar, stop).run()


def run_debug(todo: list[Cell], lcfg: DictConfig, summary: LaunchSummary, stop: PreemptionGuard) -> None:
    with _progress_bar(len(todo)) as bar:
        for cell in todo:
            if stop.signum is not None or summary.disk_full:
                break
            materialise(cell)
            if lcfg.raise_errors:
                from dadf.grid.runner import run_cell

                t0 = time.time()
                result = run_cell(cell.dir, progress=True)
                _report(bar, summary, cell, store.DONE, None, result["metrics"].get("auroc"), time.time() - t0)
                continue
            try:
                outcome = _run_one(str(cell.dir), progress=True)
            except KeyboardInterrupt:  # the second Ctrl-C, in the middle of a step
                reason = "stopped at once by a second Ctrl-C; relaunch to resume from its newest complete checkpoint"
                store.write_status(cell.dir, store.REQUEUED, reason=reason)
                _report(bar, summary, cell, store.REQUEUED, reason, None, 0.0)
                stop.signum = stop.signum or signal.SIGINT
                break
            if outcome[0] == store.REQUEUED and stop.signum is None:  # the cell's guard took the signal
                stop.signum = int(store.read_status(cell.dir).get("signum") or signal.SIGTERM)
            _report(bar, summary, cell, *outcome)


class Launcher:
    """What a launch asks of a launcher (``launcher=<name>``): how many processes a cell runs with, which cells are
    queued already, how the cells to run are grouped (the plan), ``submit`` them, and ``report`` the outcome."""

    name = ""

    def __init__(self, lcfg: DictConfig):
        self.cfg = lcfg

    def warm_up(self) -> None:
        """Start what the launch will need while the grid is composed (the local workers' forkserver)."""

    def processes(self, cell: Cell) -> int:
        """Processes one cell trains with (its global batch is split over them)."""
        return 1

    def queued(self, cells: list[Cell]) -> set[str] | None:
        """The cells queued or running elsewhere (a cluster's queue); None: no queue to ask."""
        return None

    def groups(self, todo: list[Cell]) -> tuple[list, dict[str, str], list[str]]:
        """(the plan's groups of the cells to run, {group title: cpu|cuda}, notes): dadf.grid.plan.Group."""
        raise NotImplementedError

    def submit(self, cells: list[Cell], force: bool = False, retry_failed: bool = True) -> LaunchSummary:
        raise NotImplementedError

    def report(self, summary: LaunchSummary, cells: list[Cell], grid_dir: Path, metrics: list[str],
               seconds: float) -> None:
        """What the user reads at the end of the launch."""
        raise NotImplementedError


class Local(Launcher):
    """Worker processes on this machine; ``submit`` returns when every cell has ended (or a signal stopped it)."""

    name = "local"

    def warm_up(self) -> None:
        forkserver.warm_up(self.name, self.cfg.get("start_method"))

    def _run(self, todo: list[Cell], summary: LaunchSummary, stop: PreemptionGuard) -> None:
        run_local(todo, self.cfg, summary, stop)

    def groups(self, todo: list[Cell]) -> tuple[list, dict[str, str], list[str]]:
        from dadf.grid.plan import Group
        from dadf.methods.registry import accelerated

        slots = plan_slots(todo, self.cfg)
        if not slots.gpu:
            return [Group(f"CPU workers ({slots.threads} thread{'s' * (slots.threads != 1)} each)", todo,
                          cpus=slots.threads, workers=slots.cpu)], {}, []
        gpu = [c for c in todo if accelerated(c.data["method"]["name"])]
        cpu = [c for c in todo if not accelerated(c.data["method"]["name"])]
        groups = [Group(f"GPU workers (CUDA_VISIBLE_DEVICES {','.join(dict.fromkeys(slots.gpu))})", gpu, gpus=1,
                        cpus=slots.threads, workers=len(slots.gpu))]
        if cpu:
            groups.append(Group("CPU workers (GPUs hidden)", cpu, cpus=slots.threads, workers=slots.cpu))
        return groups, {groups[0].title: "cuda"}, []

    def submit(self, cells: list[Cell], force: bool = False, retry_failed: bool = True) -> LaunchSummary:
        """Run the cells that are not finished; one launch per grid at a time (``launcher.wait`` waits for the
        other). SIGINT/SIGTERM stop the launch: running cells are requeued with a checkpoint, ``summary.stopped_by``
        says by which signal."""
        summary = LaunchSummary()
        if not cells:
            return summary
        grid_dir = Path(cells[0].dir).parent
        with locks.hold(grid_dir / ".launch.lock", f"grid {grid_dir}", wait=bool(self.cfg.get("wait", False)),
                        busy=GridBusy, on_wait=lambda who: log.info("waiting for the launch that holds %s: %s",
                                                                    grid_dir, who)), \
                PreemptionGuard() as stop:
            todo, skipped = prepare(cells, force, retry_failed, summary)
            summary.skipped = [c.id for c in skipped]
            busy = f", {len(summary.busy)} being run by another process" if summary.busy else ""
            print(f"{len(cells)} cells: {len(skipped)} already finished{busy}, {len(todo)} to run "
                  f"({self.name} launcher)")
            if todo and stop.signum is None:
                self._run(todo, summary, stop)
            summary.stopped_by = stop.signum
            stop.acted_on = True  # the launch has stopped on it; the command exits with 128 + the signal
        return summary

    def report(self, summary: LaunchSummary, cells: list[Cell], grid_dir: Path, metrics: list[str],
               seconds: float) -> None:
        from dadf.grid.aggregate import aggregate

        _, md = aggregate(grid_dir, list(metrics), cells=[c.id for c in cells])  # this launch's own cells
        print()
        print(md)
        print(f"{len(summary.done)} cells run, {len(summary.skipped)} skipped (finished), {len(summary.failed)} "
              f"failed in {seconds:.1f}s; results in {grid_dir}/ (table.md, table.csv, table.tex)")
        # what is not done, last, so it is what a user sees: failed cells with their reason, then stopped ones
        if summary.stopped_by:
            print(f"stopped by {signal.Signals(summary.stopped_by).name}: {len(summary.requeued)} cell(s) saved a "
                  f"checkpoint and were requeued; launch the same command again to resume")
        if summary.disk_full:
            print(f"stopped: {summary.disk_full}")
        for title, unfinished in (("being run by another process", summary.busy), ("FAILED", summary.failed)):
            if unfinished:
                print(f"{len(unfinished)} cell(s) {title}:")
                for cid, reason in unfinished.items():
                    print(f"  {cid}: {reason}")


class Debug(Local):
    """One cell after another in this process, so breakpoints and pdb work."""

    name = "debug"

    def _run(self, todo: list[Cell], summary: LaunchSummary, stop: PreemptionGuard) -> None:
        run_debug(todo, self.cfg, summary, stop)


class Slurm(Launcher):
    """submitit job arrays on a SLURM cluster (dadf/grid/slurm.py); ``submit`` returns once they are queued."""

    name = "slurm"

    def __init__(self, lcfg: DictConfig):
        super().__init__(lcfg)
        self._tasks: dict[tuple[str, str], int] = {}  # resources depend on the method and dataset only

    def processes(self, cell: Cell) -> int:
        from dadf.grid.slurm import resources_for

        key = (cell.data["method"]["name"], cell.data["dataset"]["name"])
        if key not in self._tasks:
            self._tasks[key] = resources_for(cell.data, self.cfg).ntasks
        return self._tasks[key]

    def queued(self, cells: list[Cell]) -> set[str] | None:
        from dadf.grid import slurm

        try:
            states = slurm.queue_states(float(self.cfg.get("squeue_timeout_s") or 60))
        except slurm.SlurmError as e:
            print(f"plan: the queue was not read ({e}); cells queued there count as to run")
            return None
        return {c.id for c in cells if c.dir.is_dir() and slurm.active_job(c.dir, states)}

    def groups(self, todo: list[Cell]) -> tuple[list, dict[str, str], list[str]]:
        from dadf.grid import slurm
        from dadf.grid.plan import Group

        limits = slurm.cluster_limits(self.cfg)
        groups, kinds = [], {}
        for res, arrays in slurm.array_plan(todo, self.cfg, limits):
            g = Group(res.describe(), [c for a in arrays for c in a], [len(a) for a in arrays], int(res.gpus),
                      int(res.cpus) * res.ntasks, int(res.time_min))
            groups.append(g)
            kinds[g.title] = "cuda" if int(res.gpus) > 0 else "cpu"
        return groups, kinds, [f"job arrays of at most {limits.array_size} cells ({limits.describe()})"]

    def submit(self, cells: list[Cell], force: bool = False, retry_failed: bool = True) -> LaunchSummary:
        """Submit the cells that are neither finished nor queued/running as job arrays; return at once."""
        from dadf.grid import slurm

        try:
            finished, queued, todo, submitted = slurm.run_slurm(
                cells, self.cfg, force, retry_failed, lambda cs, f, r: prepare(cs, f, r, write=True))
        except (ValueError, RuntimeError) as e:  # a bad launcher setting, sbatch or squeue refusing: said in a line
            raise LaunchError(str(e)) from None
        summary = LaunchSummary(skipped=[c.id for c in finished], queued=[c.id for c in queued], submitted=submitted)
        print(f"{len(cells)} cells: {len(finished)} already finished, {len(queued)} already queued or running, "
              f"{len(todo)} submitted (slurm launcher)")
        return summary

    def report(self, summary: LaunchSummary, cells: list[Cell], grid_dir: Path, metrics: list[str],
               seconds: float) -> None:
        # Submitting does not wait: the jobs run on the cluster; status.py reads the cell folders and the queue.
        from dadf.grid.slurm import watch_hint

        ids = sorted({j.split("_")[0] for j in summary.submitted.values()}, key=lambda j: (len(j), j))
        print(f"job ids: {' '.join(ids) if ids else '(none submitted)'}")
        print(f"runs folder: {grid_dir.resolve()}")
        print(f"watch it: {watch_hint(grid_dir)}")


LAUNCHERS: dict[str, type[Launcher]] = {"local": Local, "debug": Debug, "slurm": Slurm}


def launcher_for(lcfg: DictConfig) -> Launcher:
    if lcfg.name not in LAUNCHERS:
        raise ValueError(f"launcher {lcfg.name!r} is not available; choose one of {sorted(LAUNCHERS)}")
    return LAUNCHERS[lcfg.name](lcfg)


def launch(cells: list[Cell], lcfg: DictConfig, force: bool = False, retry_failed: bool = True) -> LaunchSummary:
    """Run (local, debug) or submit (slurm) the cells that are not finished, with the launcher ``lcfg`` names."""
    return launcher_for(lcfg).submit(cells, force, retry_failed)
