"""The one way dadf writes a file that others read while it may be killed: temporary file, fsync, rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, write, binary: bool = False, sync: bool = True) -> None:
    """The one writer of every file in a cell folder: ``write(f)`` fills a temporary file in the same folder, which
    is fsynced and renamed over ``path``, so readers see the old or the new file, never half of one.

    ``sync=False`` leaves the fsync to the caller, which writes many files in one pass and then syncs once
    (``sync_all``): until then a crash of the machine (not of the process) can lose them, which the caller accepts
    for files it writes again when they are missing or damaged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # flush/fsync errors name no file: say which one
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def sync_all() -> None:
    """Flush every file written with ``sync=False`` to disk: one system call for a whole pass of writes."""
    os.sync()
