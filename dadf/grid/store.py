"""The results store: plain files per grid and per cell, written atomically, read by the launcher, status and
aggregator.

    runs/<grid>/grid.json    the cells of the grid's latest expansion, in table order
    runs/<grid>/<cell-id>/   a cell folder: CellDir names its files and reads and writes them
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dadf.atomic import atomic_write
from dadf.procs import pid_alive
from dadf.train import outputs

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
REQUEUED = "requeued"  # preempted after saving a checkpoint; the next run of the cell resumes from it
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


def read_json(path: Path | str, default=None):
    """The file's JSON, ``default`` when it does not exist; :class:`Unreadable` when it cannot be read or parsed."""
    try:
        return json.loads(_read_text(path))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8 or JSON
        raise _unreadable(path, e) from None


def _read_text(path: Path | str) -> str:
    """The file's text, read with os.open/os.read: half the time of a file object, which shows at 30,000 files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 65536)]
        if len(chunks[0]) == 65536:  # a large file: read on to its end
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
    except OSError as e:  # os.read names no file (a folder in the file's place): name it, as open() would
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


_ABSENT = object()


def _read_object(path: Path | str) -> dict | None:
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
    return read_manifest(grid_dir).get("cells") or cell_folders(grid_dir)


def cell_folders(grid_dir: Path) -> list[str]:
    """The names of the grid's cell folders (those holding a cell.yaml), sorted."""
    return sorted(p.parent.name for p in Path(grid_dir).glob(f"*/{CellDir.CONFIG}"))


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


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


# ---------------------------------------------------------------------------------------------------- a cell folder

class CellDir:
    """One cell's folder: the one place that names its files, with their readers and writers.

        cell.yaml       the frozen config, resolved (written before the cell runs)
        status.json     {"state": pending|running|done|failed|requeued, "reason", ...}
        heartbeat.json  {host, pid, time}, rewritten every HEARTBEAT_S s while the cell runs
        metrics.json    the result; scores.npz the test scores; recon.npz a few test inputs and their reconstructions
        log.jsonl       the training curves; checkpoints/ the saved steps (names taken from dadf.train.outputs)
        slurm.json      the SLURM jobs submitted for it; plots/ its PNGs; .lock held by the process running it

    Files are opened by their plain string paths: pathlib's per-call cost shows when the tables read 10,000 cells.
    """

    CONFIG, STATUS, HEARTBEAT = "cell.yaml", "status.json", "heartbeat.json"
    METRICS, SCORES, RECON = "metrics.json", "scores.npz", "recon.npz"
    LOG, CHECKPOINTS = outputs.LOG_FILE, outputs.CHECKPOINTS
    SLURM, PLOTS, LOCK = "slurm.json", "plots", ".lock"
    # A forced rerun starts afresh, without the last run's results, state, curves and checkpoints (which it would
    # resume from). Kept: cell.yaml (written again), slurm.json (the jobs already submitted: none is submitted twice),
    # the lock (another process may hold it), and what a run writes over (heartbeat.json, recon.npz, plots/, the
    # method's files).
    RERUN_CLEARS = (METRICS, SCORES, LOG, STATUS, CHECKPOINTS)

    __slots__ = ("path", "_folder")

    def __init__(self, path: str | os.PathLike):
        self.path = path if isinstance(path, Path) else Path(path)
        self._folder = str(self.path)

    def __repr__(self) -> str:
        return f"CellDir({self._folder!r})"

    def _file(self, name: str) -> str:
        return f"{self._folder}/{name}"

    # -- the files ---------------------------------------------------------------------------------------
    @property
    def cell_yaml(self) -> Path:
        return self.path / self.CONFIG

    @property
    def status(self) -> Path:
        return self.path / self.STATUS

    @property
    def heartbeat(self) -> Path:
        return self.path / self.HEARTBEAT

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def scores(self) -> Path:
        return self.path / self.SCORES

    @property
    def recon(self) -> Path:
        return self.path / self.RECON

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def slurm(self) -> Path:
        return self.path / self.SLURM

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    # -- cell.yaml ---------------------------------------------------------------------------------------
    def write_config(self, cfg: DictConfig | dict, sync: bool = True) -> None:
        """cell.yaml, resolved: plain data in block YAML (OmegaConf's own dump costs ~20 ms a cell). Each top-level
        key is rendered on its own and the texts joined, which is the same document; a block that is the very
        object of the cell before (the cells of one composition share their method, dataset and trainer) is
        rendered once."""
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        text = "".join(_block_yaml(key, value) for key, value in data.items())
        atomic_write_text(self._file(self.CONFIG), text, sync=sync)

    def read_config_text(self) -> str:
        """cell.yaml's text: FileNotFoundError when absent, OSError or ValueError when it cannot be read."""
        return _read_text(self._file(self.CONFIG))

    def read_config_data(self) -> dict:
        """cell.yaml as plain data. It is written resolved (write_config), so a C YAML parser reads it as OmegaConf
        would, ~15x faster: the launcher and the tables read every cell of a grid. :class:`Unreadable` when
        damaged."""
        path = self._file(self.CONFIG)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: {self._folder} is not a cell folder (launch_grid.py writes "
                                    f"them)")
        try:
            full = yaml.load(_read_text(path), Loader=_YAML_LOADER)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise _unreadable(path, e) from None
        cell = full.get("cell") if isinstance(full, dict) else None
        # A truncated file can still parse: the keys the tables are built from must all be there.
        if not isinstance(cell, dict) or not {"method", "dataset", "protocol"} <= set(cell):
            raise _unreadable(path, "no complete cell: mapping; truncated?")
        return full

    def read_config(self) -> DictConfig:
        """cell.yaml as the config a cell runs with."""
        try:
            return OmegaConf.create(self.read_config_data())
        except OmegaConfBaseException as e:
            raise _unreadable(self._file(self.CONFIG), e) from None

    # -- state -------------------------------------------------------------------------------------------
    def read_status(self, verify: bool = True) -> dict:
        """status.json ({"state": pending} before it exists). A damaged one, or a finished cell's damaged
        metrics.json or cell.yaml, reads as {"state": UNREADABLE, "reason": "unreadable: <path> (<error>)"}: the
        launcher reruns the cell, status.py and the tables show it. ``verify=False``: what status.json says, the
        finished cell's other files unread."""
        if verify:
            return self.read_status_and_metrics()[0]
        try:
            return _read_object(self._file(self.STATUS)) or {"state": PENDING}
        except Unreadable as e:
            return {"state": UNREADABLE, "reason": str(e)}

    def read_status_and_metrics(self, verify_config: bool = True) -> tuple[dict, dict | None]:
        """(read_status's verdict, a finished cell's metrics.json or None), each file read once.
        ``verify_config=False``: the caller has read cell.yaml itself."""
        metrics = None
        try:
            status = _read_object(self._file(self.STATUS)) or {"state": PENDING}
            if status.get("state") == DONE:  # done means its results can be read and told apart
                metrics = _read_object(self._file(self.METRICS))
                if verify_config and os.path.exists(self._file(self.CONFIG)):
                    self.read_config_data()
        except Unreadable as e:
            return {"state": UNREADABLE, "reason": str(e)}, None
        return status, metrics

    def write_status(self, state: str, sync: bool = True, **fields) -> dict:
        status = {"state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
        write_json(self._file(self.STATUS), status, sync=sync)
        return status

    def is_done(self, status: dict | None = None) -> bool:
        """Finished with readable results (read_status, or the ``status`` it gave); otherwise the launcher runs the
        cell (again)."""
        status = self.read_status() if status is None else status
        return status.get("state") == DONE and os.path.exists(self._file(self.METRICS))

    def write_heartbeat(self) -> None:
        write_json(self._file(self.HEARTBEAT), {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})

    def liveness(self, status: dict) -> str | None:
        """Why a cell whose status says running is lost (its process is gone), or None.

        Evidence: heartbeat.json ({host, pid, time}, rewritten every HEARTBEAT_S s by the running process), else
        status.json's own host/pid/time (cells written before heartbeats). On this host a pid that no longer exists
        is proof; on any host a heartbeat older than STALE_S is. Callers that can ask SLURM's queue ask it first.
        """
        if status.get("state") != RUNNING:
            return None
        try:
            beat = _read_object(self._file(self.HEARTBEAT))
        except Unreadable:
            beat = None  # caught mid-damage: judge by status.json, as for an older cell
        host, pid, t = ((beat or status).get(k) for k in ("host", "pid", "time"))
        hint = "relaunch to resume from its last checkpoint"
        if host == socket.gethostname() and isinstance(pid, int) and pid > 0:
            if not pid_alive(pid):
                return f"its process (pid {pid} on {host}) is gone; {hint}"
            if beat is None:
                return None  # no heartbeat written (an older version): the live pid is the best evidence there is
        if isinstance(t, (int, float)) and time.time() - t > STALE_S:
            return (f"no heartbeat from pid {pid} on {host} for {time.time() - t:.0f} s (over {STALE_S} s): its "
                    f"process is gone; {hint}")
        return None

    # -- results -----------------------------------------------------------------------------------------
    def read_metrics(self) -> dict | None:
        """metrics.json: None when absent, :class:`Unreadable` when damaged."""
        return _read_object(self._file(self.METRICS))

    def write_metrics(self, result: dict) -> None:
        write_json(self._file(self.METRICS), result)

    def write_scores(self, **arrays: np.ndarray) -> None:
        write_npz(self._file(self.SCORES), **arrays)

    def write_recon(self, **arrays: np.ndarray) -> None:
        write_npz(self._file(self.RECON), **arrays)

    def clear_for_rerun(self) -> None:
        """Remove RERUN_CLEARS: the cell then runs from the start, as if never run."""
        for path in map(self._file, self.RERUN_CLEARS):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


CELL_LOCK = CellDir.LOCK  # held by the process running the cell (rank 0); the kernel releases it however that one ends


# ---------------------------------------------------------------------------------------------------- by folder path
# CellDir's operations for callers that hold a cell folder's path.

def write_cell_config(cell_dir: Path, cfg: DictConfig | dict, sync: bool = True) -> None:
    CellDir(cell_dir).write_config(cfg, sync)


def read_cell_data(cell_dir: Path) -> dict:
    return CellDir(cell_dir).read_config_data()


def read_cell_config(cell_dir: Path) -> DictConfig:
    return CellDir(cell_dir).read_config()


def read_status(cell_dir: Path) -> dict:
    return CellDir(cell_dir).read_status()


def write_status(cell_dir: Path, state: str, sync: bool = True, **fields) -> dict:
    return CellDir(cell_dir).write_status(state, sync, **fields)


def is_done(cell_dir: Path, status: dict | None = None) -> bool:
    return CellDir(cell_dir).is_done(status)


def liveness(cell_dir: Path, status: dict) -> str | None:
    return CellDir(cell_dir).liveness(status)


def write_scores(cell_dir: Path, **arrays: np.ndarray) -> None:
    CellDir(cell_dir).write_scores(**arrays)
