"""A dataset's number of classes comes from its data (its built shards) or from the classes its source declares,
never from its YAML; the frozen cell records it as ``dataset.num_classes``, which its id hashes."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import run_job
from omegaconf import OmegaConf

from dadf.config import CONFIG_DIR
from dadf.data import datasets
from dadf.data.sources import DataError
from dadf.grid.cells import expand
from dadf.grid.validate import check_cells

DATASETS = Path(CONFIG_DIR) / "dataset"

# What configs/dataset/*.yaml said before the counts came from the sources: ids hash these values.
COUNTS_OF_THE_YAML = {"arrhythmia": 2, "cifar10": 10, "cifar100": 100, "cifar10_jpg": 10, "digits": 10, "fmnist": 10,
                      "kdd99": 2, "mnist": 10, "notmnist": 10, "omniglot": 30, "svhn": 10, "synthetic": 10,
                      "thyroid": 2}


@pytest.mark.parametrize("name", sorted(COUNTS_OF_THE_YAML))
def test_every_dataset_config_counts_without_data_what_its_yaml_said(name, tmp_path):
    dcfg = OmegaConf.load(DATASETS / f"{name}.yaml")
    assert "num_classes" not in dcfg
    assert datasets.class_count(dcfg, tmp_path / "no shards") == COUNTS_OF_THE_YAML[name]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def tiny_idx_folder(folder: Path, n_classes: int = 3) -> Path:
    """MNIST-format files of `n_classes` classes of 8x8 images, 6 train and 3 test images each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 3)):
        y = np.repeat(np.arange(n_classes), n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(y), 8, 8)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def idx_overrides(dirs: list[str], folder: Path) -> list[str]:
    """The quickstart grid (one-vs-rest over `classes: all`) on an `idx` dataset, which declares no classes."""
    return [*dirs, "method=kde", "dataset.name=tiny", "dataset.source=idx", f"++dataset.params.path={folder}"]


def test_count_comes_from_built_shards_and_is_frozen_with_the_cell(composer, dirs, tmp_path):
    overrides = idx_overrides(dirs, tiny_idx_folder(tmp_path / "tiny"))
    cfg = composer(overrides)
    # no tiny.yaml: the command composes it from the source's file, idx.yaml, and the settings that differ
    build = r"build them first: python jobs/build_shards.py dataset=idx .*dataset.name=tiny "
    with pytest.raises(DataError, match=build):
        expand(cfg, overrides, composer)
    datasets.ensure_shards(cfg.dataset, cfg.shards_dir)
    cells = expand(cfg, overrides, composer)
    assert [c.cfg.protocol.target_class for c in cells] == [0, 1, 2]
    assert {c.cfg.dataset.num_classes for c in cells} == {3}
    assert check_cells(cells) == []
    problems = check_cells(expand(cfg, [*overrides, "protocol.target_class=3"], composer))
    assert problems == ["protocol.target_class=3 (dataset tiny, 3 classes) must be a class index in 0..2"]


def test_shards_that_disagree_with_the_declared_classes_are_refused(composer, dirs):
    cfg = composer(dirs)  # quickstart: digits, which declares its ten classes
    out = datasets.ensure_shards(cfg.dataset, cfg.shards_dir).folder
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "classes": index["classes"][:8]}))
    with pytest.raises(DataError, match="hold 8 classes, but source 'digits' has 10.*force=true"):
        expand(cfg, dirs, composer)


@pytest.mark.slow
def test_launch_builds_the_shards_it_needs_before_expanding(tmp_path):
    """An idx dataset's count needs its shards: the launcher builds them, expands, then stops at the bad value."""
    dirs = [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}"]
    r = run_job("launch_grid.py", *idx_overrides(dirs, tiny_idx_folder(tmp_path / "tiny")), "trainer.steps=-1",
                timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.splitlines() == ["error: trainer.steps=-1 must be >= 1 (e.g. trainer.steps=1000) [all 3 cells]"]
    assert (tmp_path / "shards" / "tiny" / "index.json").is_file()
