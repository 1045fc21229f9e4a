"""What a launch will do and cost, before it does it: ``plan=true`` prints this and exits, a real launch prints it
first.

The plan reads the cell folders (never writes), groups the cells to run as the launcher will (job arrays per
resource group under SLURM; GPU and CPU workers locally) and estimates each cell's time:

- from finished cells of the same method and dataset on the same kind of hardware (cpu / cuda), this grid's or
  another grid's in the same runs folder: seconds per training step times this cell's steps, plus the cell's fixed
  cost (data, scoring), medians over up to ``SAMPLES`` cells;
- else, with ``plan.calibrate=true``, from a short measured run of ``CALIBRATION_STEPS`` steps of one cell of that
  method and dataset in a temporary folder;
- else it is unknown and the plan says so.

Every time it prints is an estimate and is labelled as one, with where it came from.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dadf.grid import store
from dadf.grid.cells import Cell

SAMPLES = 20  # finished cells read per method and dataset
CALIBRATION_STEPS = 30


@dataclass
class Estimate:
    step_s: float | None  # seconds per training step (None: a method fitted once)
    fixed_s: float  # seconds outside the training steps (start, data, scoring), or the whole cell when fitted once
    steps: float | None  # the steps of the measured cells (their median)
    steps_per_epoch: float | None  # of the measured cells, at their global batch
    batch: int | None  # their trainer.batch_size
    source: str  # "N finished cells" or "calibrated (30 steps)"

    def seconds(self, trainer: dict) -> float:
        if self.step_s is None:
            return self.fixed_s
        steps = trainer.get("steps")
        if steps is None and trainer.get("epochs") is not None and self.steps_per_epoch:
            scale = (self.batch or trainer.get("batch_size") or 1) / (trainer.get("batch_size") or 1)
            steps = int(trainer["epochs"]) * math.ceil(self.steps_per_epoch * scale)
        steps = steps if steps is not None else self.steps or 0
        return self.fixed_s + self.step_s * float(steps)


@dataclass
class Group:
    """Cells that run alike: one SLURM resource group (its arrays), or the local GPU / CPU workers."""

    title: str
    cells: list[Cell]
    arrays: list[int] = field(default_factory=list)  # SLURM: cells per array
    gpus: int = 0  # per cell
    cpus: int = 1  # per cell
    time_min: int | None = None  # SLURM: the limit of one job run
    workers: int = 1  # local: cells at once


@dataclass
class Plan:
    launcher: str
    states: Counter
    groups: list[Group]
    estimates: dict[tuple[str, str, str], Estimate | None]
    kind: dict[str, str]  # group title -> hardware kind (cpu / cuda)
    notes: list[str] = field(default_factory=list)

    def cell_seconds(self, cell: Cell, kind: str) -> float | None:
        est = self.estimates.get(_key(cell, kind))
        return None if est is None else est.seconds(cell.data["trainer"])


def _key(cell: Cell, kind: str) -> tuple[str, str, str]:
    return cell.data["cell"]["method"], cell.data["dataset"]["name"], kind


# ---------------------------------------------------------------------------------------------------- states

def cell_state(cell: Cell) -> str:
    """new (no folder yet), done, failed, or the state on disk; read only."""
    if not cell.dir.is_dir():
        return "new"
    return store.CellDir(cell.dir).read_status(verify=False).get("state", store.PENDING)


# ---------------------------------------------------------------------------------------------------- estimates

def _hardware_kind(metrics: dict) -> str:
    return "cuda" if str((metrics.get("hardware") or {}).get("device", "cpu")).startswith("cuda") else "cpu"


def _from_finished(folders: list[Path], kind: str) -> Estimate | None:
    steps_s, fixed, steps, per_epoch, batches = [], [], [], [], []
    for d in folders:
        try:
            m = store.CellDir(d).read_metrics()
        except store.Unreadable:
            continue
        if not isinstance(m, dict) or _hardware_kind(m) != kind:
            continue
        timing, wall = m.get("timing") or {}, m.get("wall_time_s")
        train_s, n = timing.get("train_s"), m.get("steps")
        if wall is None or train_s is None:
            continue
        if n:
            steps_s.append(float(train_s) / float(n))
            steps.append(float(n))
            fixed.append(max(0.0, float(wall) - float(train_s)))
            rows = ((m.get("split") or {}).get("train") or {}).get("total")
            batch = (m.get("hardware") or {}).get("global_batch")
            if rows and batch:
                per_epoch.append(float(rows) / float(batch))
                batches.append(int(batch))
        else:
            fixed.append(float(wall))
        if len(fixed) >= SAMPLES:
            break
    if not fixed:
        return None
    med = statistics.median
    return Estimate(med(steps_s) if steps_s else None, med(fixed), med(steps) if steps else None,
                    med(per_epoch) if per_epoch else None, int(med(batches)) if batches else None,
                    f"{len(fixed)} finished cell{'s' * (len(fixed) != 1)}")


def _finished_folders(runs_dir: Path, method: str, dataset: str, limit: int = 4 * SAMPLES) -> list[Path]:
    """Finished cell folders of this method and dataset under any grid of ``runs_dir`` (their ids begin with
    ``<method>-<dataset>-``); names are listed, only the candidates' files are read."""
    prefix, found, metrics = f"{method}-{dataset}-", [], store.CellDir.METRICS
    with contextlib.suppress(OSError):
        for grid in sorted(os.scandir(runs_dir), key=lambda e: e.name):
            if not grid.is_dir():
                continue
            with contextlib.suppress(OSError):
                for entry in os.scandir(grid.path):
                    if entry.name.startswith(prefix) and os.path.exists(os.path.join(entry.path, metrics)):
                        found.append(Path(entry.path))
                        if len(found) >= limit:
                            return found
    return found


def calibrate(cell: Cell, steps: int = CALIBRATION_STEPS) -> Estimate:
    """Train a copy of ``cell`` for ``steps`` steps in a temporary folder and time it (its shards are read where
    they are built; the copy's outputs are deleted)."""
    import copy

    from dadf.grid import runner

    data = copy.deepcopy(cell.data)
    with tempfile.TemporaryDirectory(prefix="dadf-calibrate-") as tmp:
        data["trainer"].update(steps=steps, tracker="none", progress=False, checkpoint_every=10**9)
        data["paths"]["runs_dir"] = tmp
        d = Path(tmp) / cell.id
        store.write_cell_config(d, data)
        t0 = time.time()
        m = runner.run_cell(d)
        wall = time.time() - t0
    train_s = float((m.get("timing") or {}).get("train_s") or 0.0)
    rows = ((m.get("split") or {}).get("train") or {}).get("total")
    batch = (m.get("hardware") or {}).get("global_batch")
    trained = bool(m.get("steps"))
    return Estimate(train_s / steps if trained else None, max(0.0, wall - train_s) if trained else wall, None,
                    float(rows) / float(batch) if rows and batch else None, int(batch) if batch else None,
                    f"a {steps}-step calibration run" if trained else "one calibration fit")


# ---------------------------------------------------------------------------------------------------- the plan

def make_plan(cells: list[Cell], launcher, runs_dir: str | Path, calibrate_missing: bool = False,
              queued: set[str] | None = None) -> Plan:
    """The plan of launching ``cells`` with ``launcher`` (dadf.grid.launch.Launcher, which groups them); reads only
    (but ``calibrate_missing`` trains a few steps in a temporary folder for each method and dataset with no finished
    cell to estimate from)."""
    states = Counter()
    todo = []
    for cell in cells:
        state = "queued" if queued and cell.id in queued else cell_state(cell)
        states[state] += 1
        if state not in ("done", "queued"):
            todo.append(cell)
    groups, kinds, notes = launcher.groups(todo)
    notes = list(notes)
    estimates: dict[tuple[str, str, str], Estimate | None] = {}
    for g in groups:
        kind = kinds.get(g.title, "cpu")
        for cell in g.cells:
            key = _key(cell, kind)
            if key in estimates:
                continue
            est = _from_finished(_finished_folders(Path(runs_dir), key[0], key[1]), kind)
            if est is None and calibrate_missing:
                if kind == "cuda" and not _has_cuda():
                    notes.append(f"{key[0]} on {key[1]}: no GPU here to calibrate a GPU cell on")
                else:
                    est = calibrate(cell)
            estimates[key] = est
    return Plan(launcher.name, states, groups, estimates, kinds, notes)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def render(plan: Plan) -> str:
    s = plan.states
    order = ["new", "pending", "failed", "requeued", "running", "unreadable", "queued", "done"]
    counts = ", ".join(f"{s[k]} {k}" for k in order if s.get(k)) + \
        "".join(f", {n} {k}" for k, n in s.items() if k not in order)
    total = sum(s.values())
    to_run = sum(len(g.cells) for g in plan.groups)
    lines = [f"plan: {total} cells ({counts}); {to_run} to run ({plan.launcher} launcher)"]
    gpu_s = cpu_s = 0.0
    unknown: set[tuple[str, str]] = set()
    for g in plan.groups:
        if not g.cells:
            continue
        kind = plan.kind.get(g.title, "cpu")
        arrays = f", {len(g.arrays)} array{'s' * (len(g.arrays) != 1)} ({'+'.join(map(str, g.arrays))})" \
            if g.arrays else ""
        workers = f", {g.workers} at once" if not g.arrays else ""
        lines.append(f"  {len(g.cells)} cells{arrays}{workers}: {g.title}")
        per_key: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        group_s = 0.0
        for cell in g.cells:
            sec = plan.cell_seconds(cell, kind)
            key = _key(cell, kind)
            if sec is None:
                unknown.add(key[:2])
                continue
            per_key[key].append(sec)
            group_s += sec
            gpu_s += sec * g.gpus
            cpu_s += sec * g.cpus
        for key, secs in per_key.items():
            est = plan.estimates[key]
            mean = sum(secs) / len(secs)
            line = (f"    {key[0]} on {key[1]} ({kind}): ~{mean:.0f} s a cell (estimate from {est.source}), "
                    f"{len(secs)} cells")
            if g.time_min and mean > 60 * g.time_min:
                requeues = math.ceil(mean / (60 * g.time_min)) - 1
                line += (f"; WARNING: longer than time_min={g.time_min}: about {requeues} requeue(s) a cell "
                         f"({requeues * len(secs)} in all); raise launcher.time_min")
            lines.append(line)
        if not g.arrays and per_key:
            lines.append(f"    about {_hours(group_s / max(1, g.workers))} of wall time for these (estimate)")
    if unknown:
        what = ", ".join(f"{m} on {d}" for m, d in sorted(unknown))
        lines.append(f"  no estimate for {what}: no finished cell of it on this kind of hardware; plan.calibrate=true"
                     f" times a few steps of one")
    lines.append(f"  estimated cost{' (known cells only)' if unknown else ''}: {_hours(gpu_s)} GPU, "
                 f"{_hours(cpu_s)} CPU (cell time x GPUs / CPUs asked per cell)")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)
