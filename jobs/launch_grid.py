"""Launch a grid: expand it into cells, run those not finished yet, print and save the results table.

    python jobs/launch_grid.py                                   # grid=quickstart, local launcher
    python jobs/launch_grid.py grid=mnist_ovr dataset.root=../shared/data trainer.epochs=3
    python jobs/launch_grid.py grid=mnist_ovr method=ae protocol.target_class=3   # one cell
    python jobs/launch_grid.py grid=quickstart force=true        # rerun finished cells too
    python jobs/launch_grid.py grid=cifar_loo launcher=slurm     # submit job arrays to SLURM and return
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hydra import CONFIG_DIR, check_overrides  # noqa: E402


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from dadf.data.pipeline import ensure_shards
    from dadf.grid import store
    from dadf.grid.aggregate import aggregate
    from dadf.grid.cells import expand
    from dadf.grid.launch import launch

    user = list(HydraConfig.get().overrides.task)

    def compose(overrides: list[str]) -> DictConfig:
        return hydra.compose(config_name="config", overrides=user + overrides)

    t0 = time.time()
    cells = expand(cfg, user, compose)
    grid_dir = Path(cfg.runs_dir) / cfg.grid.name
    metrics = cfg.grid.metric if OmegaConf.is_list(cfg.grid.metric) else [cfg.grid.metric]
    store.write_json(grid_dir / "grid.json", {"grid": cfg.grid.name, "cells": [c.id for c in cells],
                                              "metrics": list(metrics), "overrides": user})
    # Shards are built once here, not by several cells racing to build them.
    datasets = {}
    for c in cells:
        datasets[c.cfg.dataset.name] = c.cfg.dataset
        if c.cfg.protocol.get("secondary"):
            datasets[c.cfg.protocol.secondary.name] = c.cfg.protocol.secondary
    for name, dcfg in datasets.items():
        try:
            ensure_shards(dcfg, cfg.shards_dir)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: dataset {name!r}: {e}") from None
    try:
        summary = launch(cells, cfg.launcher, force=bool(cfg.force), retry_failed=bool(cfg.retry_failed))
    except (ValueError, RuntimeError) as e:
        if cfg.launcher.name != "slurm":
            raise
        raise SystemExit(f"error: {e}") from None
    if cfg.launcher.name == "slurm":
        # Submitting does not wait: the jobs run on the cluster; status.py reads the cell folders and the queue.
        from dadf.grid.slurm import watch_hint

        ids = sorted({j.split("_")[0] for j in summary.submitted.values()}, key=lambda j: (len(j), j))
        print(f"job ids: {' '.join(ids) if ids else '(none submitted)'}")
        print(f"runs folder: {grid_dir.resolve()}")
        print(f"watch it: {watch_hint(grid_dir)}")
        return
    _, md = aggregate(grid_dir, list(metrics))
    print()
    print(md)
    print(f"{len(summary.done)} cells run, {len(summary.skipped)} skipped (finished), {len(summary.failed)} failed "
          f"in {time.time() - t0:.1f}s; results in {grid_dir}/ (table.md, table.csv, table.tex)")


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
