"""A registry of datasets, each loaded into a `Source` of numpy arrays. The loaders live in one module per family
(idx.py, torchvision_datasets.py, folders.py, tabular.py, synthetic.py); what they share in transforms.py (image
transforms), files.py (errors naming a missing or damaged file) and classes.py (declared class names).

`load_source(name, root, ...)` is the one entry point: it validates the parameters against the loader's
signature, calls the loader, halves a one-part source per class when asked (`split_test`, split_test.py: every
source takes it), then applies the image transforms every image source shares (`size`, `channels`). A loader of a
dataset too big to hold returns a `ChunkedSource` (labels held, rows read in chunks; lsun.py), which these steps
transform chunk by chunk and the shard build writes with bounded memory (`load_source(..., chunked=True)`).
Loaders never write into `root` unless `download=True` (the shared data folder is read-only).
Relative `path` parameters (`idx`, `image_folder`, `csv_table`, `image_arrays`) are taken relative to `root`.

A source whose classes are a fact of the source (MNIST's ten digits) declares them when it registers, so that
`declared_classes` gives them before any data is on disk; the others' classes are known from their data only.
Likewise a source may declare its kind and its parts (`declared_kind`, `declared_parts`), which the launch-time
checks read instead of the data. `generic_sources()` lists the sources that read a user's own files (docs/data.md).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..types import TABULAR, ChunkedSource, Source
from . import split_test as _split_test
from .files import DataError
from .transforms import resize, transform_images

SOURCES: dict[str, Callable[..., Source | ChunkedSource]] = {}
_DEFAULT_SIZE: dict[str, int] = {}  # sources whose native resolution is not what experiments use
# Declared classes: names, or a function of the loader's parameters that returns them.
_CLASSES: dict[str, tuple[str, ...] | Callable[..., tuple[str, ...]]] = {}
# Declared kinds (image | tabular), or a function of the loader's parameters that returns it.
_KINDS: dict[str, str | Callable[..., str]] = {}
# Declared parts, or a function (root, **parameters) -> parts, or None where only the data knows them.
_PARTS: dict[str, tuple[str, ...] | Callable[..., tuple[str, ...] | None]] = {}
_SPLIT_TEST_DEFAULT: dict[str, bool] = {}  # sources halved unless told otherwise (cifar10_jpg)
_GENERIC: dict[str, str] = {}  # sources of a user's own files -> one line on what they read

# The data folder when none is given: ./data, as dataset.root=null means in a config.
DEFAULT_ROOT = Path("data")


def register(name: str, *, default_size: int | None = None, classes=None, kind=None, parts=None,
             split_test: bool = False, generic: str | None = None):
    """Register a loader `fn(root: Path, download: bool, *, params...) -> Source` under `name`.

    `classes`: the class names the loader always gives, or a function of its parameters (all of them, defaults
    included, as keywords) that returns them; None when only the data knows them. `kind` ("image" | "tabular")
    likewise. `parts`: the parts the loader gives (before `split_test`), or a function `(root, **parameters)` that
    says them from a cheap look at the files (None when it cannot). `split_test`: the default of the generic
    parameter. `generic`: one line on the files it reads, for a source of a user's own data."""

    def wrap(fn: Callable[..., Source]) -> Callable[..., Source]:
        if name in SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        if _split_test.PARAM in {p.name for p in _keyword_params(fn)}:
            raise ValueError(f"source {name!r}: {_split_test.PARAM} is every source's parameter (split_test.py); "
                             "drop it from the loader, pass register(split_test=True) for a default of true")
        SOURCES[name] = fn
        for table, value in ((_DEFAULT_SIZE, default_size), (_CLASSES, classes), (_KINDS, kind), (_PARTS, parts),
                             (_GENERIC, generic)):
            if value is not None:
                table[name] = value
        if split_test:
            _SPLIT_TEST_DEFAULT[name] = True
        return fn

    return wrap


def generic_sources() -> dict[str, str]:
    """The sources that read a user's own files (no file to write: `dataset=<name>` and its params), each with one
    line on what it reads; docs/data.md has the rest."""
    return dict(sorted(_GENERIC.items()))


def list_sources() -> list[str]:
    return sorted(SOURCES)


def _loader(name: str) -> Callable[..., Source]:
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; valid names: {', '.join(list_sources())}")
    return SOURCES[name]


def declared_classes(name: str, params: dict | None = None) -> tuple[str, ...] | None:
    """The classes source `name` declares for the loader parameters `params`; None when only its data knows them."""
    classes, (full, _) = _CLASSES.get(name), _with_defaults(name, params)
    return tuple(classes(**full)) if callable(classes) else classes


def declared_kind(name: str, params: dict | None = None) -> str | None:
    """The kind (image | tabular) source `name` declares for `params`; None when it declares none."""
    kind, (full, _) = _KINDS.get(name), _with_defaults(name, params)
    return kind(**full) if callable(kind) else kind


def declared_parts(name: str, root: str | Path | None = None, params: dict | None = None) -> tuple[str, ...] | None:
    """The parts `load_source(name, root, **params)` would give (`split_test` applied), from what the source
    declares or a cheap look at its files (never a full read); None when only loading it would tell."""
    full, halved = _with_defaults(name, params)
    parts = _PARTS.get(name)
    if callable(parts):
        parts = parts(Path(root) if root is not None else DEFAULT_ROOT, **full)
    if parts is None:
        return None
    return ("train", "test") if halved and len(parts) == 1 else tuple(parts)


def _with_defaults(name: str, params: dict | None) -> tuple[dict, bool]:
    """(`params` checked and with the loader's defaults filled in, whether `split_test` halves the source)."""
    loader, params = _loader(name), dict(params or {})
    halved = bool(params.pop(_split_test.PARAM, _SPLIT_TEST_DEFAULT.get(name, False)))
    _check_params(name, loader, params)
    defaults = {p.name: p.default for p in _keyword_params(loader) if p.default is not p.empty}
    return {**defaults, **params}, halved


def load_source(
    name: str,
    /,
    root: str | Path | None = None,
    *,
    download: bool = False,
    size: int | None = None,
    channels: int | None = None,
    chunked: bool = False,
    **params,
) -> Source | ChunkedSource:
    """Load dataset `name` from `root` (default: the shared data folder) as a `Source`.

    `size` resizes images to size×size (bilinear, antialiased); `channels` converts 1<->3 channels.
    Both apply to image sources only. Extra keyword `params` go to the loader (`name` is positional-only so that
    a loader may take a `name` parameter, as `odds` does). A loader may return a `ChunkedSource` (a dataset read in
    chunks, such as LSUN): `split_test` and the image transforms then apply chunk by chunk, and it is returned as it
    is with `chunked=True` (what the shard build asks for), else read whole into a `Source`.
    """
    loader = _loader(name)
    halved = bool(params.pop(_split_test.PARAM, _SPLIT_TEST_DEFAULT.get(name, False)))
    _check_params(name, loader, params)
    root = Path(root) if root is not None else DEFAULT_ROOT
    src = loader(root, download, **params)
    if halved:
        src = _split_test.halve(src)
    meta = {"root": str(root), **src.meta, "split_test": halved}
    if src.kind == TABULAR:
        if size is not None or channels is not None:
            raise DataError(
                f"{name} is a tabular source: size/channels apply to images only; "
                "remove dataset.size and dataset.channels"
            )
        meta.update(size=None, channels=None)
        src = dataclasses.replace(src, meta=meta)  # replace: per-sample attributes travel with their rows
    else:
        size = size if size is not None else _DEFAULT_SIZE.get(name)
        meta.update(original_shape=src.sample_shape, size=size, channels=channels)
        src = _transformed(src, size, channels, meta)
    return src if chunked or isinstance(src, Source) else src.to_source()


def _transformed(src: Source | ChunkedSource, size: int | None, channels: int | None, meta: dict):
    if isinstance(src, ChunkedSource):  # the shape of the rows to come, from no rows at all
        shape = transform_images(np.zeros((0, *src.sample_shape), np.uint8), size, channels).shape[1:]
        src = src.map_rows(lambda x: transform_images(x, size, channels), shape)
        return dataclasses.replace(src, meta=meta)
    parts = {part: (transform_images(x, size, channels), y) for part, (x, y) in src.parts.items()}
    return dataclasses.replace(src, parts=parts, meta=meta)


def _keyword_params(loader: Callable) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY]


def _check_params(name: str, loader: Callable, params: dict) -> None:
    """Loaders declare their parameters keyword-only; anything else is a typo worth a clear error."""
    declared = _keyword_params(loader)
    valid = [p.name for p in declared] + [_split_test.PARAM]
    required = [p.name for p in declared if p.default is p.empty]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise DataError(
            f"source {name!r} got unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
        )
    missing = [p for p in required if p not in params]
    if missing:
        raise DataError(f"source {name!r} needs parameter(s) {', '.join(missing)}")


# Imported last, once `register` exists: each family module registers its sources as it is imported.
from . import (  # noqa: E402,F401
    arrays,
    celeba,
    coil,
    folders,
    idx,
    imagenet_resize,
    lsun,
    synthetic,
    tabular,
    torchvision_datasets,
)
from .classes import TABULAR_CLASSES  # noqa: E402
from .idx import read_idx  # noqa: E402
from .synthetic import load_synthetic  # noqa: E402

__all__ = ["DEFAULT_ROOT", "SOURCES", "TABULAR_CLASSES", "DataError", "declared_classes", "declared_kind",
           "declared_parts", "generic_sources", "list_sources", "load_source", "load_synthetic", "read_idx",
           "register", "resize"]
