"""Where a small grid's time goes: wall time of a whole launch, time inside training (each cell's
``timing.train_s`` in metrics.json), the fixed cost per cell and the import cost of one worker process.

    python jobs/bench_grid.py                                   # the quickstart grid (50 digits cells)
    python jobs/bench_grid.py --mnist --root /data              # + an MNIST ovr slice: 2 classes, ae/deep_svdd
    python jobs/bench_grid.py --start-methods forkserver,spawn  # compare how the workers start

Each launch runs in a fresh runs folder (shards are built once, before the clock starts). Prints a table and writes
JSON (``--out``, default bench/grid.json). The load average is recorded: numbers from a busy machine mislead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

REPO = Path(__file__).resolve().parents[1]
GRIDS = {
    "quickstart": ["grid=quickstart"],
    "mnist": ["grid=mnist_ovr", "grid.methods=[ae,deep_svdd]", "grid.classes=[0,1]", "trainer.steps=50"],
}


def _launch(args: list[str], env: dict) -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, str(REPO / "jobs/launch_grid.py"), *args], capture_output=True, text=True,
                         env=env)
    wall = time.time() - t0
    if out.returncode != 0:
        sys.exit(f"error: the launch failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall


def _worker_import_s(env: dict) -> float:
    """Seconds a fresh process takes to import what a worker runs cells with."""
    code = ("import time; t = time.time(); import dadf.grid.runner, dadf.methods, dadf.data.pipeline, torch._dynamo, "
            "sklearn.metrics; print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


def _torch_import_s(env: dict) -> float:
    """Seconds a fresh process takes to import torch: the unit the quickstart's wall time is measured in."""
    code = "import time; t = time.time(); import torch; print(time.time() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


def bench(name: str, start_method: str, extra: list[str], root: str | None, env: dict) -> dict:
    from dadf.grid.store import CellDir

    with tempfile.TemporaryDirectory(prefix="dadf-bench-grid-") as tmp:
        shards = Path(tmp) / "shards"
        args = [*GRIDS[name], f"shards_dir={shards}", f"launcher.start_method={start_method}", *extra]
        if root:
            args.append(f"dataset.root={root}")
        # shards are built outside the clock: a cold build is a one-off, not the per-launch cost measured here
        dataset = ["dataset=mnist", f"dataset.root={root}"] if name == "mnist" else ["dataset=digits"]
        subprocess.run([sys.executable, str(REPO / "jobs/build_shards.py"), f"shards_dir={shards}", *dataset],
                       capture_output=True, env=env, check=True)
        load = os.getloadavg()[0]
        wall = _launch([*args, f"runs_dir={Path(tmp) / 'runs'}"], env)
        cells = [json.loads(p.read_text()) for p in (Path(tmp) / "runs").glob(f"*/*/{CellDir.METRICS}")]
    n = len(cells)
    train = sum(c.get("timing", {}).get("train_s", 0.0) for c in cells)
    hw = cells[0]["hardware"] if cells else {}
    return {"grid": name, "start_method": start_method, "cells": n, "wall_s": round(wall, 2),
            "train_s": round(train, 2), "train_per_cell_s": round(train / max(n, 1), 3),
            # the overhead: wall/cells - train/cells (workers run cells side by side, so it can be small)
            "fixed_per_cell_s": round((wall - train) / max(n, 1), 3),
            # share of the wall time not spent training, the workers' parallelism folded in
            "fixed_share": round(1 - train / max(1, hw.get("workers", 1)) / wall, 3) if wall else None,
            "threads": hw.get("threads"), "workers": hw.get("workers"), "load_avg_1m_before": round(load, 2),
            "extra": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", action="store_true", help="also run an MNIST ovr slice (needs --root)")
    ap.add_argument("--root", default=None, help="dataset.root for --mnist, e.g. /data")
    ap.add_argument("--start-methods", default="forkserver", help="comma-separated: forkserver,spawn")
    ap.add_argument("--out", default=str(REPO / "bench/grid.json"))
    ap.add_argument("overrides", nargs="*", help="extra overrides for every launch, e.g. launcher.workers=1")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    grids = ["quickstart"] + (["mnist"] if a.mnist else [])
    if a.mnist and not a.root:
        sys.exit("error: --mnist needs --root (the folder that holds MNIST/raw), e.g. --root /data")
    for name in grids:
        for method in a.start_methods.split(","):
            rows.append(bench(name, method, a.overrides, a.root if name == "mnist" else None, env))
            r = rows[-1]
            print(f"{r['grid']:<11} {r['start_method']:<10} cells={r['cells']:<3} wall={r['wall_s']:6.2f}s "
                  f"train={r['train_s']:6.2f}s fixed/cell={r['fixed_per_cell_s']:.3f}s "
                  f"fixed share={r['fixed_share']:.0%} workers={r['workers']} threads={r['threads']} "
                  f"load={r['load_avg_1m_before']}", flush=True)
    torch_s = min(_torch_import_s(env) for _ in range(3))  # the same run's unit (its best of three)
    for r in rows:
        r["wall_over_import_torch"] = round(r["wall_s"] / torch_s, 2)
    result = {"cores": len(os.sched_getaffinity(0)), "worker_import_s": round(_worker_import_s(env), 2),
              "import_torch_s": round(torch_s, 2), "runs": rows}
    print(f"worker import (one fresh process): {result['worker_import_s']}s on {result['cores']} cores; "
          f"import torch: {result['import_torch_s']}s")
    for r in rows:
        print(f"{r['grid']} ({r['start_method']}): {r['wall_over_import_torch']}x one import torch")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
