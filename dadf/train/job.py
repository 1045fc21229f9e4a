"""Old home of the submitit callable, kept so that jobs pickled as ``dadf.train.job.CellJob`` (already queued on a
cluster when dadf was updated) still unpickle. The class lives in :mod:`dadf.grid.runner`; the import is lazy
(PEP 562) so that importing ``dadf.train`` never imports the grid layer."""
from __future__ import annotations


def __getattr__(name: str):
    if name == "CellJob":
        from dadf.grid.runner import CellJob

        return CellJob
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
