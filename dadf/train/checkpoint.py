"""Atomic checkpoints: ``step-N.tmp/`` is written, marked complete, then renamed to ``step-N/``.

Resume takes the newest folder that holds the marker, so a save killed half-way is never loaded.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

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


def load(folder: Path) -> dict:
    path = Path(folder) / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
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
