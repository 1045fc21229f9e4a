"""Per-sample binary attributes that a source declares by name (CelebA's 40), so that the `attribute` protocol's
parameter is checked at launch, before any data is loaded. A source that declares them gives exactly these columns
(`Source.attribute_names`)."""
from __future__ import annotations

_DECLARED: dict[str, tuple[str, ...]] = {}


def declare_attributes(source: str, names: tuple[str, ...]) -> None:
    if source in _DECLARED:
        raise ValueError(f"source {source!r} declares its attributes twice")
    _DECLARED[source] = tuple(names)


def declared_attributes(source: str) -> tuple[str, ...]:
    """The attribute names source `source` declares; () when it declares none (it may still have some)."""
    return _DECLARED.get(str(source), ())
