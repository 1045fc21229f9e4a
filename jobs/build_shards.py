"""Write a dataset's WebDataset shards under shards/<dataset>/ (training also does this on first use):

    python jobs/build_shards.py dataset=mnist dataset.root=../shared/data [force=true]
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hydra import CONFIG_DIR, check_overrides  # noqa: E402


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
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
        print(f"kept the shards already in {out}; force=true rebuilds them")


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
