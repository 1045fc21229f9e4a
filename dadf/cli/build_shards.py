"""``dadf-build-shards`` (or ``python jobs/build_shards.py``): write a dataset's WebDataset shards under
shards/<dataset>/ (training also does this on first use):

    python jobs/build_shards.py dataset=mnist dataset.root=/data [force=true]
"""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from dadf.cli import setup_logging

log = logging.getLogger(__name__)


def main() -> None:
    from dadf.cli._hydra import read, session, set_values
    from dadf.grid.cells import GridError

    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    setup_logging()
    try:
        overrides = read(sys.argv[1:])
        with session(overrides) as compositions:
            cfg = compositions.base()
            set_values(cfg, overrides, strict=True)  # a bad key fails here, with the valid keys listed
            search = compositions.searchpath
    except GridError as e:
        sys.exit("\n".join(f"error: {p}" for p in e.problems))
    build_shards(cfg, search)


def build_shards(cfg: DictConfig, searchpath: list[str] | None = None) -> None:
    from dadf.data.datasets import ensure_shards, shard_dir
    from dadf.data.shards import INDEX_FILE

    kept = not cfg.force and (shard_dir(cfg.dataset, cfg.shards_dir) / INDEX_FILE).exists()
    try:
        built = ensure_shards(cfg.dataset, cfg.shards_dir, force=bool(cfg.force), searchpath=searchpath or ())
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out, index = built.folder, built.index
    for part, info in index["parts"].items():
        print(f"{out}/{part}-*.tar: {info['count']} samples in {len(info['shards'])} shards")
    print(f"{out}: {len(index['classes'])} classes")  # the count grids expand over (grid.classes: all)
    if kept:  # say so: a user rebuilding corrupt shards without force=true would otherwise think it worked
        log.info("kept the shards already in %s; force=true rebuilds them", out)
