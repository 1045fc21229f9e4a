"""Atomic checkpoints: ``step-N.tmp/`` is written, marked complete, then renamed to ``step-N/``.

Resume takes the newest folder that holds the marker, so a save killed half-way is never loaded.

Checkpoints are loaded as data (``torch.load(weights_only=True)``): tensors, plain values and containers, plus the
few other types a dadf checkpoint holds, allowed by name (``SAFE_TYPES``: numpy's RNG state and scalars, DeepSpeed's
ZeRO optimiser state). A file naming any other type is refused (``UnsafeCheckpoint``) before anything in it runs:
unpickling an arbitrary object can run arbitrary code.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(root: Path, step: int, state: dict, keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with open(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        (tmp / MARKER).write_text(f"{step}\n")
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save (disk full, say) must not hold on to the space
        raise
    if final.exists():  # the same step saved again (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune(root, keep)
    return final


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    found = []
    if Path(root).is_dir():
        for d in Path(root).iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / MARKER).exists() and (d / "state.pt").exists():
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


class CorruptCheckpoint(RuntimeError):
    """A checkpoint marked complete whose state cannot be read (damaged on disk after it was written)."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint that names types dadf never writes: loading it could run code, so it is not loaded."""


def _numpy_types() -> list:
    # numpy 2 pickles name numpy._core; files written under numpy 1 name numpy.core
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    types = [np.ndarray, np.dtype, core._reconstruct, core.scalar,
             (core._reconstruct, "numpy.core.multiarray._reconstruct"), (core.scalar, "numpy.core.multiarray.scalar")]
    types += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.int32, np.float64, np.float32, np.bool_)]
    return types


# Types a checkpoint may name besides torch's own, each a plain record (an enum, a dataclass, a scale and its
# counters): numpy's (the RNG state of np.random, metric values), and DeepSpeed's ZeRO 1-2 optimiser state, imported
# only when a file names them (deepspeed takes seconds to import).
DEEPSPEED_TYPES = ("deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.utils.tensor_fragment.fragment_address",
                   "deepspeed.runtime.fp16.loss_scaler.LossScaler",
                   "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler")
SAFE_TYPES = ("numpy arrays, dtypes and scalars", *DEEPSPEED_TYPES)


def _by_name(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def load_data(path: Path) -> object:
    """``torch.load`` of a file dadf wrote, as data only; ``UnsafeCheckpoint`` (naming the file and the types) for a
    file that names other types. Nothing in a refused file is run."""
    with torch.serialization.safe_globals(_numpy_types()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            if not unsafe:
                raise
        foreign = [n for n in unsafe if n not in DEEPSPEED_TYPES]
        if foreign:
            raise UnsafeCheckpoint(
                f"{path} names {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which dadf never "
                f"writes: unpickling it could run code, so it is not loaded. dadf's files hold tensors, plain values "
                f"and {', '.join(SAFE_TYPES)}. Move the file away (a resume then takes the next older checkpoint); "
                f"load it by hand only if you trust where it came from")
        with torch.serialization.safe_globals([_by_name(n) for n in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True)


def load(folder: Path) -> dict:
    path = Path(folder) / "state.pt"
    try:
        return load_data(path)
    except (FileNotFoundError, UnsafeCheckpoint):
        raise
    except Exception as e:  # noqa: BLE001 -- torch raises many types for damaged files; none names the file
        raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]})") from e


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint out of the way (kept for inspection), so that resume never picks it again."""
    folder = Path(folder)
    aside = folder.with_name(f"corrupt-{folder.name}-{int(time.time())}")
    os.rename(folder, aside)
    return aside


def prune(root: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and stale temporary folders."""
    found = complete_checkpoints(root)
    for _, d in found[: max(len(found) - keep, 0)]:
        shutil.rmtree(d, ignore_errors=True)
    newest = found[-1][0] if found else -1
    for d in Path(root).glob("step-*.tmp"):
        m = re.match(r"^step-(\d+)\.tmp$", d.name)
        if m and int(m.group(1)) < newest:
            shutil.rmtree(d, ignore_errors=True)
