"""How long `python jobs/aggregate.py runs/<grid>` takes on large grids: builds synthetic finished grids of 1,000 and
10,000 cells in the store's format (cell.yaml as the launcher freezes it, status.json and metrics.json as the trainer
writes them) and times the aggregator over each, in a fresh interpreter as a user runs it (imports included).

    python jobs/bench_aggregate.py                        # 1k and 10k cells under a temporary folder
    python jobs/bench_aggregate.py --dir /scratch/bench   # keep the grids there (rebuilt only when absent)
    python jobs/bench_aggregate.py --cells 10000 --repeat 5

A grid is tabular, as ADBench-style studies are: 10 methods × (cells / 100) datasets × 10 seeds (``--seeds``),
every cell finished. Prints a line per size and writes JSON (``--out``, default bench/aggregate.json) with the load
average: numbers from a busy machine mislead, so the aggregator's CPU time is given beside its wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

REPO = Path(__file__).resolve().parents[1]
METHODS = ["ae", "deep_svdd", "simplex_ae", "iforest", "ocsvm", "kde", "knn", "lof", "pca", "hbos"]
SEEDS = 10  # per method and dataset (--seeds)

# a frozen cell.yaml of the tabular grid, as the launcher writes it (OmegaConf.to_yaml of the resolved config)
CELL_YAML = """seed: {seed}
method:
  name: {method}
  latent_dim: 32
  width: 32
  lr: 0.001
  weight_decay: 0.0
dataset:
  name: {dataset}
  source: {dataset}
  root: /data
  download: false
  size: null
  channels: null
  params: {{}}
  top_k_percent: 20
  num_classes: 2
protocol:
  name: tabular
  train_fraction: 0.5
  top_k_rule: percentile
trainer:
  steps: null
  epochs: 20
  batch_size: 64
  accumulate: 1
  eval_batch_size: 512
  precision: fp32
  strategy: ddp
  zero_stage: 0
  device: auto
  num_threads: null
  compile: false
  channels_last: null
  data_on_device: true
  data: memory
  memory_budget: 0.5
  data_workers: 2
  checkpoint_every: 1000
  keep_checkpoints: 2
  sync_every: 1
  selection: last
  eval_every: null
  select_after: 0
  log_every: 50
  progress: true
  tracker: auto
paths:
  runs_dir: {runs}
  shards_dir: /shards
cell:
  grid: {grid}
  id: {id}
  method: {method}
  dataset: {dataset}
  protocol: tabular
  target_class: null
  seed: {seed}
  secondary: null
  axes:
    dataset: {dataset}
  config_hash: {hash}
"""


def _metrics(cell: dict, seed: int, quality: float) -> dict:
    """metrics.json of a finished cell, with the provenance fields the trainer records."""
    m = {"precision": quality * 0.8, "recall": quality * 0.7, "f1": quality * 0.75, "auroc": quality}
    return {"metrics": m, "cell": cell, "config_hash": cell["config_hash"], "target_class_name": None,
            "split": {"train": {"normal": 1000, "anomalous": 0}, "val": {"normal": 0, "anomalous": 0},
                      "test": {"normal": 900, "anomalous": 100}},
            "top_k": {"percent": 20, "rule": "percentile"}, "effective_params": {"latent_dim": 32, "lr": 0.001},
            "steps": 300, "selection": {"rule": "last", "step": 300}, "seed": seed, "wall_time_s": 12.5,
            "timing": {"train_s": 10.1, "start_s": 2.4},
            "hardware": {"cpu": "x86_64", "device": "cpu", "num_processes": 1, "precision": "fp32",
                         "torch": "2.5.1", "precision_effective": "fp32", "global_batch": 64, "accumulate": 1,
                         "threads": 1, "workers": 2, "channels_last": False},
            "skipped_steps": {}, "code": {"dadf": "0.1.0", "git_commit": "0123456789abcdef0123"}}


def build_grid(grid_dir: Path, cells: int, seeds: int = SEEDS) -> Path:
    """A finished tabular grid of `cells` cells (10 methods × cells/(10 seeds) datasets × seeds); kept when
    complete."""
    import random

    from dadf.grid.store import CellDir

    if (grid_dir / "grid.json").exists():
        return grid_dir
    datasets = [f"set{i:04d}" for i in range(max(1, cells // (len(METHODS) * seeds)))]
    rng = random.Random(0)
    ids = []
    for method_i, method in enumerate(METHODS):
        for ds_i, dataset in enumerate(datasets):
            base = 0.6 + 0.03 * method_i + 0.2 * ((ds_i * 7919) % 100) / 100  # methods differ, datasets too
            for seed in range(seeds):
                cid = f"{method}-{dataset}-tabular-s{seed}-{rng.getrandbits(24):06x}"
                h = f"{rng.getrandbits(32):08x}"
                d = CellDir(grid_dir / cid)
                d.path.mkdir(parents=True)
                d.cell_yaml.write_text(CELL_YAML.format(seed=seed, method=method, dataset=dataset,
                                                        runs=grid_dir.parent, grid=grid_dir.name, id=cid, hash=h))
                cell = {"grid": grid_dir.name, "id": cid, "method": method, "dataset": dataset,
                        "protocol": "tabular", "target_class": None, "seed": seed, "secondary": None,
                        "axes": {"dataset": dataset}, "config_hash": h}
                quality = min(0.999, base + rng.gauss(0, 0.02))
                d.metrics.write_text(json.dumps(_metrics(cell, seed, quality), indent=2, sort_keys=True))
                d.status.write_text(json.dumps({"state": "done", "time": 1.7e9, "host": "node1", "pid": 4242,
                                                "auroc": quality, "wall_time_s": 12.5}, indent=2, sort_keys=True))
                ids.append(cid)
    (grid_dir / "grid.json").write_text(json.dumps({"grid": grid_dir.name, "cells": ids, "metrics": ["auroc"]},
                                                   indent=2))
    return grid_dir


def time_aggregate(grid_dir: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of `python jobs/aggregate.py <grid>` in a fresh interpreter, as a user runs it. The CPU
    time (user + system) says what the wall time would be on an idle machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(REPO / "jobs/aggregate.py"), str(grid_dir)], capture_output=True,
                         text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"error: aggregate failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="where the synthetic grids are built (default: a temporary folder)")
    ap.add_argument("--cells", type=int, action="append", help="grid sizes (repeatable; default 1000 and 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the best and the median are reported")
    ap.add_argument("--seeds", type=int, default=SEEDS, help="seeds per method and dataset (more: fewer datasets)")
    ap.add_argument("--out", default=str(REPO / "bench/aggregate.json"))
    a = ap.parse_args()
    sizes = a.cells or [1000, 10000]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dadf-bench-aggregate-") as tmp:
        root = Path(a.dir) if a.dir else Path(tmp)
        for n in sizes:
            t0 = time.perf_counter()
            grid = build_grid(root / (f"bench_{n}" + (f"_s{a.seeds}" if a.seeds != SEEDS else "")), n, a.seeds)
            built = time.perf_counter() - t0
            load = os.getloadavg()[0]
            runs = sorted(time_aggregate(grid, env) for _ in range(a.repeat))
            times, cpu = [w for w, _ in runs], sorted(c for _, c in runs)
            rows.append({"cells": n, "seeds": a.seeds, "best_s": round(times[0], 3),
                         "median_s": round(times[len(times) // 2], 3),
                         "cpu_best_s": round(cpu[0], 3), "cpu_median_s": round(cpu[len(cpu) // 2], 3),
                         "runs_s": [round(t, 3) for t in times], "build_s": round(built, 1),
                         "load_avg_1m_before": round(load, 2)})
            r = rows[-1]
            print(f"{n:>6} cells: aggregate wall best {r['best_s']:.2f}s median {r['median_s']:.2f}s, CPU best "
                  f"{r['cpu_best_s']:.2f}s median {r['cpu_median_s']:.2f}s (wall runs {r['runs_s']}; grid built "
                  f"in {r['build_s']}s; load {r['load_avg_1m_before']})", flush=True)
    result = {"cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0], "runs": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
