"""Advisory file locks that say who holds them: one launch per grid, one process per cell.

The kernel releases an ``flock`` when its holder dies, however it dies (kill -9 included), so a lock can never be
left stale. The lock file holds its holder's host, pid, start time and command, so whoever finds it taken can say
who has it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class Busy(RuntimeError):
    """The lock is held by another process; ``holder`` describes it."""

    def __init__(self, what: str, holder: str):
        self.holder = holder
        super().__init__(f"{what} is held by {holder}")


def describe(path: Path) -> str:
    """'pid 123 on host h since 12:00:01 (python jobs/launch_grid.py ...)', as far as the lock file tells."""
    try:
        owner = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        owner = {}
    if not owner:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
    command = f" ({owner['command']})" if owner.get("command") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')} since {since}{command}"


@contextlib.contextmanager
def hold(path: Path, what: str, wait: bool = False, on_wait=None, busy: type[Busy] = Busy):
    """Hold the lock at ``path`` for the block. Taken: raise ``busy`` (a :class:`Busy`), or with ``wait`` block
    until it is free (``on_wait(holder)`` is called once before blocking)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise busy(what, describe(path)) from None
            if on_wait is not None:
                on_wait(describe(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                 "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(path: Path) -> str | None:
    """Who holds the lock at ``path`` right now (see :func:`describe`), or None when it is free or absent."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return describe(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
