"""A real single-node SLURM cluster for the tests in this folder, brought up once per session by slurm/up.sh.

Where the cluster cannot be brought up (not root, SLURM missing and no apt-get), the tests that need it skip with
the reason. With root and apt it must come up: a failure there fails the tests (CI must run them, not skip them).
The daemons are stopped at the end only if this session started them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
STATE_DIR = Path(os.environ.get("DADF_SLURM_DIR", "/tmp/dadf-slurm"))


def _daemons_alive() -> bool:
    for name in ("slurmctld.pid", "slurmd.pid"):
        pid_file = STATE_DIR / name
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return False
    return True


def _cannot_bring_up() -> str | None:
    if os.geteuid() != 0:
        return "the dev SLURM cluster needs root (slurm/up.sh runs the daemons as root)"
    needed = ("slurmctld", "slurmd", "munged", "sbatch", "squeue")
    if not all(shutil.which(n) for n in needed) and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is not available to install it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """Yields the SLURM_CONF path of the running dev cluster (exported to this process and its children)."""
    reason = _cannot_bring_up()
    if reason:
        pytest.skip(reason)
    started_here = not _daemons_alive()
    up = subprocess.run(["bash", str(SLURM_DIR / "up.sh")], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail(f"slurm/up.sh failed ({up.returncode}):\n{up.stderr[-3000:]}")
    conf = str(STATE_DIR / "slurm.conf")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if started_here:
        subprocess.run(["bash", str(SLURM_DIR / "down.sh")], capture_output=True, text=True, timeout=120)
