"""``dadf-build-shards`` (or ``python jobs/build_shards.py``): write a dataset's WebDataset shards under
shards/<dataset>/ (training also does this on first use):

    python jobs/build_shards.py dataset=mnist dataset.root=../shared/data [force=true]
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from dadf.cli import setup_logging
from dadf.cli._hydra import CONFIG_DIR, check_overrides

log = logging.getLogger(__name__)


def main() -> None:
    check_overrides(sys.argv[1:])  # a bad key fails here, with the valid keys listed
    build_shards()


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def build_shards(cfg: DictConfig) -> None:
    setup_logging()
    from dadf.data.pipeline import ensure_shards, shard_dir
    from dadf.data.shards import INDEX_FILE, read_index

    kept = not cfg.force and (shard_dir(cfg.dataset, cfg.shards_dir) / INDEX_FILE).exists()
    try:
        out = ensure_shards(cfg.dataset, cfg.shards_dir, force=bool(cfg.force))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    index = read_index(out)
    for part, info in index["parts"].items():
        print(f"{out}/{part}-*.tar: {info['count']} samples in {len(info['shards'])} shards")
    print(f"{out}: {len(index['classes'])} classes")  # the count grids expand over (grid.classes: all)
    if kept:  # say so: a user rebuilding corrupt shards without force=true would otherwise think it worked
        log.info("kept the shards already in %s; force=true rebuilds them", out)
