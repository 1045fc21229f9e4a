"""Live training curves (``trainer.tracker``): a cell's losses, validation values and learning rates, streamed while
it trains through Accelerate's tracker classes (``accelerate.tracking``: TensorBoardTracker, WandBTracker,
MLflowTracker), by the main process only.

TensorBoard writes its event files straight into the cell folder, so ``tensorboard --logdir runs/<grid>`` shows
every cell of a grid side by side, each run named by its cell id. The trackers are built here, not through
``Accelerator(log_with=...)``: the Accelerator is made before the trainer knows its cell folder (and a grid's
debug launcher reuses one process for many cells), while a tracker belongs to one cell.

Each run of a cell (a resume included) tells TensorBoard to drop what earlier runs of it wrote after the step it
starts from (``purge_step``: after the checkpoint's step; everything for a fresh or forced run), as log.jsonl is cut
back: curves never jump back or show two runs on top of each other.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

TRACKERS = ("auto", "none", "tensorboard", "wandb", "mlflow")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_INSTALL = {"tensorboard": 'pip install -e ".[tracking]"', "wandb": "pip install wandb", "mlflow": "pip install mlflow"}


def resolve(choice: str) -> str:
    """The tracker a cell uses: ``auto`` is tensorboard when it is installed, else none."""
    if choice not in TRACKERS:
        raise ValueError(f"trainer.tracker={choice!r} must be one of {', '.join(TRACKERS)}")
    if choice == "auto":
        return "tensorboard" if _installed("tensorboard") else "none"
    return choice


def problem(choice: str) -> str | None:
    """Why ``trainer.tracker=choice`` cannot run here (for the checks at launch), or None."""
    try:
        kind = resolve(choice)
    except ValueError as e:
        return str(e)
    if kind != "none" and not _installed(_PACKAGES[kind]):
        return (f"trainer.tracker={choice} needs the package {_PACKAGES[kind]}, which is not installed: "
                f"{_INSTALL[kind]}, or trainer.tracker=none")
    return None


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


class Curves:
    """What the trainer logs to: ``log(values, step)`` and ``close()``; does nothing when tracking is off."""

    def __init__(self, tracker=None):
        self.tracker = tracker

    def log(self, values: dict, step: int) -> None:
        if self.tracker is not None and values:
            self.tracker.log({k: float(v) for k, v in values.items()}, step=int(step))

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None

    def __enter__(self) -> Curves:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_curves(choice: str, cell_dir: Path, start_step: int, main: bool) -> Curves:
    """The cell's curves in ``cell_dir`` (a grid's runs folder holds one per cell), continuing at ``start_step``;
    off on every process but the main one."""
    kind = resolve(choice)
    if kind == "none" or not main:
        return Curves()
    why = problem(choice)
    if why:
        raise RuntimeError(why)
    from accelerate import tracking

    cell_dir = Path(cell_dir)
    grid, cell = cell_dir.parent.name, cell_dir.name
    if kind == "tensorboard":
        tracker = tracking.TensorBoardTracker(run_name="", logging_dir=str(cell_dir), purge_step=int(start_step) + 1)
    elif kind == "wandb":  # offline: synced later with `wandb sync <cell>/wandb/offline-run-*`
        tracker = tracking.WandBTracker(grid, name=cell, id=cell, resume="allow", dir=str(cell_dir), mode="offline")
    else:  # mlflow: the experiment is the grid; the store is MLflow's own setting (MLFLOW_TRACKING_URI, ./mlruns)
        tracker = tracking.MLflowTracker(experiment_name=grid, logging_dir=str(cell_dir), run_name=cell)
    tracker.start()
    return Curves(tracker)


def learning_rates(optimizers: dict) -> dict[str, float]:
    """``lr/<network>``: the first parameter group's learning rate of each of a method's optimisers."""
    out = {}
    for name, opt in optimizers.items():
        groups = getattr(opt, "param_groups", None)
        if groups:
            out[f"lr/{name}"] = float(groups[0]["lr"])
    return out
