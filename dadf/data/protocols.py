"""Evaluation protocols: turn a `Source` into a train/val/test `Split` (label 1 = anomaly).

Every split is a pure function of (source content, protocol, params, seed): the random generator is
seeded with the seed and a stable digest of the protocol name, never Python's salted ``hash()``.
Rows are referenced by (source id, part, index) into ``source.parts[part]``; no pixels are copied.

A protocol is one split function decorated with ``@register(name, layout=..., params=...)``; ``layout`` names the
results-table layout (``dadf/grid/layouts.py``), ``params`` is the dataclass of its parameters: their types and
defaults (``MISSING`` for none), which is also its config (``protocol=<name>``; dadf/config.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from dadf.checks import choices
from dadf.data.types import PRIMARY, SECONDARY, Source, Split, Subset
from dadf.eval.metrics import TOP_K_RULES
from dadf.identity import added

REQUIRED = object()  # marks a parameter without a default


class ProtocolError(ValueError):
    """A protocol was asked for something it cannot do (bad name, parameter or data)."""


# A check turns a parameter's value into a plain Python value (fit for `Split.info`) or raises ProtocolError.
Check = Callable[[object, Source], object]


@dataclass(frozen=True)
class Protocol:
    name: str
    split: Callable  # (rng, source, params, secondary) -> Split; `params` filled and checked
    layout: str  # the results-table layout of its grids
    params: dict[str, object]  # parameter -> default (or REQUIRED)
    checks: dict[str, Check]  # parameter -> its check
    schema: type | None  # the params dataclass (the config's schema); None when registered with a plain dict

    def fill(self, params: dict) -> dict:
        """`params` with the defaults filled in; unknown and missing required parameters are errors."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ProtocolError(f"unknown parameter(s) {unknown} for protocol {self.name!r}; "
                                f"valid parameters: {sorted(self.params)}")
        missing = sorted(k for k, v in self.params.items() if v is REQUIRED and k not in params)
        if missing:
            raise ProtocolError(f"protocol {self.name!r} needs parameter(s) {missing}; "
                                f"valid parameters: {sorted(self.params)}")
        return {k: params.get(k, default) for k, default in self.params.items()}

    def normalise(self, params: dict, source: Source) -> dict:
        """Fill defaults and check every value against `source`; returns plain Python types."""
        return {k: self.checks[k](v, source) for k, v in self.fill(dict(params)).items()}


PROTOCOLS: dict[str, Protocol] = {}  # name -> Protocol, in registration order


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; valid choices: {list(PROTOCOLS)}")
    return PROTOCOLS[name]


# --------------------------------------------------------------------------------------------------
# Row tables: the (source, part, index, cls) of candidate rows, before labels are attached.


@dataclass(frozen=True)
class _Rows:
    source: np.ndarray
    part: np.ndarray
    index: np.ndarray
    cls: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, sel: np.ndarray) -> _Rows:
        return _Rows(self.source[sel], self.part[sel], self.index[sel], self.cls[sel])

    def where(self, mask: np.ndarray) -> _Rows:
        return self.take(np.flatnonzero(mask))


def _part_rows(source: Source, part: str, source_id: int = PRIMARY) -> _Rows:
    _, y = source.parts[part]
    n = len(y)
    return _Rows(
        source=np.full(n, source_id, dtype=np.int8),
        part=np.full(n, part, dtype=object),
        index=np.arange(n, dtype=np.int64),
        cls=np.asarray(y, dtype=np.int64),
    )


def _concat_rows(rows: list[_Rows]) -> _Rows:
    return _Rows(*(np.concatenate([getattr(r, f) for r in rows]) for f in ("source", "part", "index", "cls")))


def _subset(rows: _Rows, label: int | np.ndarray, truth: int | np.ndarray) -> Subset:
    """Attach labels (what the method is told) and truths (scalars or per-row arrays) to rows."""
    n = len(rows)

    def per_row(v):
        return np.broadcast_to(np.asarray(v, dtype=np.int8), (n,)).copy()

    return Subset(
        source=rows.source.astype(np.int8),
        part=rows.part.astype(object),
        index=rows.index.astype(np.int64),
        label=per_row(label),
        truth=per_row(truth),
        cls=rows.cls.astype(np.int64),
    )


def _concat(subsets: list[Subset]) -> Subset:
    fields = ("source", "part", "index", "label", "truth", "cls")
    return Subset(*(np.concatenate([getattr(s, f) for s in subsets]) for f in fields))


def _empty_subset() -> Subset:
    return _subset(_Rows(*(np.empty(0, dtype=d) for d in (np.int8, object, np.int64, np.int64))), 0, 0)


# --------------------------------------------------------------------------------------------------
# Parameters and registration.


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_fraction(name: str, value, *, low_open: bool) -> float:
    ok = _is_number(value) and (0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        valid = "0 < x < 1" if low_open else "0 <= x < 1"
        raise ProtocolError(f"{name}={value!r} is invalid; valid values: {valid}")
    return float(value)


def _check_count(name: str, value) -> int:
    if not _is_int(value) or value < 0:
        raise ProtocolError(f"{name}={value!r} is invalid; valid values: integers >= 0")
    return int(value)


def _check_percent(value) -> float:
    if not _is_number(value) or value < 0:
        raise ProtocolError(f"p={value!r} is invalid; valid values: numbers >= 0 (percent of the normal train count)")
    return float(value)


def _check_positive(name: str, value) -> float:
    if not _is_number(value) or value <= 0:
        raise ProtocolError(f"{name}={value!r} is invalid; valid values: numbers > 0")
    return float(value)


def _check_target(value, source: Source) -> int:
    """Accept a class index or a class name; return the index."""
    if isinstance(value, str) and value in source.classes:
        return source.classes.index(value)
    if _is_int(value) and 0 <= value < len(source.classes):
        return int(value)
    raise ProtocolError(
        f"target_class={value!r} is out of range for dataset {source.name!r}; valid choices: "
        f"0..{len(source.classes) - 1} or a class name in {list(source.classes)}"
    )


# The checks of the parameters protocols share; a protocol with a parameter of its own passes `checks=`.
_CHECKS: dict[str, Check] = {
    "target_class": _check_target,
    "p": lambda v, _: _check_percent(v),
    "val_fraction": lambda v, _: _check_fraction("val_fraction", v, low_open=False),
    "train_fraction": lambda v, _: _check_fraction("train_fraction", v, low_open=True),
    "val_anomalies": lambda v, _: _check_count("val_anomalies", v),
    "ratio": lambda v, _: _check_positive("ratio", v),
}


def _defaults(schema: type) -> dict[str, object]:
    """{parameter: default or REQUIRED} of a params dataclass; its `secondary` field names the dataset handed to the
    split as `secondary`, not a parameter."""
    return {f.name: REQUIRED if f.default == MISSING else f.default
            for f in dataclasses.fields(schema) if f.name != "secondary"}


def register(name: str, *, layout: str, params: type | dict[str, object], checks: dict[str, Check] | None = None):
    """Register `fn(rng, source, params, secondary) -> Split` as protocol `name`, with its parameters (a dataclass
    of their types and defaults, or a plain dict {parameter: default or REQUIRED}) and the results-table layout
    its grids use."""
    schema = params if dataclasses.is_dataclass(params) else None
    params = _defaults(schema) if schema else dict(params)
    checks = {**_CHECKS, **(checks or {})}
    unchecked = sorted(set(params) - set(checks))
    if unchecked:
        raise ValueError(f"protocol {name!r}: no check for parameter(s) {unchecked}; pass checks={{name: fn}} "
                         f"(shared checks: {sorted(_CHECKS)})")

    def wrap(fn: Callable) -> Callable:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} is registered twice")
        PROTOCOLS[name] = Protocol(name, fn, layout, params, {k: checks[k] for k in params}, schema)
        return fn

    return wrap


# --------------------------------------------------------------------------------------------------
# Drawing rows.


def _rng(protocol: str, seed: int) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(protocol.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def _require_parts(source: Source, protocol: str, *parts: str) -> None:
    missing = [p for p in parts if p not in source.parts]
    if missing:
        raise ProtocolError(
            f"protocol {protocol!r} needs part(s) {missing} but dataset {source.name!r} has parts {list(source.parts)}"
        )


def _draw(rng: np.random.Generator, rows: _Rows, k: int, what: str) -> tuple[_Rows, _Rows]:
    """Randomly take k rows; return (taken, remaining). Errors if fewer than k are available."""
    if k > len(rows):
        raise ProtocolError(f"need {k} {what} but only {len(rows)} are available")
    order = rng.permutation(len(rows))
    return rows.take(np.sort(order[:k])), rows.take(np.sort(order[k:]))


def _n_of(fraction: float, n: int) -> int:
    # Python's round (half to even); 0 is allowed.
    return int(round(fraction * n))


# --------------------------------------------------------------------------------------------------
# Protocols.

@dataclass
class OneClassParams:
    target_class: int | str = MISSING  # a class index or name; a grid's `classes` sets it, one cell per class
    val_fraction: float = 0.0  # share of the normal training rows held out for validation
    val_anomalies: int = 0  # anomalies held out for validation


@dataclass
class WithPParams(OneClassParams):
    p: int | float = MISSING  # percent of the normal training count (a grid's axis sets it)


@dataclass
class OODParams:
    secondary: str | None = None  # the anomalies' dataset: a file of configs/dataset/ (root: dataset.root's)
    ratio: float = 0.2  # test anomalies, as a share of the test set
    val_anomalies: int = 50
    val_fraction: float = 0.0


TopKRule = choices("TopKRule", TOP_K_RULES)


@dataclass
class TabularParams:
    train_fraction: float = 0.5
    # how the top k% (dataset.top_k_percent; null: the test split's anomaly ratio) are flagged for precision/recall/
    # F1: percentile (the field's, dadf/eval/metrics.py) | round (round(k% x n) rows by position)
    top_k_rule: TopKRule = added(TopKRule.percentile, before="round")


def _check_top_k_rule(value, _source) -> str:
    if value not in TOP_K_RULES:
        raise ProtocolError(f"top_k_rule={value!r} is invalid; valid values: {', '.join(TOP_K_RULES)}")
    return str(value)


@dataclass
class GPNDParams:
    target_class: int | str = MISSING
    train_fraction: float = 0.8


def _one_class(rng, source: Source, params: dict, protocol: str, *, normal_is_target: bool,
               extra_label: int | None = None) -> Split:
    """Shared body of loo/ovr/corruption/semisup: normals vs. anomalous classes, "test" part as test.
    With `p`, p% anomalies join the training set, told `extra_label`."""
    _require_parts(source, protocol, "train", "test")
    target = params["target_class"]
    train_rows = _part_rows(source, "train")
    is_normal = (train_rows.cls == target) if normal_is_target else (train_rows.cls != target)
    normals, anomalies = train_rows.where(is_normal), train_rows.where(~is_normal)

    val_normals, normals = _draw(rng, normals, _n_of(params["val_fraction"], len(normals)), "validation normals")
    # Anomalies are drawn once, so train contamination and val anomalies never share rows.
    # p * n / 100 rather than p / 100 * n: exact for whole p, so halves round the same way every time.
    n_extra = int(round(params["p"] * len(normals) / 100)) if "p" in params else 0
    extra, anomalies = _draw(rng, anomalies, n_extra, f"anomalies for p={params.get('p')}")
    val_anoms, _ = _draw(rng, anomalies, params["val_anomalies"], "validation anomalies")

    train = [_subset(normals, 0, 0)]
    if extra_label is not None:
        train.append(_subset(extra, extra_label, 1))
    test_rows = _part_rows(source, "test")
    test_truth = (test_rows.cls != target) if normal_is_target else (test_rows.cls == target)
    val = _concat([_subset(val_normals, 0, 0), _subset(val_anoms, 1, 1)])
    return Split(train=_concat(train), val=val, test=_subset(test_rows, test_truth, test_truth))


@register("loo", layout="per_class", params=OneClassParams)
def _loo(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    return _one_class(rng, source, params, "loo", normal_is_target=False)


@register("ovr", layout="per_class", params=OneClassParams)
def _ovr(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    return _one_class(rng, source, params, "ovr", normal_is_target=True)


@register("ood", layout="ood", params=OODParams)
def _ood(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    if secondary is None:
        raise ProtocolError("protocol 'ood' needs a secondary dataset (the anomalies); none was given")
    if secondary.sample_shape != source.sample_shape:
        raise ProtocolError(
            f"protocol 'ood': sample shapes differ: {source.name!r} has {source.sample_shape}, "
            f"{secondary.name!r} has {secondary.sample_shape}; set `size`/`channels` on the dataset config "
            "so both load with the same shape"
        )
    _require_parts(source, "ood", "train", "test")
    b_part = "test" if "test" in secondary.parts else next(iter(secondary.parts))
    b_rows = _part_rows(secondary, b_part, SECONDARY)
    a_test = _part_rows(source, "test")
    n_test_anoms = _n_of(params["ratio"], len(a_test))
    n_needed = n_test_anoms + params["val_anomalies"]
    if n_needed > len(b_rows):
        raise ProtocolError(
            f"protocol 'ood': {secondary.name!r} part {b_part!r} has {len(b_rows)} rows but {n_needed} are needed "
            f"({n_test_anoms} test anomalies = ratio {params['ratio']} x {len(a_test)} test rows, "
            f"+ {params['val_anomalies']} val_anomalies)"
        )
    test_anoms, rest = _draw(rng, b_rows, n_test_anoms, "test anomalies")
    val_anoms, _ = _draw(rng, rest, params["val_anomalies"], "validation anomalies")
    a_train = _part_rows(source, "train")
    val_normals, a_train = _draw(rng, a_train, _n_of(params["val_fraction"], len(a_train)), "validation normals")
    return Split(
        train=_subset(a_train, 0, 0),
        val=_concat([_subset(val_normals, 0, 0), _subset(val_anoms, 1, 1)]),
        test=_concat([_subset(a_test, 0, 0), _subset(test_anoms, 1, 1)]),
        info={"secondary": secondary.name},
    )


@register("corruption", layout="by_p", params=WithPParams)
def _corruption(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    # hidden contamination: told normal, truly anomalous
    return _one_class(rng, source, params, "corruption", normal_is_target=True, extra_label=0)


@register("semisup", layout="by_p", params=WithPParams)
def _semisup(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    return _one_class(rng, source, params, "semisup", normal_is_target=True, extra_label=1)


@register("tabular", layout="tabular", params=TabularParams, checks={"top_k_rule": _check_top_k_rule})
def _tabular(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    _require_parts(source, "tabular", "all")
    rows = _part_rows(source, "all")
    train, test = _draw(rng, rows, _n_of(params["train_fraction"], len(rows)), "training rows")
    train = train.where(train.cls == 0)  # tabular training is unsupervised: drop its anomalies
    test_truth = test.cls == 1
    anomaly_ratio = float(np.mean(source.parts["all"][1] == 1)) if len(source) else 0.0
    return Split(train=_subset(train, 0, 0), val=_empty_subset(), test=_subset(test, test_truth, test_truth),
                 info={"anomaly_ratio": anomaly_ratio})


@register("gpnd", layout="per_class", params=GPNDParams)
def _gpnd(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    target = params["target_class"]
    pooled = _concat_rows([_part_rows(source, part) for part in source.parts])
    normals, anomalies = pooled.where(pooled.cls == target), pooled.where(pooled.cls != target)
    train, test_normals = _draw(rng, normals, _n_of(params["train_fraction"], len(normals)), "training normals")
    test_anoms, _ = _draw(rng, anomalies, len(test_normals), "test anomalies")
    test = _concat([_subset(test_normals, 0, 0), _subset(test_anoms, 1, 1)])
    return Split(train=_subset(train, 0, 0), val=_empty_subset(), test=test)


@dataclass
class AttributeParams:
    attribute: str = MISSING  # the per-sample attribute that marks an anomaly (CelebA: Bald, Mustache, Bangs...)
    val_fraction: float = 0.0  # share of the normal training rows held out for validation
    val_anomalies: int = 0  # training-part images with the attribute held out for validation


def _check_attribute(value, source: Source) -> str:
    """A name among the source's attributes; any string when the source has none (the split then says so)."""
    names = source.attribute_names
    if not isinstance(value, str) or (names and value not in names):
        valid = f"one of {', '.join(names)}" if names else "an attribute name of the dataset (a string)"
        raise ProtocolError(f"attribute={value!r} is not an attribute of dataset {source.name!r}; "
                            f"valid values: {valid}")
    return value


@register("attribute", layout="attribute", params=AttributeParams, checks={"attribute": _check_attribute})
def _attribute(rng, source: Source, params: dict, secondary: Source | None) -> Split:
    """PIAD's CelebA protocol: train on the "train" part's images without the attribute, test on the "test" part,
    anomalous = with it. Seeded draws: the validation rows only (the test part is taken whole)."""
    name = params["attribute"]
    if not source.attribute_names:
        raise ProtocolError(f"protocol 'attribute' splits on per-sample attributes, but dataset {source.name!r} has "
                            "none; use a dataset that has them (dataset=celeba: 40 attributes)")
    _require_parts(source, "attribute", "train", "test")
    column = source.attribute_names.index(name)
    train_rows = _part_rows(source, "train")
    has = source.attributes["train"][:, column] == 1
    normals, anomalies = train_rows.where(~has), train_rows.where(has)
    val_normals, normals = _draw(rng, normals, _n_of(params["val_fraction"], len(normals)), "validation normals")
    val_anoms, _ = _draw(rng, anomalies, params["val_anomalies"], f"validation anomalies (images with {name})")
    test_rows = _part_rows(source, "test")
    truth = source.attributes["test"][:, column] == 1
    counts = {"train_normal": len(normals), "test_normal": int((~truth).sum()), "test_anomalous": int(truth.sum())}
    if not counts["train_normal"] or not counts["test_normal"] or not counts["test_anomalous"]:
        raise ProtocolError(f"protocol 'attribute' with attribute={name!r} on dataset {source.name!r} gives {counts}: "
                            "it needs normal training images and both kinds of test images; choose another attribute")
    return Split(train=_subset(normals, 0, 0), val=_concat([_subset(val_normals, 0, 0), _subset(val_anoms, 1, 1)]),
                 test=_subset(test_rows, truth, truth), info={"attribute": name, "counts": counts})


def make_split(protocol: str, source: Source, *, seed: int, params: dict, secondary: Source | None = None) -> Split:
    """Build the train/val/test split of `protocol` (one of PROTOCOLS) over `source`."""
    spec = get(protocol)
    if not _is_int(seed) or seed < 0:
        raise ProtocolError(f"seed={seed!r} is invalid; valid values: integers >= 0")
    full = spec.normalise(params, source)
    split = spec.split(_rng(protocol, seed), source, full, secondary)
    info = {"protocol": protocol, "params": full, "seed": int(seed), **split.info}
    return Split(train=split.train, val=split.val, test=split.test, info=info)
