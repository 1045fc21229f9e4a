"""Launch overhead on a SLURM cluster: a grid of no-op-sized cells (1 training step) submitted with launch_grid.py.

    python slurm/bench.py --runs /tmp/bench/runs [--cells 20] [--parallelism 20]

Measures: how long launch_grid.py takes to return (expansion, shards, submission), the time from its start to the
first cell running (status.json says running: the job has started, Python and dadf are imported and the cell
folder is read), and per cell the overhead = (done - submitted) - the trainer's own wall time (queueing, job
start-up, imports, checkpoint discovery, writing results). Polls the cell folders every 50 ms.

    python slurm/bench.py --runs /tmp/bench/runs --submit-cells 1000 --max-array-size 200 [1001 ...]

Submission of a large grid, split into arrays of at most MaxArraySize tasks: for each MaxArraySize, the dev cluster's
slurmctld is restarted with it (slurm/up.sh, root), then the grid's cells are expanded, written and submitted held
(sbatch --hold: nothing runs) in this process, and a relaunch finds them all queued. Prints seconds per phase and
the number of arrays, writes them to <runs>/../bench_submit.json, cancels the jobs and restores MaxArraySize.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _job_start(log: Path) -> float | None:
    """The time submitit logged 'Starting with JobEnvironment' (the job's Python is up) in the task's stdout."""
    try:
        for line in log.read_text().splitlines():
            if "Starting with JobEnvironment" in line:
                stamp = line.split("(", 1)[1].split(")", 1)[0]
                return time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + \
                    int(stamp.split(",")[1]) / 1000
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return None


def _submission(runs: Path, cells_wanted: int, max_array_size: int) -> dict:
    """Expand, write and submit (held) a grid of ``cells_wanted`` cells with the cluster's MaxArraySize set to
    ``max_array_size``; then relaunch it (everything queued: nothing submitted). Seconds per phase, arrays."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dadf.config import CONFIG_DIR
    from dadf.grid import slurm
    from dadf.grid.cells import expand
    from dadf.grid.launch import prepare

    up = subprocess.run(["bash", str(REPO / "slurm" / "up.sh")], capture_output=True, text=True,
                        env={**os.environ, "DADF_SLURM_MAX_ARRAY_SIZE": str(max_array_size)})
    if up.returncode != 0:
        sys.exit(f"slurm/up.sh failed:\n{up.stderr[-2000:]}")
    runs = runs / f"max{max_array_size}"
    overrides = ["launcher=slurm", f"runs_dir={runs}", f"shards_dir={runs.parent / 'shards'}", "dataset=synthetic",
                 "grid.methods=[ae]", "grid.classes=all", f"grid.seeds={list(range((cells_wanted + 9) // 10))}",
                 "trainer.steps=1", "launcher.cpus=1", "launcher.mem_gb=1", "launcher.job_name=dadf-bench-submit",
                 "+launcher.additional_parameters.hold=true"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        c = lambda o: compose(config_name="config", overrides=list(o))
        base = c(overrides)
        t0 = time.time()
        cells = expand(base, overrides, c)[:cells_wanted]
        t_expand = time.time()
    lcfg = base.launcher
    grid_dir = Path(cells[0].dir).parent
    try:
        todo, _ = prepare(cells, False, True, write=True)  # as launcher=slurm does: every folder, one sync
        t_write = time.time()
        limits = slurm.cluster_limits(lcfg)
        submitted = slurm.submit(todo, lcfg, grid_dir, limits)
        t_submit = time.time()
        _, queued, again, _ = slurm.run_slurm(cells, lcfg, False, True,
                                              lambda cs, f, r: prepare(cs, f, r, write=True))
        t_relaunch = time.time()
    finally:
        subprocess.run(["scancel", "--name=dadf-bench-submit"], capture_output=True)
        GlobalHydra.instance().clear()
    arrays = sorted({j.split("_")[0] for j in submitted.values()})
    assert len(queued) == len(cells) and not again, "the relaunch should find every cell queued"
    return {"cells": len(cells), "max_array_size": limits.max_array_size, "source": limits.source["max_array_size"],
            "arrays": len(arrays), "expand_s": round(t_expand - t0, 2), "write_s": round(t_write - t_expand, 2),
            "submit_s": round(t_submit - t_write, 2), "relaunch_s": round(t_relaunch - t_submit, 2)}


def submission_bench(args) -> int:
    runs = Path(args.runs)
    subprocess.run([sys.executable, str(REPO / "jobs" / "build_shards.py"), "dataset=synthetic",
                    f"shards_dir={runs / 'shards'}"], cwd=REPO, check=True, capture_output=True)
    results = []
    try:
        for size in args.max_array_size:
            results.append(_submission(runs, args.submit_cells, size))
    finally:  # the dev cluster's own setting back
        subprocess.run(["bash", str(REPO / "slurm" / "up.sh")], capture_output=True, text=True)
    print(f"{args.submit_cells} cells submitted held, {os.cpu_count()} CPU cores on this machine")
    print(f"{'MaxArraySize':>12} {'arrays':>6} {'expand s':>9} {'write s':>8} {'submit s':>9} {'relaunch s':>10}")
    for r in results:
        print(f"{r['max_array_size']:>12} {r['arrays']:>6} {r['expand_s']:>9.2f} {r['write_s']:>8.2f} "
              f"{r['submit_s']:>9.2f} {r['relaunch_s']:>10.2f}")
    out = runs.parent / "bench_submit.json"
    out.write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=1))
    print(f"written: {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="a fresh runs folder (e.g. /tmp/<you>/bench/runs)")
    ap.add_argument("--cells", type=int, default=20, help="number of cells (10 classes x seeds)")
    ap.add_argument("--parallelism", type=int, default=20, help="launcher.array_parallelism")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--submit-cells", type=int, help="measure the submission of this many cells instead")
    ap.add_argument("--max-array-size", type=int, nargs="+", default=[200, 1001],
                    help="with --submit-cells: the dev cluster's MaxArraySize values to measure (default 200 1001)")
    args = ap.parse_args()
    if args.submit_cells:
        return submission_bench(args)
    runs = Path(args.runs)
    seeds = list(range((args.cells + 9) // 10))
    overrides = ["launcher=slurm", f"runs_dir={runs}", f"shards_dir={runs.parent / 'shards'}", "dataset=synthetic",
                 "grid.methods=[ae]", "grid.classes=all", f"grid.seeds={seeds}", "trainer.steps=1",
                 "trainer.batch_size=16", "launcher.cpus=1", "launcher.mem_gb=1", "launcher.time_min=15",
                 f"launcher.array_parallelism={args.parallelism}"]
    # Build the shards first, so that the launch measured below is a normal (re)launch of a new grid.
    subprocess.run([sys.executable, str(REPO / "jobs" / "build_shards.py"), "dataset=synthetic",
                    f"shards_dir={runs.parent / 'shards'}"], cwd=REPO, check=True, capture_output=True)
    t0 = time.time()
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "launch_grid.py"), *overrides], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t_return = time.time()
    if r.returncode != 0:
        sys.exit(f"launch_grid.py failed:\n{r.stdout}\n{r.stderr}")
    grid = runs / "quickstart"
    cells = [grid / c for c in json.loads((grid / "grid.json").read_text())["cells"]][: args.cells]
    first_running: dict[str, float] = {}
    done: set[str] = set()
    while len(done) < len(cells) and time.time() - t0 < args.timeout:
        for c in cells:
            if c.name in done:
                continue
            try:
                st = json.loads((c / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if st["state"] in ("running", "done", "failed") and c.name not in first_running:
                first_running[c.name] = time.time()
            if st["state"] in ("done", "failed"):
                done.add(c.name)
        time.sleep(0.05)
    overheads, walls, ends, starts, startup = [], [], [], [], []
    for c in cells:
        st = json.loads((c / "status.json").read_text())
        if st["state"] != "done":
            print(f"{c.name}: {st['state']} {st.get('reason', '')}")
            continue
        submitted = json.loads((c / "slurm.json").read_text())["jobs"][-1]["submitted"]
        wall = json.loads((c / "metrics.json").read_text())["wall_time_s"]
        overheads.append(st["time"] - submitted - wall)
        walls.append(wall)
        ends.append(st["time"])
        start = _job_start(Path(json.loads((c / "slurm.json").read_text())["jobs"][-1]["stdout"]))
        if start is not None:
            starts.append(start)
            startup.append(st["time"] - start - wall)
    print(f"{len(cells)} cells, array_parallelism={args.parallelism}, {os.cpu_count()} CPU cores on this machine")
    print(f"launch_grid.py returned after        {t_return - t0:6.1f} s")
    print(f"first cell running after             {min(first_running.values()) - t0:6.1f} s")
    print(f"all cells done after                 {max(ends) - t0:6.1f} s")
    print(f"trainer wall time per cell (median)  {statistics.median(walls):6.1f} s")
    print(f"overhead per cell, median [min, max] {statistics.median(overheads):6.1f} s "
          f"[{min(overheads):.1f}, {max(overheads):.1f}]  (done - submitted - trainer wall time)")
    if startup:
        print(f"in-job overhead per cell (median)    {statistics.median(startup):6.1f} s  "
              f"(done - job start - trainer wall time: imports, unpickling, checkpoint discovery, writing results)")
        runs = [e - s for e, s in zip(ends, starts)]
        slot = (max(ends) - min(starts)) * min(args.parallelism, len(cells)) / len(cells)
        print(f"scheduler gap per cell (estimate)    {slot - statistics.median(runs):6.1f} s  "
              f"(slot time per cell - median job run time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
