"""A registry of datasets, each loaded into a `Source` of numpy arrays. The loaders live in one module per family
(idx.py, torchvision_datasets.py, folders.py, tabular.py, synthetic.py); what they share in transforms.py (image
transforms), files.py (errors naming a missing or damaged file) and classes.py (declared class names).

`load_source(name, root, ...)` is the one entry point: it validates the parameters against the loader's
signature, calls the loader, then applies the image transforms every image source shares (`size`, `channels`).
Loaders never write into `root` unless `download=True` (the shared data folder is read-only).
Relative `path` parameters (`idx`, `image_folder`) are taken relative to `root`.

A source whose classes are a fact of the source (MNIST's ten digits) declares them when it registers, so that
`declared_classes` gives them before any data is on disk; the others' classes are known from their data only.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from ..types import TABULAR, Source
from .files import DataError
from .transforms import resize, transform_images

SOURCES: dict[str, Callable[..., Source]] = {}
_DEFAULT_SIZE: dict[str, int] = {}  # sources whose native resolution is not what experiments use
# Declared classes: names, or a function of the loader's parameters that returns them.
_CLASSES: dict[str, tuple[str, ...] | Callable[..., tuple[str, ...]]] = {}

# The shared, read-only data folder sits next to the repository: <repo>/../shared/data.
DEFAULT_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def register(name: str, *, default_size: int | None = None, classes=None):
    """Register a loader `fn(root: Path, download: bool, *, params...) -> Source` under `name`.

    `classes`: the class names the loader always gives, or a function of its parameters (all of them, defaults
    included, as keywords) that returns them; None when only the data knows them."""

    def wrap(fn: Callable[..., Source]) -> Callable[..., Source]:
        if name in SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        SOURCES[name] = fn
        if default_size is not None:
            _DEFAULT_SIZE[name] = default_size
        if classes is not None:
            _CLASSES[name] = classes
        return fn

    return wrap


def list_sources() -> list[str]:
    return sorted(SOURCES)


def _loader(name: str) -> Callable[..., Source]:
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; valid names: {', '.join(list_sources())}")
    return SOURCES[name]


def declared_classes(name: str, params: dict | None = None) -> tuple[str, ...] | None:
    """The classes source `name` declares for the loader parameters `params`; None when only its data knows them."""
    loader, params = _loader(name), params or {}
    _check_params(name, loader, params)
    classes = _CLASSES.get(name)
    if callable(classes):
        defaults = {p.name: p.default for p in _keyword_params(loader) if p.default is not p.empty}
        return tuple(classes(**{**defaults, **params}))
    return classes


def load_source(
    name: str,
    /,
    root: str | Path | None = None,
    *,
    download: bool = False,
    size: int | None = None,
    channels: int | None = None,
    **params,
) -> Source:
    """Load dataset `name` from `root` (default: the shared data folder) as a `Source`.

    `size` resizes images to size×size (bilinear, antialiased); `channels` converts 1<->3 channels.
    Both apply to image sources only. Extra keyword `params` go to the loader (`name` is positional-only so that
    a loader may take a `name` parameter, as `odds` does).
    """
    loader = _loader(name)
    _check_params(name, loader, params)
    root = Path(root) if root is not None else DEFAULT_ROOT
    src = loader(root, download, **params)
    meta = {"root": str(root), **src.meta}
    if src.kind == TABULAR:
        if size is not None or channels is not None:
            raise DataError(
                f"{name} is a tabular source: size/channels apply to images only; "
                "remove dataset.size and dataset.channels"
            )
        meta.update(size=None, channels=None)
        return Source(src.name, src.kind, src.parts, src.classes, meta)
    size = size if size is not None else _DEFAULT_SIZE.get(name)
    meta.update(original_shape=src.sample_shape, size=size, channels=channels)
    parts = {part: (transform_images(x, size, channels), y) for part, (x, y) in src.parts.items()}
    return Source(src.name, src.kind, parts, src.classes, meta)


def _keyword_params(loader: Callable) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY]


def _check_params(name: str, loader: Callable, params: dict) -> None:
    """Loaders declare their parameters keyword-only; anything else is a typo worth a clear error."""
    declared = _keyword_params(loader)
    valid = [p.name for p in declared]
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
from . import folders, idx, synthetic, tabular, torchvision_datasets  # noqa: E402,F401
from .classes import TABULAR_CLASSES  # noqa: E402
from .idx import read_idx  # noqa: E402
from .synthetic import load_synthetic  # noqa: E402

__all__ = ["DEFAULT_ROOT", "SOURCES", "TABULAR_CLASSES", "DataError", "declared_classes", "list_sources",
           "load_source", "load_synthetic", "read_idx", "register", "resize"]
