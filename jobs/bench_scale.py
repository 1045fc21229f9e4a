"""How a launch scales with the number of cells: the quickstart grid (5 methods x 10 classes) with 20, 200 and 1,000
seeds, i.e. 1k, 10k and 50k cells, on the local launcher.

For each size:
- expansion: seconds to expand, check and prepare the cells in this process (and per cell);
- first cell: seconds from starting ``jobs/launch_grid.py`` until its first cell is reported done (the launch is then
  stopped with Ctrl-C, as a user would);
- plan: seconds for ``plan=true`` (expand, check and print the plan; nothing written);
and, over a finished grid of 10k cell folders, the seconds of ``jobs/status.py`` (status.json of every folder, the
table) in a fresh interpreter.

    python jobs/bench_scale.py                      # 1k, 10k and 50k cells
    python jobs/bench_scale.py --sizes 1000,10000   # fewer

Prints a line per measure and writes JSON (``--out``, default bench/scale.json) with the load average: numbers from
a busy machine mislead. SLURM submission at scale: slurm/bench.py.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

REPO = Path(__file__).resolve().parents[1]
CELLS_PER_SEED = 50  # the quickstart: 5 methods x 10 classes


def _seeds(cells: int) -> str:
    return "grid.seeds=[" + ",".join(map(str, range(max(1, cells // CELLS_PER_SEED)))) + "]"


def expansion(cells: int, tmp: Path) -> dict:
    """In this process: expand, check and prepare (what a launch does before its first cell)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dadf.config import CONFIG_DIR
    from dadf.grid.cells import expand
    from dadf.grid.launch import prepare
    from dadf.grid.validate import check_cells

    overrides = [_seeds(cells), f"runs_dir={tmp / 'runs'}", f"shards_dir={tmp / 'shards'}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        compose_ = lambda o: compose(config_name="config", overrides=list(o))
        base = compose_(overrides)
        t0 = time.perf_counter()
        grid = expand(base, overrides, compose_)
        t1 = time.perf_counter()
        problems = check_cells(grid)
        t2 = time.perf_counter()
        prepare(grid, force=False, retry_failed=True)
        t3 = time.perf_counter()
    assert not problems, problems
    n = len(grid)
    return {"cells": n, "expand_s": round(t1 - t0, 3), "check_s": round(t2 - t1, 3), "prepare_s": round(t3 - t2, 3),
            "per_cell_ms": round(1000 * (t3 - t0) / n, 3)}


def first_cell(cells: int, tmp: Path, env: dict) -> float:
    """Seconds from starting the launch to its first finished cell."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs/launch_grid.py"), _seeds(cells),
                             f"runs_dir={tmp / 'runs'}", f"shards_dir={tmp / 'shards'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    took = None
    try:
        for line in proc.stdout:
            if " done " in line:
                took = time.time() - t0
                break
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if took is None:
        sys.exit(f"error: the launch of {cells} cells ended before any cell finished")
    return took


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--status-cells", type=int, default=10000, help="cell folders for the status.py timing")
    ap.add_argument("--out", default=str(REPO / "bench/scale.json"))
    a = ap.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    for cells in map(int, a.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="dadf-bench-scale-") as tmp:
            tmp = Path(tmp)
            subprocess.run([sys.executable, str(REPO / "jobs/build_shards.py"), f"shards_dir={tmp / 'shards'}",
                            "dataset=digits"], capture_output=True, env=env, check=True)
            load = os.getloadavg()[0]
            row = expansion(cells, tmp)
            row["plan_s"] = round(timed([sys.executable, str(REPO / "jobs/launch_grid.py"), _seeds(cells),
                                         "plan=true", f"runs_dir={tmp / 'runs'}", f"shards_dir={tmp / 'shards'}"],
                                        env), 2)
            row["first_cell_s"] = round(first_cell(cells, tmp, env), 2)
            row["load_avg_1m_before"] = round(load, 2)
        rows.append(row)
        print(f"{row['cells']:>6} cells: expand {row['expand_s']:.2f}s check {row['check_s']:.2f}s prepare "
              f"{row['prepare_s']:.2f}s ({row['per_cell_ms']:.3f} ms a cell); plan=true {row['plan_s']:.1f}s; "
              f"first cell done {row['first_cell_s']:.1f}s after the launch (load {row['load_avg_1m_before']})",
              flush=True)
    status = {}
    if a.status_cells:
        sys.path.insert(0, str(REPO / "jobs"))
        from bench_aggregate import build_grid

        with tempfile.TemporaryDirectory(prefix="dadf-bench-status-") as tmp:
            grid = build_grid(Path(tmp) / "tabular", a.status_cells)
            status = {"cells": a.status_cells,
                      "status_s": round(timed([sys.executable, str(REPO / "jobs/status.py"), str(grid),
                                               "--no-queue"], env), 2),
                      "aggregate_s": round(timed([sys.executable, str(REPO / "jobs/aggregate.py"), str(grid)],
                                                 env), 2)}
        print(f"status.py over {status['cells']} finished cells: {status['status_s']:.2f}s; aggregate.py: "
              f"{status['aggregate_s']:.2f}s")
    result = {"cores": len(os.sched_getaffinity(0)), "launch": rows, "status": status}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
