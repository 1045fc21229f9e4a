"""Processes on this host: whether one is still alive (the owner of a shard build's scratch folder, a running
cell). Low-level on purpose: dadf.data and dadf.grid both ask."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
