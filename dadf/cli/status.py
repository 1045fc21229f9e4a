"""``dadf-status`` (or ``python jobs/status.py``): where a grid stands, at any time (also while its jobs run): counts
per state, failed cells with their reason and log, and the table so far. It only reads: it works on a read-only copy
of a grid and writes nothing.

    python jobs/status.py runs/cifar_loo            # reads the cell folders (+ squeue when SLURM is there)
    python jobs/status.py runs/cifar_loo --no-queue # the cell folders only

States: pending (not submitted / not started), queued (in the SLURM queue), running, requeued (preempted after a
checkpoint, waiting to resume), done, failed, lost (said running, but its SLURM job left the queue, its process on
this host is gone or its heartbeat stopped: relaunch to resume it), unreadable (a damaged status.json, metrics.json
or cell.yaml, named in the reason: the next launch reruns the cell).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections import Counter
from pathlib import Path

from dadf.cli import setup_logging

log = logging.getLogger(__name__)

ORDER = ["pending", "queued", "running", "requeued", "done", "failed", "lost", "unreadable"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid_dir")
    parser.add_argument("--no-queue", action="store_true", help="do not ask squeue (read the cell folders only)")
    parser.add_argument("--no-table", action="store_true", help="counts and problems only")
    args = parser.parse_args(argv)
    setup_logging()
    from dadf.grid import slurm, store

    grid_dir = Path(args.grid_dir)
    if not grid_dir.is_dir():
        print(f"error: {grid_dir} does not exist: run python jobs/launch_grid.py grid=<name> first", file=sys.stderr)
        return 2
    from dadf.grid.aggregate import aggregate, no_cyclic_gc
    from dadf.grid.table import load_records

    with no_cyclic_gc():
        records = load_records(grid_dir)  # every cell's files read once, for the counts and for the table
    if not records:
        print(f"error: {grid_dir} holds no cells (no grid.json, no */cell.yaml)", file=sys.stderr)
        return 2
    # On disk: a cell without a folder has not been scheduled yet (pending)
    views = {r.id: {"state": store.PENDING if r.state == "missing" else r.state, "reason": r.reason, "job_id": None,
                    "log": None} for r in records}
    submitted = [r for r in records if r.dir is not None and store.CellDir(r.dir).slurm.exists()]
    if not args.no_queue and submitted and shutil.which("squeue"):
        try:
            states = slurm.queue_states(timeout=30)
        except slurm.SlurmError as e:
            states = None
            log.warning("queue not read: %s; states are those on disk", e)
        for r in submitted:  # reconciled with the queue: queued, requeued by SLURM, lost
            views[r.id] = slurm.cell_view(r.dir, states)
    counts = Counter(v["state"] for v in views.values())
    line = "  ".join(f"{s} {counts.get(s, 0)}" for s in ORDER if counts.get(s) or s in ("pending", "running", "done",
                                                                                         "failed", "requeued"))
    print(f"{grid_dir}: {len(records)} cells   {line}")
    for name, v in views.items():
        if v["state"] in ("failed", "lost", "unreadable"):
            reason = (v["reason"] or "no reason recorded").removeprefix(f"{v['state']}: ")
            print(f"  {v['state'].upper():7s} {name}: {reason}")
            log_file = v["log"] or (None if v["state"] == "unreadable" else store.CellDir(grid_dir / name).status)
            if log_file:  # an unreadable cell's reason names its file already
                print(f"          log: {log_file}" + (f"  (job {v['job_id']})" if v["job_id"] else ""))
        elif v["state"] == "requeued":
            print(f"  requeued {name}: {v['reason']}")
    if not args.no_table:
        try:
            _, md = aggregate(grid_dir, write=False, records=records)
            print()
            print(md)
        except FileNotFoundError as e:
            log.info("no table yet: %s", e)
    return 0

