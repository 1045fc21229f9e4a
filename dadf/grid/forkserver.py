"""The local launcher's worker processes start from one forkserver that imported the training stack once.

Torch-free on purpose: the launch command starts the forkserver first thing (``warm_up_from_argv``), so that it
imports torch and the methods (~3 s) while the launcher itself imports, composes and checks the grid."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Sequence

# What every worker imports: loaded once in the forkserver, which forks the workers with it already in memory.
# dadf.grid.parent_watch first: the forkserver ends with the launcher also while it imports the rest.
# torch._dynamo: torch's optimisers import it when the first one is made (seconds), which every worker's first
# torch cell would otherwise pay.
WORKER_PRELOAD = ["dadf.grid.parent_watch", "dadf.grid.runner", "dadf.methods", "dadf.data.pipeline",
                  "sklearn.metrics", "torch._dynamo"]


def worker_context(method: str):
    """Workers fork from one process that has imported the training stack once (forkserver: not one import per
    worker), with OpenMP told to wait passively: busy-waiting threads of several workers spin against each other's
    cores. The forkserver (or a spawned worker) reads its environment when it starts, before it imports torch."""
    if method not in ("forkserver", "spawn"):  # plain fork after torch has started threads can deadlock
        raise ValueError(f"launcher.start_method={method!r}: choose forkserver or spawn")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(WORKER_PRELOAD)
        _ensure_running()
    return ctx


def _ensure_running() -> None:
    """Start the forkserver (once) with Ctrl-C ignored: Ctrl-C reaches the terminal's whole process group, and the
    launcher, not the forkserver in the middle of its imports, decides what it means. The workers it forks set
    their own handlers (PreemptionGuard) in sessions of their own."""
    from multiprocessing import forkserver

    from dadf.grid.parent_watch import PARENT_ENV

    os.environ[PARENT_ENV] = str(os.getpid())  # read by the forkserver's first import (parent_watch)
    try:
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored signal stays ignored across exec
        except ValueError:  # not the main thread: start it as it is
            forkserver.ensure_running()
            return
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        os.environ.pop(PARENT_ENV, None)


def warm_up(launcher: str, start_method: str | None) -> None:
    """Start the local launcher's forkserver now (a no-op when it runs already or another launcher is used)."""
    if launcher == "local" and (start_method or "forkserver") == "forkserver":
        worker_context("forkserver")


def warm_up_from_argv(argv: Sequence[str]) -> None:
    """``warm_up`` as the command line asks, before any config is composed: the default launcher is local with a
    forkserver, so only an explicit other launcher or start method opts out. (A launcher of the user's own config
    folder that spawns only leaves an idle forkserver, which ends with the launcher.)"""
    values = {a.split("=", 1)[0].lstrip("+"): a.split("=", 1)[1] for a in argv if "=" in a and not a.startswith("-")}
    warm_up(values.get("launcher", "local"), values.get("launcher.start_method"))
