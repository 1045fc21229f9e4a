"""A dataset config and its shards: what determines their content, where they live, the dataset file that composes
the config again and the command that rebuilds them. `ensure_shards` builds them once and hands back their
`BuiltShards`, which the readers take from there.

Dataset files are looked up as Hydra composes them: in the package's ``configs/dataset/``, then in the ``dataset/``
folder of each of the user's config folders (``hydra.searchpath=[file:///my/configs]``, passed in as
``searchpath``); a command that rebuilds a dataset of the user's folders carries that search path.
"""
from __future__ import annotations

import fcntl
import re
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dadf.data import shards, sources
from dadf.data.shards import INDEX_FILE, BuiltShards

# configs/ as dadf/config.py finds it (at the checkout's root, or dadf/configs/ in a wheel); not imported from
# there, since dadf.config imports dadf.data.
_PACKAGE = Path(__file__).resolve().parents[1]
PACKAGE_DATASETS = (_PACKAGE if (_PACKAGE / "configs").is_dir() else _PACKAGE.parent) / "configs" / "dataset"
_UNSET = object()


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


# --------------------------------------------------------------------------------------------------------------
# The dataset file, on the launch's search path, and the commands that compose the config again.


def config_folders(searchpath: Iterable[str] | None) -> list[Path]:
    """The user's config folders from their ``hydra.searchpath`` entries (absolute paths, ``file://`` optional);
    entries of other providers (``pkg://``) are not folders and are left out."""
    folders = []
    for entry in searchpath or ():
        text = str(entry)
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            continue
        folders.append(Path(text).expanduser().absolute())
    return folders


def dataset_file(dcfg: DictConfig, searchpath: Iterable[str] | None = ()) -> tuple[str, Path | None]:
    """(option, file): the `dataset=` option that composes this dataset config and its file. The file named after
    the dataset, else the file of its source (a table named by `dataset=odds dataset.params.name=cardio`), each
    looked up in the package's folder first, then in the user's, as Hydra does; (its name, None) when none is."""
    folders = [PACKAGE_DATASETS, *(folder / "dataset" for folder in config_folders(searchpath))]
    for option in (dcfg.name, dcfg.source):
        for folder in folders:
            if (folder / f"{option}.yaml").is_file():
                return str(option), folder / f"{option}.yaml"
    return str(dcfg.name), None


def dataset_option(dcfg: DictConfig, searchpath: Iterable[str] | None = ()) -> str:
    """The `dataset=` option that composes this dataset config (`dataset_file`)."""
    return dataset_file(dcfg, searchpath)[0]


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_/.+@-]+")


def searchpath_override(searchpath: Iterable[str] | None) -> str:
    """``hydra.searchpath=[file:///...]``: the user's config folders, for a command that composes a dataset file
    of theirs."""
    entries = [f"file://{folder}" if _PLAIN_PATH.fullmatch(str(folder)) else shards.hydra_value(f"file://{folder}")
               for folder in config_folders(searchpath)]
    return f"hydra.searchpath=[{','.join(entries)}]"


def _composition(dcfg: DictConfig, searchpath: Iterable[str] | None) -> tuple[str, list[str]]:
    """(option, overrides): `jobs/build_shards.py dataset=<option> <overrides>` composes this dataset config: the
    user's search path where the file is theirs, its data root, its name where the file gives another, and each
    setting that shapes the shards (source, size, channels, params) or fetches the data (download) where it differs
    from that file."""
    option, path = dataset_file(dcfg, searchpath)
    default = OmegaConf.to_container(OmegaConf.load(path)) if path is not None else {}
    wanted = {**source_params(dcfg), "download": bool(dcfg.download)}
    out = [searchpath_override(searchpath)] if path is not None and path.parent != PACKAGE_DATASETS else []
    out.append(shards.override("dataset.root", data_root(dcfg)))
    if "${" not in str(default.get("name")) and default.get("name") != dcfg.name:  # not odds.yaml's ${.params.name}
        out.append(shards.override("dataset.name", dcfg.name))
    out += [shards.override(f"dataset.{key}", wanted[key]) for key in ("source", "size", "channels", "download")
            if default.get(key, _UNSET) != wanted[key]]
    params, default_params = wanted["params"], default.get("params") or {}
    # "++" sets a key whether or not the config file has it; "~" drops one the file has and this config lacks.
    out += [shards.override(f"++dataset.params.{k}", v) for k, v in params.items()
            if default_params.get(k, _UNSET) != v]
    out += [f"~dataset.params.{k}" for k in default_params if k not in params]
    return option, out


def rebuild_overrides(dcfg: DictConfig, searchpath: Iterable[str] | None = ()) -> list[str]:
    """The `jobs/build_shards.py` overrides, beyond `dataset=<dataset_option>`, that compose this dataset config."""
    return _composition(dcfg, searchpath)[1]


def _force_rebuild(dcfg: DictConfig, out: Path, searchpath: Iterable[str] | None) -> str:
    return shards.force_rebuild_command(out, *_composition(dcfg, searchpath))


# --------------------------------------------------------------------------------------------------------------
# Building, and what is known before the data is loaded.


def ensure_shards(dcfg: DictConfig, shards_root: str | Path, force: bool = False, *,
                  searchpath: Iterable[str] | None = ()) -> BuiltShards:
    """The dataset's shards, built if they are missing (or always, with `force`: the new build replaces the old one
    atomically); shards built from other source settings are refused."""
    out = shard_dir(dcfg, shards_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Ranks of one cell, and cells of one array, may start together on a shared filesystem: one builds while the
    # others wait on the lock, then find the index and read what it built.
    with open(out.with_name(f"{out.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_shards_locked(dcfg, out, force, searchpath)


def _ensure_shards_locked(dcfg: DictConfig, out: Path, force: bool, searchpath) -> BuiltShards:
    shards.remove_stale_builds(out)  # here too, not only in a build: shards that exist are not rebuilt
    wanted = source_params(dcfg)
    option, overrides = _composition(dcfg, searchpath)
    rebuild = shards.force_rebuild_command(out, option, overrides)
    if (out / INDEX_FILE).exists() and not force:
        built = BuiltShards.open(out, rebuild)
        if built.index.get("source_params") != wanted:
            raise shards.ShardError(
                f"shards in {out} were built with {built.index.get('source_params')}, but dataset {dcfg.name!r} now "
                f"asks for {wanted}; remove the folder or rebuild with: {rebuild}"
            )
        return built
    p = wanted
    source = sources.load_source(p["source"], data_root(dcfg), download=bool(dcfg.download), size=p["size"],
                                 channels=p["channels"], chunked=True, **p["params"])  # LSUN: never held whole
    index = shards.build_shards(source, out, dataset_name=option, source_params=wanted, rebuild_overrides=overrides)
    return BuiltShards(out, index, rebuild)


def current_index(dcfg: DictConfig, out: Path, rebuild: str | None = None) -> dict | None:
    """The index of the dataset's shards in `out` when they are built from its current settings, else None (not
    built, or built from other settings); a bad index is an error that prints `rebuild`."""
    if not (out / INDEX_FILE).is_file():
        return None
    index = shards.read_index(out, rebuild=rebuild)
    return index if index.get("source_params") == source_params(dcfg) else None


def class_count(dcfg: DictConfig, shards_root: str | Path, searchpath: Iterable[str] | None = ()) -> int:
    """The dataset's number of classes, known before its data is loaded (a grid's `classes: all`, the checks of
    `target_class`, the frozen cell): from its built shards, else from the classes its source declares."""
    declared = declared_classes(dcfg)
    out = shard_dir(dcfg, shards_root)
    rebuild = _force_rebuild(dcfg, out, searchpath) if (out / INDEX_FILE).is_file() else None
    index = current_index(dcfg, out, rebuild)
    if index is None and declared is None:
        option, overrides = _composition(dcfg, searchpath)
        build = shards.rebuild_command(option, *overrides, shards.override("shards_dir", Path(shards_root).resolve()))
        raise sources.DataError(f"dataset {dcfg.name!r}: its classes are known from its data only, and its shards "
                                f"are not built in {out} with these settings; build them first: {build}")
    if index is None:
        return len(declared)
    built = index["classes"]
    if declared is not None and len(built) != len(declared):
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
        index = current_index(dcfg, out)
        if index is not None:
            return tuple(index["parts"])
        return sources.declared_parts(dcfg.source, data_root(dcfg), OmegaConf.to_container(dcfg.params, resolve=True))
    except ValueError:  # an unreadable index, a bad parameter: the checks that load the data name it
        return None
