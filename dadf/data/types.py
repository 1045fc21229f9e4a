"""The data shapes every part of dadf agrees on: a `Source` (a dataset as arrays), a `ChunkedSource` (one too big
to hold, read in chunks) and a `Split`."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

IMAGE, TABULAR = "image", "tabular"


@dataclass(frozen=True)
class Source:
    """A dataset held as arrays, one entry per original part.

    Images: ``x`` is uint8 of shape (N, C, H, W). Tabular: ``x`` is float32 of shape (N, D).
    ``y`` is int64 class indices into ``classes``. Image datasets have parts "train" and "test"
    (a dataset with a single original split, e.g. notMNIST, has only the part it ships, which
    ``dataset.params.split_test=true`` halves per class into "train" and "test"). Tabular
    datasets have one part, "all", whose classes are ("inlier", "outlier").

    Optional per-sample binary attributes beside the class (CelebA's 40): ``attributes[part]`` is a uint8 0/1
    matrix (rows of that part, one column per name in ``attribute_names``); every part has one when any has.
    """

    name: str
    kind: str
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    attribute_names: tuple[str, ...] = ()
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        _check_attributes(self.name, {part: y for part, (_, y) in self.parts.items()}, self.attribute_names,
                          self.attributes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        x, _ = next(iter(self.parts.values()))
        return tuple(x.shape[1:])

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.parts.values())


def _check_attributes(name: str, labels: dict[str, np.ndarray], names: tuple[str, ...], attributes: dict) -> None:
    # Parts rebuilt (a subset, a split) beside attributes left as they were fail here, rather than pairing
    # rows with another row's attributes.
    if not names and not attributes:
        return
    if set(attributes) != set(labels):
        raise ValueError(f"source {name!r}: attributes are given for parts {sorted(attributes)}, "
                         f"but its parts are {sorted(labels)}")
    for part, a in attributes.items():
        n = len(labels[part])
        if a.dtype != np.uint8 or a.shape != (n, len(names)):
            raise ValueError(f"source {name!r} part {part!r}: attributes must be uint8 of shape "
                             f"({n}, {len(names)}), got {a.dtype} {a.shape}")


@dataclass(frozen=True)
class ChunkedSource:
    """A dataset too big to hold (LSUN's 3 M bedrooms): what is small is held, every row's class (``labels[part]``,
    int64) and attributes, as in a `Source`; the rows themselves come from ``read(part)``, an iterable of arrays of
    consecutive rows (uint8 (n, C, H, W) or float32 (n, D), ``sample_shape`` and ``dtype`` each) in row order.
    ``build_shards`` writes it with bounded memory; ``to_source`` reads it whole (small data, tests).
    """

    name: str
    kind: str
    labels: dict[str, np.ndarray]
    classes: tuple[str, ...]
    sample_shape: tuple[int, ...]
    dtype: str
    read: Callable[[str], Iterable[np.ndarray]]
    meta: dict = field(default_factory=dict)
    attribute_names: tuple[str, ...] = ()
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        _check_attributes(self.name, self.labels, self.attribute_names, self.attributes)

    def __len__(self) -> int:
        return sum(len(y) for y in self.labels.values())

    def chunks(self, part: str) -> Iterator[np.ndarray]:
        """The rows of `part` in chunks, each checked against the declared shape and dtype and the total against
        the labels, so a reader that yields other rows than it declared fails here, naming its part."""
        n, seen, shape = len(self.labels[part]), 0, tuple(self.sample_shape)
        for x in self.read(part):
            if x.dtype != np.dtype(self.dtype) or tuple(x.shape[1:]) != shape or seen + len(x) > n:
                raise ValueError(f"source {self.name!r} part {part!r}: a chunk of {x.dtype} {x.shape} after "
                                 f"{seen} rows, but the source declares {n} rows of {self.dtype} {shape}")
            seen += len(x)
            yield x
        if seen != n:
            raise ValueError(f"source {self.name!r} part {part!r}: read {seen} rows, its labels say {n}")

    def map_rows(self, fn: Callable[[np.ndarray], np.ndarray], sample_shape: tuple[int, ...]) -> ChunkedSource:
        """`fn` applied to each chunk (a transform row by row, such as resizing), which gives `sample_shape` rows."""
        read = self.read
        return dataclasses.replace(self, read=lambda part: (fn(x) for x in read(part)),
                                   sample_shape=tuple(sample_shape))

    def select(self, rows: dict[str, tuple[str, np.ndarray]], meta: dict) -> ChunkedSource:
        """New parts, each the given rows (sorted indices) of an old part: {new part: (old part, rows)}."""
        chunks = self.chunks

        def read(part: str) -> Iterator[np.ndarray]:
            old, wanted = rows[part]
            start = 0
            for x in chunks(old):
                lo, hi = np.searchsorted(wanted, [start, start + len(x)])
                yield x[wanted[lo:hi] - start]
                start += len(x)

        return dataclasses.replace(
            self, labels={p: self.labels[old][r] for p, (old, r) in rows.items()}, read=read, meta=meta,
            attributes={p: self.attributes[old][r] for p, (old, r) in rows.items()} if self.attributes else {})

    def to_source(self) -> Source:
        """The whole dataset as a `Source`: each part's array allocated once and filled chunk by chunk."""
        parts = {}
        for part, y in self.labels.items():
            x, start = np.empty((len(y), *self.sample_shape), self.dtype), 0
            for chunk in self.chunks(part):
                x[start : start + len(chunk)] = chunk
                start += len(chunk)
            parts[part] = (x, y)
        return Source(self.name, self.kind, parts, tuple(self.classes), self.meta, tuple(self.attribute_names),
                      dict(self.attributes))


# Source ids inside a Split: 0 = the cell's dataset, 1 = the second dataset of the `ood` protocol.
PRIMARY, SECONDARY = 0, 1


@dataclass(frozen=True)
class Subset:
    """Rows of a split part, as references into one or two `Source`s (no pixel copies).

    ``label`` is what the method is told (0 normal, 1 labelled anomaly); ``truth`` is whether the sample
    really is an anomaly. They differ only for the `corruption` protocol (anomalies labelled normal).
    """

    source: np.ndarray  # int8, PRIMARY or SECONDARY
    part: np.ndarray  # object array of part names ("train", "test", "all")
    index: np.ndarray  # int64 row in that source part
    label: np.ndarray  # int8
    truth: np.ndarray  # int8
    cls: np.ndarray  # int64 original class index in its source

    def __len__(self) -> int:
        return len(self.index)

    def counts(self) -> dict[str, int]:
        return {
            "total": int(len(self)),
            "normal": int((self.truth == 0).sum()),
            "anomalous": int((self.truth == 1).sum()),
            "labelled_anomalous": int((self.label == 1).sum()),
        }


@dataclass(frozen=True)
class Split:
    train: Subset
    val: Subset
    test: Subset
    info: dict = field(default_factory=dict)  # protocol name, parameters, seed, anything worth recording

    def counts(self) -> dict[str, dict[str, int]]:
        return {"train": self.train.counts(), "val": self.val.counts(), "test": self.test.counts()}
