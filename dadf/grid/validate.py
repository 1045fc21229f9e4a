"""Check every value of a grid's cells before any cell runs, so a typo fails at launch, naming the key and the fix,
instead of inside a cell (or, worse, as a "done" cell that trained 0 steps).

``check_cells(cells)`` returns one message per problem, each shaped ``<key>=<value> ... must be ... (fix)``; a
problem shared by several cells is reported once, with how many cells and which methods have it. A value of the
wrong type, or a choice outside its set, never gets here: Hydra refuses it when it composes (the schemas). The
checks:

- trainer: ``dadf.config.trainer_problems`` (each field's range, the batch split over the cell's processes), the
  tracker's package installed (``dadf.train.tracking``) and ``trainer.selection`` against the method's criteria;
- method: ``dadf.checks.method_problems`` against the method's params dataclass (found through the registry:
  ranges, list lengths, learning rates > 0, counts >= 1), then the dataclass's own ``__post_init__`` checks;
- protocol: each parameter through the protocol's own checks (``dadf.data.protocols``), ``target_class`` against
  ``dataset.num_classes``, and the protocol run on an empty stand-in of the dataset (the parts its kind has) to
  see that the protocol fits the dataset. No data is loaded.

The trainer (dadf/train/) and ``method_params`` run the same checkers again on the cell.yaml they run from.
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dadf import checks, config
from dadf.checks import Range, show
from dadf.train import tracking

if TYPE_CHECKING:
    from dadf.grid.cells import Cell

_MISSING = object()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _top_level(key: str, v, rule: Range) -> str | None:
    """``seed`` or ``dataset.num_classes``: keys of no schema's field."""
    if v is _MISSING:
        return f"{key} is not set (e.g. {key}={show(rule.example)})"
    return checks.value_problem(key, v, int, rule, example=rule.example)


_SEED, _NUM_CLASSES = Range(0, example=0), Range(1, example=10)


# ---------------------------------------------------------------------------------------------------- trainer
def _trainer_problems(t: dict, processes: int) -> list[str]:
    out = config.trainer_problems(t, processes)
    if t.get("data") == "auto":  # a valid choice, but one that freezing a cell decides
        out.append("trainer.data='auto' is decided when a cell is frozen (at launch): a cell holds memory or stream")
    if not any(p.startswith("trainer.tracker=") for p in out):
        problem = tracking.problem(t.get("tracker", "auto"))  # its package not installed
        out += [problem] if problem else []
    return out


def _selection_problem(t: dict, m: dict) -> str | None:
    from dadf.methods.registry import get_method

    name = str(m.get("name"))
    if params_class(name) is None:
        return None
    return config.selection_problem(str(t.get("selection", "last")), name, get_method(name).selection_criteria)


# ---------------------------------------------------------------------------------------------------- launcher
def launcher_problems(lcfg: DictConfig | dict) -> list[str]:
    """The launcher's values outside their ranges (``dadf.config``'s launcher schemas: workers, cells_per_gpu...);
    its choices (start_method) Hydra checked when it composed."""
    schema = config.schema("launcher", str(lcfg.get("name")))
    return checks.problems(schema, lcfg, "launcher") if schema else []


# ---------------------------------------------------------------------------------------------------- method
@functools.cache
def params_class(method: str) -> type | None:
    """The params dataclass the method registered with (``@register(name, params=...)``); None if unknown."""
    return config.schema("method", method)


def _method_problems(m: dict) -> list[str]:
    name = m.get("name")
    klass = params_class(str(name))
    if klass is None:
        return []
    out = checks.method_problems(str(name), klass, m)  # unknown keys: method_params below names them
    if not out:
        from dadf.methods.base import method_params

        try:
            method_params(OmegaConf.create(m), klass)  # unknown keys, the dataclass's own __post_init__ checks
        except Exception as e:  # noqa: BLE001 -- any refusal of the params is a problem to report
            text = str(e)
            out.append(f"method {name}: {text[len(f'{name}: '):] if text.startswith(f'{name}: ') else text}")
    return out


# ---------------------------------------------------------------------------------------------------- protocol
def dataset_kind(d: dict) -> str:
    """image | tabular, from the dataset config without loading it: a source that takes a ``kind`` parameter
    (synthetic) says it there; otherwise ``top_k_percent`` is set for tabular datasets only."""
    from dadf.data import sources
    from dadf.data.types import IMAGE, TABULAR

    loader = sources.SOURCES.get(str(d.get("source")))
    if loader is not None and "kind" in inspect.signature(loader).parameters:
        default = inspect.signature(loader).parameters["kind"].default
        return str((d.get("params") or {}).get("kind", default))
    if loader is not None:  # a source that declares its kind (odds, csv_table...) needs no top_k_percent to tell
        try:
            declared = sources.declared_kind(str(d.get("source")), d.get("params") or {})
        except sources.DataError:
            declared = None  # a bad parameter: loading the data names it
        if declared is not None:
            return declared
    return TABULAR if d.get("top_k_percent") is not None else IMAGE


def _stand_in(d: dict, per_class: int = 10):
    """A tiny Source with the parts and classes the dataset config implies (zeros: only its structure counts)."""
    from dadf.data.sources import TABULAR_CLASSES
    from dadf.data.sources.attributes import declared_attributes
    from dadf.data.types import TABULAR, Source

    kind = dataset_kind(d)
    if kind == TABULAR:
        classes, parts = TABULAR_CLASSES, ("all",)
    else:
        n = d.get("num_classes") if _is_int(d.get("num_classes")) and d.get("num_classes") >= 1 else 1
        classes, parts = tuple(str(i) for i in range(n)), ("train", "test")
    y = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    x = np.zeros((len(y), 1), dtype=np.float32)
    names = declared_attributes(str(d.get("source")))  # the `attribute` protocol's valid choices, when declared
    every_other = np.tile((np.arange(len(y)) % 2).astype(np.uint8)[:, None], (1, len(names)))
    return Source(str(d.get("name")), kind, {p: (x, y) for p in parts}, classes, attribute_names=names,
                  attributes={p: every_other for p in parts} if names else {})


# Values that make every protocol's draws fit a stand-in of 10 rows per class (for the structural run only).
_NEUTRAL = {"target_class": 0, "p": 0.0, "val_fraction": 0.0, "val_anomalies": 0}


def _neutral(source) -> dict:
    """_NEUTRAL and an `attribute` the stand-in has (any string when it has none: the split then refuses it)."""
    return {**_NEUTRAL, "attribute": source.attribute_names[0] if source.attribute_names else ""}


def _fits(protocol: str, source, secondary) -> str | None:
    """None when ``protocol`` can split ``source`` at all, else its refusal (parts, secondary dataset...)."""
    from dadf.data import protocols

    spec = protocols.get(protocol).params
    params = {k: _neutral(source).get(k, default) for k, default in spec.items()}
    try:
        protocols.make_split(protocol, source, seed=0, params=params, secondary=secondary)
    except protocols.ProtocolError as e:
        return str(e)
    except Exception:  # noqa: BLE001 -- a limit of the stand-in, not of the config: no false alarm
        return None
    return None


def _protocol_problems(p: dict, d: dict) -> list[str]:
    from dadf.data import protocols

    name = str(p.get("name"))
    if name not in protocols.PROTOCOLS:
        return [f"protocol={name} is not a protocol: choose one of {', '.join(protocols.PROTOCOLS)}"]
    params = {k: v for k, v in p.items() if k not in ("name", "secondary")}
    source = _stand_in(d)
    proto = protocols.get(name)
    spec = proto.params
    out = []
    try:
        proto.fill(params)
    except protocols.ProtocolError as e:
        out.append(f"protocol {name}: {e}")
    required = {k: _neutral(source).get(k, v) for k, v in spec.items()}
    for key, v in params.items():
        if key not in spec:
            continue
        where = f"protocol.{key}={show(v)} (protocol {name})"
        if key == "target_class":
            n, classes = len(source.classes), source.classes
            if isinstance(v, str) and (source.kind == "image" or v in classes):
                continue  # a class name: an image dataset's names are known only once it is loaded
            if not (_is_int(v) and 0 <= v < n):
                out.append(f"protocol.target_class={show(v)} (dataset {d.get('name')}, {n} classes) must be a "
                           f"class index in 0..{n - 1}")
            continue
        try:
            proto.normalise({**required, key: v}, source)
        except protocols.ProtocolError as e:
            valid = re.search(r"valid values: (.*)", str(e))
            rule = valid.group(1).replace("integers", "an integer").replace("numbers", "a number") if valid \
                else f"valid: {e}"
            eg = f" (e.g. protocol.{key}={show(spec[key])})" if spec[key] is not protocols.REQUIRED else ""
            out.append(f"{where} must be {rule}{eg}")
    sec = p.get("secondary")
    # 100 rows per class: a one-class OOD set (imagenet_resize) still holds the draws of a 10-class stand-in's test
    secondary = _stand_in(sec, per_class=100) if isinstance(sec, dict) else None
    refusal = _fits(name, source, secondary)
    if refusal and secondary is None and not _fits(name, source, source):
        # it splits once given any secondary dataset: the secondary is what is missing
        out.append(f"protocol.secondary=null (protocol {name}) must name a dataset of configs/dataset/: {refusal}")
    elif refusal:
        fitting = [q for q in protocols.PROTOCOLS if not _fits(q, source, secondary or source)]
        out.append(f"protocol={name} does not fit dataset={d.get('name')} ({source.kind}, parts "
                   f"{list(source.parts)}): {refusal}; protocols that fit it: {', '.join(fitting)}")
    return out


def one_split_problems(cfg: DictConfig) -> list[str]:
    """A protocol that trains on a part of its own (loo, ovr, ood...) on a dataset that ships one part only (a test
    set alone) would fail in every cell: refused at launch, with the fix. The parts come from the built shards or
    what the source declares (a look at file names at most; see ``datasets.dataset_parts``), never from the data."""
    from dadf.data import protocols
    from dadf.data.datasets import dataset_parts
    from dadf.data.types import Source

    if cfg.get("paths") is None:
        return []
    parts = dataset_parts(cfg.dataset, cfg.paths.shards_dir)
    if parts is None or len(parts) != 1:
        return []
    d, p = checks.plain(cfg.dataset), checks.plain(cfg.protocol)
    # the stand-in of _protocol_problems (an image dataset's: train and test) against one with the real parts
    full = _stand_in(d)
    one = Source(full.name, full.kind, dict.fromkeys(parts, next(iter(full.parts.values()))), full.classes)
    sec = _stand_in(p["secondary"]) if isinstance(p.get("secondary"), dict) else None
    name = str(p.get("name"))
    if name not in protocols.PROTOCOLS or _fits(name, one, sec or one) is None or _fits(name, full, sec or full):
        return []  # fits, or does not fit even with train and test (_protocol_problems says so)
    fix = "dataset.params.split_test=true" if "split_test" in (d.get("params") or {}) else \
        "+dataset.params.split_test=true"
    return [f"protocol={name} trains on a part of its own, but dataset={d.get('name')} has one part only "
            f"({parts[0]!r}): every cell would fail; halve it per class into train and test with {fix}"]


# ---------------------------------------------------------------------------------------------------- all
def cell_problems(cfg: DictConfig | dict, processes: int = 1) -> list[str]:
    """The problems of one cell's frozen config (see ``check_cells``)."""
    c = checks.plain(cfg)
    trainer, method = c.get("trainer") or {}, c.get("method") or {}
    top = [_top_level("seed", c.get("seed", _MISSING), _SEED),
           _top_level("dataset.num_classes", (c.get("dataset") or {}).get("num_classes", _MISSING), _NUM_CLASSES),
           _selection_problem(trainer, method)]
    return ([m for m in top if m] + _trainer_problems(trainer, processes) + _method_problems(method)
            + _protocol_problems(c.get("protocol") or {}, c.get("dataset") or {}))


def check_cells(cells: list[Cell], processes: Callable[[Cell], int] = lambda c: 1) -> list[str]:
    """Every problem with the values of these cells, one message each, deduplicated across cells; [] when fine.

    ``processes(cell)`` is the number of processes the cell will train on (the batch must split over them). A
    message that several cells share is reported once, followed by ``[all N cells]`` or ``[k of N cells:
    methods]``; with a single cell there is no such suffix. Cells of one composition (``Cell.group``) differ in their
    seed and class only: their other values are checked once.
    """
    seen: dict[str, list[Cell]] = {}
    memo: dict[tuple, list[str]] = {}
    for cell in cells:
        data, n = cell.data, int(processes(cell))
        key = (cell.group, data["protocol"].get("target_class"), n) if cell.group is not None else None
        problems = memo.get(key) if key is not None else None
        if problems is None:
            split = memo.get(cell.group) if cell.group is not None else None  # the same for every class
            if split is None:
                split = one_split_problems(cell.cfg)
                if cell.group is not None:
                    memo[cell.group] = split
            problems = cell_problems({**data, "seed": 0}, n) + split
            if key is not None:
                memo[key] = problems
        seed = _top_level("seed", data.get("seed", _MISSING), _SEED)
        for msg in ([seed] if seed else []) + problems:
            seen.setdefault(msg, []).append(cell)
    out = []
    for msg, where in seen.items():
        if len(cells) > 1:
            methods = list(dict.fromkeys(str(c.data["method"]["name"]) for c in where))
            msg += (f" [all {len(cells)} cells]" if len(where) == len(cells)
                    else f" [{len(where)} of {len(cells)} cells: {', '.join(methods)}]")
        out.append(msg)
    return out
