"""From a cell's config to training and test tensors: dataset config -> shards (built on first use) -> Source ->
protocol split -> normalised tensors. The one place that ties sources, shards and protocols together."""
from __future__ import annotations

import dataclasses
import fcntl
import functools
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dadf.data import protocols, shards, sources
from dadf.data.types import IMAGE, PRIMARY, SECONDARY, Source, Split, Subset


def source_params(dcfg: DictConfig) -> dict:
    """What determines a dataset's content (and so its shards): its source and the conversion options."""
    return {
        "source": dcfg.source,
        "size": dcfg.size,
        "channels": dcfg.channels,
        "params": OmegaConf.to_container(dcfg.params, resolve=True),
    }


def data_root(dcfg: DictConfig) -> str:
    return str(Path(dcfg.root if dcfg.root is not None else "data").expanduser().resolve())


def shard_dir(dcfg: DictConfig, shards_root: str | Path) -> Path:
    return Path(shards_root) / dataset_name(dcfg)


def dataset_name(dcfg: DictConfig) -> str:
    """`dcfg.name`, or an error that says how to name one's own data (the generic dataset files leave it ???)."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    try:
        return str(dcfg.name)
    except (MissingMandatoryValue, InterpolationResolutionError):
        how = ("dataset.params.name=<table>, the file name of <root>/odds/<table>.mat or .npz (the dataset takes "
               "that name)" if "name" in dcfg.params.keys() else "dataset.name=<a name of yours>")
        raise sources.DataError(f"dataset={dcfg.source} reads data of your own: name it with {how}; the name "
                                "names its shards (shards/<name>/), the cell ids and the table's columns") from None


# dadf.config.CONFIG_DIR's dataset files (not imported from there: dadf.config imports dadf.data)
_PACKAGE = Path(__file__).resolve().parents[1]
_DATASET_CONFIGS = (_PACKAGE if (_PACKAGE / "configs").is_dir() else _PACKAGE.parent) / "configs" / "dataset"
_UNSET = object()


def dataset_option(dcfg: DictConfig) -> str:
    """The `dataset=` option that composes this dataset config: the file named after it, else the file of its
    source (a table named by `dataset=odds dataset.params.name=cardio`, or a copy in a user's config folder)."""
    for option in (dcfg.name, dcfg.source):
        if (_DATASET_CONFIGS / f"{option}.yaml").is_file():
            return str(option)
    return str(dcfg.name)


def rebuild_overrides(dcfg: DictConfig) -> list[str]:
    """The `jobs/build_shards.py` overrides, beyond `dataset=<dataset_option>`, that compose this dataset config: its
    data root, its name where the file gives another, and each setting that shapes the shards (source, size,
    channels, params) or fetches the data (download) where it differs from that file."""
    path = _DATASET_CONFIGS / f"{dataset_option(dcfg)}.yaml"
    default = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}
    wanted = {**source_params(dcfg), "download": bool(dcfg.download)}
    out = [shards.override("dataset.root", data_root(dcfg))]
    if "${" not in str(default.get("name")) and default.get("name") != dcfg.name:  # not odds.yaml's ${.params.name}
        out.append(shards.override("dataset.name", dcfg.name))
    out += [shards.override(f"dataset.{key}", wanted[key]) for key in ("source", "size", "channels", "download")
            if default.get(key, _UNSET) != wanted[key]]
    params, default_params = wanted["params"], default.get("params") or {}
    # "++" sets a key whether or not the config file has it; "~" drops one the file has and this config lacks.
    out += [shards.override(f"++dataset.params.{k}", v) for k, v in params.items()
            if default_params.get(k, _UNSET) != v]
    out += [f"~dataset.params.{k}" for k in default_params if k not in params]
    return out


def ensure_shards(dcfg: DictConfig, shards_root: str | Path, force: bool = False) -> Path:
    """Build the dataset's shards if they are missing (or always, with `force`: the new build replaces the old one
    atomically); refuse shards built from other source settings."""
    out = shard_dir(dcfg, shards_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Ranks of one cell, and cells of one array, may start together on a shared filesystem: one builds while the
    # others wait on the lock, then find the index and read what it built.
    with open(out.with_name(f"{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_shards_locked(dcfg, out, force)


def _ensure_shards_locked(dcfg: DictConfig, out: Path, force: bool) -> Path:
    shards.remove_stale_builds(out)  # here too, not only in a build: shards that exist are not rebuilt
    wanted = source_params(dcfg)
    overrides = rebuild_overrides(dcfg)
    rebuild = shards.force_rebuild_command(out, dataset_option(dcfg), overrides)
    if (out / "index.json").exists() and not force:
        built = shards.read_index(out, rebuild=rebuild).get("source_params")
        if built != wanted:
            raise shards.ShardError(
                f"shards in {out} were built with {built}, but dataset {dcfg.name!r} now asks for {wanted}; "
                f"remove the folder or rebuild with: {rebuild}"
            )
        return out
    p = wanted
    source = sources.load_source(p["source"], data_root(dcfg), download=bool(dcfg.download), size=p["size"],
                                 channels=p["channels"], chunked=True, **p["params"])  # LSUN: never held whole
    shards.build_shards(source, out, dataset_name=dataset_option(dcfg), source_params=wanted,
                        rebuild_overrides=overrides)
    return out


def class_count(dcfg: DictConfig, shards_root: str | Path) -> int:
    """The dataset's number of classes, known before its data is loaded (a grid's `classes: all`, the checks of
    `target_class`, the frozen cell): from its built shards, else from the classes its source declares."""
    declared = declared_classes(dcfg)
    out = shard_dir(dcfg, shards_root)
    built = _built_classes(dcfg, out)
    if built is None and declared is None:
        build = shards.rebuild_command(dataset_option(dcfg), *rebuild_overrides(dcfg),
                                       shards.override("shards_dir", Path(shards_root).resolve()))
        raise sources.DataError(f"dataset {dcfg.name!r}: its classes are known from its data only, and its shards "
                                f"are not built in {out} with these settings; build them first: {build}")
    if built is None:
        return len(declared)
    if declared is not None and len(built) != len(declared):
        rebuild = shards.force_rebuild_command(out, dataset_option(dcfg), rebuild_overrides(dcfg))
        raise sources.DataError(f"shards in {out} hold {len(built)} classes, but source {dcfg.source!r} has "
                                f"{len(declared)} (they were built by an older dadf); rebuild with: {rebuild}")
    return len(built)


def declared_classes(dcfg: DictConfig) -> tuple[str, ...] | None:
    """The classes the dataset's source declares for its settings; None when only its data knows them."""
    dataset_name(dcfg)  # the first look at a dataset config (launch_grid): an unnamed one of one's own stops here
    return sources.declared_classes(dcfg.source, OmegaConf.to_container(dcfg.params, resolve=True))


def dataset_parts(dcfg: DictConfig, shards_root: str | Path) -> tuple[str, ...] | None:
    """The dataset's parts (train, test, all...) without loading it: from its shards when they are built from its
    current settings, else from what its source declares (at most a look at file names); None when unknown."""
    out = shard_dir(dcfg, shards_root)
    try:
        if (out / shards.INDEX_FILE).is_file():
            index = shards.read_index(out)
            if index.get("source_params") == source_params(dcfg):
                return tuple(index["parts"])
        return sources.declared_parts(dcfg.source, data_root(dcfg), OmegaConf.to_container(dcfg.params, resolve=True))
    except ValueError:  # an unreadable index, a bad parameter: the checks that load the data name it
        return None


def _built_classes(dcfg: DictConfig, out: Path) -> list[str] | None:
    """The classes recorded by the dataset's shards in `out`, when they are built from its current settings."""
    if not (out / shards.INDEX_FILE).is_file():
        return None
    rebuild = shards.force_rebuild_command(out, dataset_option(dcfg), rebuild_overrides(dcfg))
    index = shards.read_index(out, rebuild=rebuild)
    return index["classes"] if index.get("source_params") == source_params(dcfg) else None


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> Source:
    return shards.load_source_from_shards(Path(path))


def load_dataset(dcfg: DictConfig, shards_root: str | Path) -> Source:
    """The dataset through its shards (in-memory path), cached per process while the shards are unchanged."""
    out = ensure_shards(dcfg, shards_root)
    return _load_cached(str(out), (out / "index.json").stat().st_mtime)


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


def normaliser(kind: str, train: np.ndarray):
    """Images to [-1, 1]; tabular features standardised with the training rows' statistics."""
    if kind == IMAGE:
        return lambda a: torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0)
    mean = train.mean(0) if len(train) else 0.0
    std = train.std(0) if len(train) else 1.0
    std = np.where(std > 0, std, 1.0)
    return lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))


def prepare_cell_data(cfg: DictConfig) -> CellData:
    if cfg.trainer.get("data", "memory") == "stream":
        return _streamed_cell_data(cfg)
    shards_root = cfg.paths.shards_dir
    primary = load_dataset(cfg.dataset, shards_root)
    datasets = {PRIMARY: primary}
    secondary_cfg = cfg.protocol.get("secondary")
    if secondary_cfg is not None:
        datasets[SECONDARY] = load_dataset(secondary_cfg, shards_root)
    split = protocols.make_split(cfg.protocol.name, primary, seed=int(cfg.seed), params=protocol_params(cfg.protocol),
                                 secondary=datasets.get(SECONDARY))
    raw = {name: gather(getattr(split, name), datasets) for name in ("train", "val", "test")}
    norm = normaliser(primary.kind, raw["train"][split.train.label == 0])
    return _cell_data(cfg, primary, split, {name: norm(x) for name, x in raw.items()})


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


def _streamed_cell_data(cfg: DictConfig) -> CellData:
    """The cell's data as rows of its shards read on demand (dadf/data/stream.py): split from labels alone."""
    from dadf.data import stream

    def make_split(primary: Source, secondary: Source | None) -> Split:
        return protocols.make_split(cfg.protocol.name, primary, seed=int(cfg.seed),
                                    params=protocol_params(cfg.protocol), secondary=secondary)

    split, primary, rows = stream.prepare(cfg, make_split, lambda dcfg: ensure_shards(dcfg, cfg.paths.shards_dir))
    return _cell_data(cfg, primary, split, rows)
