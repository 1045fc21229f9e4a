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
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dadf.atomic import atomic_write

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
REQUEUED = "requeued"  # preempted after saving a checkpoint; the next run of the cell resumes from it
CELL_LOCK = ".lock"  # held by the process running the cell (rank 0); the kernel releases it however that one ends
HEARTBEAT_S = 30  # a running cell rewrites <cell>/heartbeat.json this often


def atomic_write_text(path: Path, text: str, sync: bool = True) -> None:
    atomic_write(path, lambda f: f.write(text), sync=sync)


def write_json(path: Path, obj, sync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", sync=sync)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------------- reading
# One damaged file (garbage bytes, a truncated write from a dying disk, a hand edit) must not stop the launcher,
# status.py or the aggregator: it makes its cell UNREADABLE, which they show with the file's path and rerun.

UNREADABLE = "unreadable"  # status.json, or a finished cell's metrics.json or cell.yaml, cannot be parsed
LOST = "lost"  # says running, but its process is gone: relaunching resumes it from its last checkpoint
STALE_S = 300  # a heartbeat this old means the process is gone (10 missed beats: a slow disk is no false alarm)


class Unreadable(ValueError):
    """A store file that exists but cannot be parsed; the message is ``unreadable: <path> (<short error>)``."""


def _unreadable(path: Path, why: BaseException | str) -> Unreadable:
    text = f"{type(why).__name__}: {why}" if isinstance(why, BaseException) else why
    return Unreadable(f"unreadable: {path} ({(text.splitlines() or [''])[0][:160]})")


def read_json(path: Path, default=None):
    """The file's JSON, ``default`` when it does not exist; :class:`Unreadable` when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8 or JSON
        raise _unreadable(path, e) from None


_ABSENT = object()


def _read_object(path: Path) -> dict | None:
    """A JSON object file: None when absent, :class:`Unreadable` when damaged or not an object."""
    obj = read_json(path, _ABSENT)
    if obj is _ABSENT:
        return None
    if not isinstance(obj, dict):
        raise _unreadable(path, f"a JSON {type(obj).__name__}, not an object")
    return obj


def read_manifest(grid_dir: Path) -> dict:
    """grid.json, {} before the first launch. A damaged one warns (naming it) and reads as {}: the cells are then
    found by their folders."""
    path = Path(grid_dir) / "grid.json"
    try:
        manifest = _read_object(path) or {}
        if not isinstance(manifest.get("cells", []), list):
            raise _unreadable(path, "its cells are not a list")
    except Unreadable as e:
        warnings.warn(f"{e}; listing the cell folders instead", stacklevel=1)  # one location: warned once
        return {}
    return manifest


def cell_ids(grid_dir: Path) -> list[str]:
    """The grid's cells in table order: those of its latest expansion (grid.json), else every cell folder."""
    return read_manifest(grid_dir).get("cells") or sorted(p.parent.name for p in Path(grid_dir).glob("*/cell.yaml"))


def write_cell_config(cell_dir: Path, cfg: DictConfig | dict, sync: bool = True) -> None:
    """cell.yaml, resolved: plain data in block YAML (OmegaConf's own dump costs ~20 ms a cell). Each top-level
    key is rendered on its own and the texts joined, which is the same document; a block that is the very object
    of the cell before (the cells of one composition share their method, dataset and trainer) is rendered once."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    text = "".join(_block_yaml(key, value) for key, value in data.items())
    atomic_write_text(Path(cell_dir) / "cell.yaml", text, sync=sync)


_BLOCKS: dict[tuple[str, int], tuple[object, str]] = {}  # (key, id(block)) -> (block, its text); the block is kept
# alive so that its id is not reused while it is here


def _block_yaml(key: str, value) -> str:
    if not isinstance(value, (dict, list)):
        return _dump({key: value})
    entry = _BLOCKS.get((key, id(value)))
    if entry is not None and entry[0] is value:
        return entry[1]
    text = _dump({key: value})
    if len(_BLOCKS) > 4096:  # a few blocks per composition; a long-lived process starts over now and then
        _BLOCKS.clear()
    _BLOCKS[(key, id(value))] = (value, text)
    return text


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True)


def read_cell_data(cell_dir: Path) -> dict:
    """cell.yaml as plain data. It is written resolved (write_cell_config), so a C YAML parser reads it as OmegaConf
    would, ~15x faster: the launcher and the tables read every cell of a grid. :class:`Unreadable` when damaged."""
    path = Path(cell_dir) / "cell.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {cell_dir} is not a cell folder (launch_grid.py writes them)")
    try:
        full = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise _unreadable(path, e) from None
    cell = full.get("cell") if isinstance(full, dict) else None
    # A truncated file can still parse: the keys the tables are built from must all be there.
    if not isinstance(cell, dict) or not {"method", "dataset", "protocol"} <= set(cell):
        raise _unreadable(path, "no complete cell: mapping; truncated?")
    return full


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def read_cell_config(cell_dir: Path) -> DictConfig:
    """cell.yaml as the config a cell runs with."""
    try:
        return OmegaConf.create(read_cell_data(cell_dir))
    except OmegaConfBaseException as e:
        raise _unreadable(Path(cell_dir) / "cell.yaml", e) from None


def read_status(cell_dir: Path) -> dict:
    """status.json ({"state": pending} before it exists). A damaged one, or a finished cell's damaged metrics.json
    or cell.yaml, reads as {"state": UNREADABLE, "reason": "unreadable: <path> (<error>)"}: the launcher reruns the
    cell, status.py and the tables show it."""
    cell_dir = Path(cell_dir)
    try:
        status = _read_object(cell_dir / "status.json") or {"state": PENDING}
        if status.get("state") == DONE:  # done means its results can be read and told apart
            _read_object(cell_dir / "metrics.json")
            if (cell_dir / "cell.yaml").exists():
                read_cell_data(cell_dir)
    except Unreadable as e:
        return {"state": UNREADABLE, "reason": str(e)}
    return status


def write_status(cell_dir: Path, state: str, sync: bool = True, **fields) -> dict:
    status = {"state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    write_json(Path(cell_dir) / "status.json", status, sync=sync)
    return status


def is_done(cell_dir: Path, status: dict | None = None) -> bool:
    """Finished with readable results (read_status, or the ``status`` it gave); otherwise the launcher runs the
    cell (again)."""
    status = read_status(cell_dir) if status is None else status
    return status.get("state") == DONE and (Path(cell_dir) / "metrics.json").exists()


def liveness(cell_dir: Path, status: dict) -> str | None:
    """Why a cell whose status says running is lost (its process is gone), or None.

    Evidence: heartbeat.json ({host, pid, time}, rewritten every HEARTBEAT_S s by the running process), else
    status.json's own host/pid/time (cells written before heartbeats). On this host a pid that no longer exists is
    proof; on any host a heartbeat older than STALE_S is. Callers that can ask SLURM's queue ask it first.
    """
    if status.get("state") != RUNNING:
        return None
    try:
        beat = _read_object(Path(cell_dir) / "heartbeat.json")
    except Unreadable:
        beat = None  # caught mid-damage: judge by status.json, as for an older cell
    host, pid, t = ((beat or status).get(k) for k in ("host", "pid", "time"))
    hint = "relaunch to resume from its last checkpoint"
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if not _pid_alive(pid):
            return f"its process (pid {pid} on {host}) is gone; {hint}"
        if beat is None:
            return None  # no heartbeat written (an older version): the live pid is the best evidence there is
    if isinstance(t, (int, float)) and time.time() - t > STALE_S:
        return (f"no heartbeat from pid {pid} on {host} for {time.time() - t:.0f} s (over {STALE_S} s): its process "
                f"is gone; {hint}")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def write_scores(cell_dir: Path, **arrays: np.ndarray) -> None:
    write_npz(Path(cell_dir) / "scores.npz", **arrays)
