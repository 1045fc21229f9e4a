"""``dadf-train`` (or ``python jobs/train.py``): run one cell (a folder written by launch_grid.py) in this process:

    python jobs/train.py cell=runs/quickstart/ae-digits-ovr-c3-s0-1a2b3c

It resumes from the cell's newest complete checkpoint when there is one. On several processes:

    torchrun --nproc_per_node 4 jobs/train.py cell=runs/...

SIGUSR2, SIGTERM or Ctrl-C makes it save at the next step and exit with 128 + the signal's number (rerun to resume;
a second Ctrl-C stops at once). A cell runs in one process at a time: a second one exits with 3 and names the first.
"""
from __future__ import annotations

import argparse
import sys

from dadf.cli import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cell", help="cell=<folder> (or just the folder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cell = args.cell.split("=", 1)[1] if args.cell.startswith("cell=") else args.cell
    setup_logging()
    from dadf.grid.runner import CellBusy, DiskFull, run_cell
    from dadf.grid.store import Unreadable
    from dadf.train.preemption import Preempted

    try:
        result = run_cell(cell, progress=not args.no_progress)
    except (FileNotFoundError, Unreadable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CellBusy as e:
        print(f"error: {e}; it runs once at a time: wait for that process or stop it", file=sys.stderr)
        return 3
    except DiskFull as e:
        print(f"error: {e.strerror}", file=sys.stderr)
        return 1
    except Preempted as p:
        print(f"{p}; rerun the same command to resume", file=sys.stderr)
        return 128 + p.signum  # the shell's convention for "ended by this signal"
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the newest complete checkpoint", file=sys.stderr)
        return 130
    print(" ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items() if isinstance(v, float)))
    return 0

