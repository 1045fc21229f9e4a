"""Helpers for the SLURM tests: run the jobs/ scripts, read cell folders, wait with a useful message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_job(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """A jobs/ script in a fresh interpreter, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "jobs" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def launch(runs: Path, shards: Path, *overrides: str) -> subprocess.CompletedProcess:
    r = run_job("launch_grid.py", "launcher=slurm", f"runs_dir={runs}", f"shards_dir={shards}", *overrides)
    assert r.returncode == 0, f"launch_grid.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def cell_dirs(grid_dir: Path) -> list[Path]:
    return [grid_dir / c for c in json.loads((grid_dir / "grid.json").read_text())["cells"]]


def state(cell_dir: Path) -> str:
    try:
        return json.loads((cell_dir / "status.json").read_text())["state"]
    except (FileNotFoundError, json.JSONDecodeError):
        return "none"


def job_ids(cell_dir: Path) -> list[str]:
    return [j["job_id"] for j in json.loads((cell_dir / "slurm.json").read_text())["jobs"]]


def wait_until(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    queue = subprocess.run(["squeue", "--states=all"], capture_output=True, text=True).stdout
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\nsqueue:\n{queue}")


def wait_finished(cells: list[Path], timeout: float) -> None:
    wait_until(lambda: all(state(c) in ("done", "failed") for c in cells), timeout,
               f"cells to finish: { {c.name: state(c) for c in cells} }")
