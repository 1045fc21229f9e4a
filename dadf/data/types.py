"""The two data shapes every part of dadf agrees on: a `Source` (a dataset as arrays) and a `Split`."""
from __future__ import annotations

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
        # Parts rebuilt (a subset, a split) beside attributes left as they were fail here, rather than pairing
        # rows with another row's attributes.
        if not self.attribute_names and not self.attributes:
            return
        if set(self.attributes) != set(self.parts):
            raise ValueError(f"source {self.name!r}: attributes are given for parts {sorted(self.attributes)}, "
                             f"but its parts are {sorted(self.parts)}")
        for part, a in self.attributes.items():
            n = len(self.parts[part][1])
            if a.dtype != np.uint8 or a.shape != (n, len(self.attribute_names)):
                raise ValueError(f"source {self.name!r} part {part!r}: attributes must be uint8 of shape "
                                 f"({n}, {len(self.attribute_names)}), got {a.dtype} {a.shape}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        x, _ = next(iter(self.parts.values()))
        return tuple(x.shape[1:])

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.parts.values())


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
