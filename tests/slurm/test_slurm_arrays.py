"""Grids larger than the cluster's MaxArraySize, and GPUs by method kind, on the real dev SLURM cluster.

The module lowers the cluster's MaxArraySize to 5 (slurm/up.sh with DADF_SLURM_MAX_ARRAY_SIZE: a reconfigure, the
running jobs go on) and restores it at the end. Its 12 cells are AE cells of a few steps on synthetic data but one,
of 3000 steps, which is the first task of the second array: it is preempted mid-training and must resume.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from .slurm_helpers import REPO, cell_dirs, job_ids, launch, run_job, state, wait_finished, wait_until

pytestmark = pytest.mark.slurm

MAX_ARRAY_SIZE = 5
LONG_STEPS = 3000
# 12 cells: trainer.steps is the axis (1..11 steps), with the long cell placed first in the second array
STEPS = [*range(1, 6), LONG_STEPS, *range(6, 12)]
GRID = ["launcher.job_name=dadf-test-arrays", "dataset=synthetic", "grid.methods=[ae]", "grid.classes=[0]",
        f"++grid.axes={{trainer.steps:[{','.join(map(str, STEPS))}]}}", "trainer.batch_size=16", "trainer.log_every=10",
        "trainer.checkpoint_every=100000", "launcher.gpus=0", "launcher.cpus=1", "launcher.mem_gb=1",
        "launcher.time_min=15", "launcher.array_parallelism=3"]


def _up(**env: str) -> None:
    r = subprocess.run(["bash", str(REPO / "slurm" / "up.sh")], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def small_arrays(slurm_cluster):
    _up(DADF_SLURM_MAX_ARRAY_SIZE=str(MAX_ARRAY_SIZE))
    root = Path(tempfile.mkdtemp(prefix="dadf-slurm-arrays-"))
    try:
        yield root
    finally:
        subprocess.run(["scancel", "--name=dadf-test-arrays"], capture_output=True, timeout=60)
        _up()  # the setting this session started with
        shutil.rmtree(root, ignore_errors=True)


def _status(cell: Path) -> dict:
    try:
        return json.loads((cell / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _logged_step(cell: Path) -> int:
    try:
        return json.loads((cell / "log.jsonl").read_text().splitlines()[-1])["step"]
    except (FileNotFoundError, IndexError, KeyError, json.JSONDecodeError):
        return 0


def test_a_grid_larger_than_max_array_size_goes_out_as_several_arrays_and_resumes(small_arrays):
    runs, shards = small_arrays / "runs", small_arrays / "shards"
    r = run_job("build_shards.py", "dataset=synthetic", f"shards_dir={shards}")
    assert r.returncode == 0, r.stderr[-3000:]
    out = launch(runs, shards, *GRID).stdout
    grid = runs / "quickstart"
    cells = cell_dirs(grid)
    assert len(cells) == len(STEPS) == 12
    assert f"go out as 3 arrays of at most {MAX_ARRAY_SIZE} (max_array_size={MAX_ARRAY_SIZE} (scontrol)" in out, out
    counts = [line.split("(")[1].split()[0] for line in out.splitlines() if line.startswith("submitted job ")]
    assert counts == ["5", "5", "2"], out
    arrays = [job_ids(c)[0].split("_")[0] for c in cells]
    assert [arrays.count(a) for a in dict.fromkeys(arrays)] == [5, 5, 2]

    # Preempt the long cell (first task of the second array) mid-training with the signal SLURM sends before a time
    # limit, straight to its process (scancel --signal on a task of an array with pending tasks may be refused as
    # "can not be altered now" after delivering it, and retried).
    long_cell = cells[STEPS.index(LONG_STEPS)]  # cells in axis order
    assert f"steps: {LONG_STEPS}\n" in (long_cell / "cell.yaml").read_text()
    job = job_ids(long_cell)[0]
    assert job == f"{list(dict.fromkeys(arrays))[1]}_0", job
    wait_until(lambda: _status(long_cell).get("state") == "running" and _logged_step(long_cell) >= 50, 600,
               "the long cell to train 50 steps")
    os.kill(_status(long_cell)["pid"], signal.SIGUSR2)
    status = wait_until(lambda: _status(long_cell).get("state") == "requeued" and _status(long_cell), 120,
                        "the long cell to be marked requeued", every=0.1)
    step = status.get("step") or 0
    assert 0 < step < LONG_STEPS, status
    # A line the first run could have written at the saved step: a resumed run keeps the log up to that step, a run
    # started over cuts it back to nothing.
    with open(long_cell / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "probe": "kept by a resume"}) + "\n")

    wait_finished(cells, 900)
    assert [c.name for c in cells if state(c) != "done"] == []
    assert json.loads((long_cell / "metrics.json").read_text())["steps"] == LONG_STEPS
    assert any("probe" in line for line in (long_cell / "log.jsonl").read_text().splitlines())
    assert job_ids(long_cell) == [job]  # requeued by SLURM under its id in the second array, never resubmitted
    log = Path(json.loads((long_cell / "slurm.json").read_text())["jobs"][0]["stdout"]).read_text()
    assert f"Requeued job {job}" in log

    again = launch(runs, shards, *GRID)
    assert "12 already finished" in again.stdout and "0 submitted" in again.stdout, again.stdout
    r = run_job("status.py", str(grid), "--no-table")
    assert r.returncode == 0 and "12 cells" in r.stdout and "done 12" in r.stdout, r.stdout


def _gres(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=60).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("TresPerNode=")), "")


def test_torch_cells_ask_for_a_gpu_and_shallow_cells_for_none(slurm_cluster, tmp_path):
    gpus = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=60).stdout
    if "gpu" not in gpus:
        pytest.skip("the dev node declares no GPUs (DADF_SLURM_GPUS=0): sbatch refuses any job asking for one")
    cells: dict[str, str] = {}
    r = launch(tmp_path / "runs", tmp_path / "shards", "launcher.job_name=dadf-test-arrays", "dataset=synthetic",
               "grid.methods=[ae,iforest]", "grid.classes=[0]", "launcher.cpus=1", "launcher.mem_gb=1",
               "launcher.array_parallelism=1", "+launcher.additional_parameters.hold=true")  # never started
    try:
        cells = {json.loads((c / "slurm.json").read_text())["jobs"][0]["resources"]: job_ids(c)[0]
                 for c in cell_dirs(tmp_path / "runs" / "quickstart")}
        by_gpus = {res.split()[0]: job for res, job in cells.items()}
        assert set(by_gpus) == {"gpus=1", "gpus=0"}, (cells, r.stdout)
        assert _gres(by_gpus["gpus=1"]) == "gres:gpu:1"
        assert "gpu" not in _gres(by_gpus["gpus=0"])
    finally:
        subprocess.run(["scancel", *cells.values()], capture_output=True, timeout=60)
