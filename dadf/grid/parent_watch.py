"""The local launcher's forkserver imports this module first: from then on the kernel ends the forkserver when the
launcher ends, however it ends (kill -9 included) and at any moment, also while the forkserver is still importing
the training stack (seconds) and the launcher is still composing the grid. Without it a launcher killed early leaves
the forkserver, and the resource tracker that waits for it, running with nobody to serve.

The workers the forkserver forks watch the launcher themselves (dadf/grid/launch.py, ``_die_with_launcher``): they
save a checkpoint before they go, which the forkserver has no need of."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PARENT_ENV = "DADF_FORKSERVER_PARENT"  # the launcher's pid, set while it starts the forkserver
PR_SET_PDEATHSIG = 1


def watch_parent() -> None:
    parent = os.environ.get(PARENT_ENV)
    if not parent or os.getpid() == int(parent):
        return
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere the forkserver's own EOF check
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the launcher died before the request was in place
        os._exit(0)


watch_parent()
