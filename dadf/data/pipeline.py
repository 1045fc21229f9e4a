"""From a cell's config to its training and test rows: dataset config -> shards (built on first use; datasets.py)
-> Source in memory, or rows read on demand with trainer.data=stream (stream.py) -> protocol split -> normalised
rows. The one place that ties datasets, shards, protocols and the readers together."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dadf.data import protocols, shards, stream
from dadf.data.datasets import ensure_shards
from dadf.data.normalise import Normaliser
from dadf.data.types import IMAGE, PRIMARY, SECONDARY, Source, Split, Subset

_LOADED: OrderedDict[tuple[str, float], Source] = OrderedDict()  # the last datasets loaded, by (folder, index mtime)
_KEEP_LOADED = 4


def load_dataset(dcfg: DictConfig, shards_root: str | Path, searchpath: Iterable[str] | None = ()) -> Source:
    """The dataset through its shards (in-memory path), cached per process while the shards are unchanged."""
    built = ensure_shards(dcfg, shards_root, searchpath=searchpath)
    key = (str(built.folder), (built.folder / shards.INDEX_FILE).stat().st_mtime)
    if key not in _LOADED:
        _LOADED[key] = shards.load_source_from_shards(built)
        while len(_LOADED) > _KEEP_LOADED:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def protocol_params(pcfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(pcfg, resolve=True).items() if k not in ("name", "secondary")}


@dataclasses.dataclass
class CellData:
    """A cell's split and its rows: tensors, or with trainer.data=stream, `dadf.data.stream.ShardRows` for train_x
    and test_x (read when indexed and moved with ``.to``; val_x is read into memory)."""

    kind: str
    shape: tuple[int, ...]
    classes: tuple[str, ...]
    split: Split
    train_x: torch.Tensor
    train_label: torch.Tensor
    val_x: torch.Tensor
    val_truth: torch.Tensor
    test_x: torch.Tensor
    test_truth: torch.Tensor
    test_cls: torch.Tensor
    top_k_percent: float | None


def gather(subset: Subset, datasets: dict[int, Source]) -> np.ndarray:
    """The rows a subset refers to, in the subset's order."""
    first = datasets[PRIMARY].parts[next(iter(datasets[PRIMARY].parts))][0]
    out = np.empty((len(subset), *first.shape[1:]), dtype=first.dtype)
    for src, ds in datasets.items():
        for part, (x, _) in ds.parts.items():
            rows = np.flatnonzero((subset.source == src) & (subset.part == part))
            if len(rows):
                out[rows] = x[subset.index[rows]]
    return out


def prepare_cell_data(cfg: DictConfig) -> CellData:
    if cfg.trainer.get("data", "memory") == "stream":
        return _streamed_cell_data(cfg)
    shards_root, searchpath = cfg.paths.shards_dir, cfg.paths.get("searchpath")
    primary = load_dataset(cfg.dataset, shards_root, searchpath)
    datasets = {PRIMARY: primary}
    secondary_cfg = cfg.protocol.get("secondary")
    if secondary_cfg is not None:
        datasets[SECONDARY] = load_dataset(secondary_cfg, shards_root, searchpath)
    split = _split(cfg, primary, datasets.get(SECONDARY))
    raw = {name: gather(getattr(split, name), datasets) for name in ("train", "val", "test")}
    norm = Normaliser.fit(primary.kind, raw["train"][split.train.label == 0])
    return _cell_data(cfg, primary, split, {name: norm(x) for name, x in raw.items()})


def _split(cfg: DictConfig, primary: Source, secondary: Source | None) -> Split:
    return protocols.make_split(cfg.protocol.name, primary, seed=int(cfg.seed), params=protocol_params(cfg.protocol),
                                secondary=secondary)


def _streamed_cell_data(cfg: DictConfig) -> CellData:
    """The cell's data as rows of its shards read on demand (stream.py): the split made from labels alone, val read
    into memory (it is small and validated often)."""
    shards_root, searchpath = cfg.paths.shards_dir, cfg.paths.get("searchpath")
    built = ensure_shards(cfg.dataset, shards_root, searchpath=searchpath)
    table = stream.scan(built, PRIMARY)
    primary = stream.label_source(built, table, PRIMARY)
    secondary = None
    if cfg.protocol.get("secondary") is not None:
        built = ensure_shards(cfg.protocol.secondary, shards_root, searchpath=searchpath)
        stream.scan(built, SECONDARY, table)
        secondary = stream.label_source(built, table, SECONDARY)
    split = _split(cfg, primary, secondary)
    norm = Normaliser(primary.kind)
    if primary.kind != IMAGE:  # standardised with the training normals' statistics, read in chunks
        normals = stream.ShardRows.of(table, split.train, norm)[np.flatnonzero(split.train.label == 0)]
        norm = Normaliser.fit_chunks(primary.kind, normals.chunks())
    rows = {name: stream.ShardRows.of(table, getattr(split, name), norm) for name in ("train", "val", "test")}
    rows["val"] = rows["val"].to("cpu")
    return _cell_data(cfg, primary, split, rows)


def _cell_data(cfg: DictConfig, primary: Source, split: Split, x: dict) -> CellData:
    """CellData from the split and its rows ``x`` (train, val, test: tensors, or rows read on demand)."""
    top_k = cfg.dataset.top_k_percent
    return CellData(
        kind=primary.kind,
        shape=primary.sample_shape,
        classes=primary.classes,
        split=split,
        train_x=x["train"],
        train_label=torch.from_numpy(split.train.label.astype(np.int64)),
        val_x=x["val"],
        val_truth=torch.from_numpy(split.val.truth.astype(np.int64)),
        test_x=x["test"],
        test_truth=torch.from_numpy(split.test.truth.astype(np.int64)),
        test_cls=torch.from_numpy(split.test.cls.astype(np.int64)),
        top_k_percent=float(top_k) if top_k is not None else None,
    )
