"""The results store: plain files per cell, written atomically, read by the launcher, status and aggregator.

    runs/<grid>/grid.json            the cells of the grid's latest expansion, in table order
    runs/<grid>/<cell-id>/cell.yaml  the frozen config (written before the cell is launched)
                         status.json {"state": pending|running|done|failed, "reason", ...}
                         metrics.json, scores.npz, log.jsonl, checkpoints/
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
REQUEUED = "requeued"  # preempted after saving a checkpoint; the next run of the cell resumes from it


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder and rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def write_cell_config(cell_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(Path(cell_dir) / "cell.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def read_cell_config(cell_dir: Path) -> DictConfig:
    path = Path(cell_dir) / "cell.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {cell_dir} is not a cell folder (launch_grid.py writes them)")
    return OmegaConf.load(path)


def read_status(cell_dir: Path) -> dict:
    return read_json(Path(cell_dir) / "status.json", default={"state": PENDING})


def write_status(cell_dir: Path, state: str, **fields) -> dict:
    status = {"state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    write_json(Path(cell_dir) / "status.json", status)
    return status


def is_done(cell_dir: Path) -> bool:
    return read_status(cell_dir).get("state") == DONE and (Path(cell_dir) / "metrics.json").exists()


def write_scores(cell_dir: Path, **arrays: np.ndarray) -> None:
    path = Path(cell_dir) / "scores.npz"
    tmp = path.with_name(".scores.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
