"""Check every value of a grid's cells before any cell runs, so a typo fails at launch, naming the key and the fix,
instead of inside a cell (or, worse, as a "done" cell that trained 0 steps).

``check_cells(cells)`` returns one message per problem, each shaped ``<key>=<value> ... must be ... (fix)``; a
problem shared by several cells is reported once, with how many cells and which methods have it. The checks:

- trainer: the table ``_TRAINER`` below (types, ranges, choices), the batch split of ``Schedule`` and the tracker
  (its package installed: ``dadf.train.tracking``);
- method: each value against the type of its field in the method's params dataclass (found through the registry),
  learning rates > 0, counts >= 1, then the dataclass's own ``__post_init__`` checks;
- protocol: each parameter through the protocol's own checks (``dadf.data.protocols``), ``target_class`` against
  ``dataset.num_classes``, and the protocol run on an empty stand-in of the dataset (the parts its kind has) to
  see that the protocol fits the dataset. No data is loaded.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dadf.train import tracking

if TYPE_CHECKING:
    from dadf.grid.cells import Cell

_MISSING = object()


# ---------------------------------------------------------------------------------------------------- trainer
@dataclasses.dataclass(frozen=True)
class _Spec:
    kind: str  # int | number | bool | choice
    low: int = 1
    high: int | None = None
    null: bool = False  # null is a valid value
    choices: tuple = ()
    example: object = None


_TRAINER: dict[str, _Spec] = {
    "steps": _Spec("int", null=True, example=1000),
    "epochs": _Spec("int", example=20),
    "batch_size": _Spec("int", example=64),
    "accumulate": _Spec("int", example=1),
    "eval_batch_size": _Spec("int", example=512),
    "checkpoint_every": _Spec("int", example=1000),
    "keep_checkpoints": _Spec("int", example=2),
    "sync_every": _Spec("int", null=True, example=1),
    "log_every": _Spec("int", example=50),
    "eval_every": _Spec("int", null=True, example=1000),
    "num_threads": _Spec("int", null=True, example=4),
    "zero_stage": _Spec("int", low=0, high=2, example=0),
    "select_after": _Spec("number", low=0, example=0),
    "precision": _Spec("choice", choices=("fp32", "bf16", "fp16")),
    "strategy": _Spec("choice", choices=("ddp", "deepspeed")),
    "device": _Spec("choice", choices=("auto", "cpu")),
    "compile": _Spec("bool"),
    "channels_last": _Spec("bool", null=True),
    "data_on_device": _Spec("bool"),
    "data": _Spec("choice", choices=("memory", "stream")),  # auto is resolved when the cell is frozen
    "data_workers": _Spec("int", low=0, example=2),
    "progress": _Spec("bool"),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show(v) -> str:
    """A value as the user would write it in an override."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return repr(v)


def _check_spec(key: str, v, spec: _Spec, hint: str = "") -> str | None:
    eg = hint or f" (e.g. {key}={_show(spec.example)})"
    if v is _MISSING:
        return f"{key} is not set{eg}"
    if v is None and spec.null:
        return None
    if spec.kind == "bool":
        return None if isinstance(v, bool) else f"{key}={_show(v)} must be true or false"
    if spec.kind == "choice":
        return None if v in spec.choices else f"{key}={_show(v)} must be one of {', '.join(spec.choices)}"
    ok_type = _is_int(v) if spec.kind == "int" else _is_number(v)
    what = ("a positive integer" if spec.low == 1 else "an integer") if spec.kind == "int" else "a number"
    if not ok_type:
        return f"{key}={_show(v)} must be {what}{' or null' if spec.null else ''}{eg}"
    if spec.high is not None and not spec.low <= v <= spec.high:
        return f"{key}={_show(v)} must be in {spec.low}..{spec.high}{eg}"
    if v < spec.low:
        return f"{key}={_show(v)} must be >= {spec.low}{eg}"
    return None


def _trainer_problems(t: dict, processes: int) -> list[str]:
    out = []
    for key, spec in _TRAINER.items():
        v = t.get(key, _MISSING)
        hint = " (or set trainer.steps)" if key == "epochs" and t.get("steps") is None else ""
        msg = _check_spec(f"trainer.{key}", v, spec, hint)
        if msg:
            out.append(msg)
    tracker = tracking.problem(t.get("tracker", "auto"))  # an unknown choice, or its package not installed
    if tracker:
        out.append(tracker)
    bs, acc = t.get("batch_size"), t.get("accumulate")
    if _is_int(bs) and _is_int(acc) and bs >= 1 and acc >= 1 and bs % (processes * acc):
        out.append(f"trainer.batch_size={bs} must split evenly over {processes} process(es) x "
                   f"trainer.accumulate={acc} micro-batches: choose a multiple of {processes * acc}")
    return out


# ---------------------------------------------------------------------------------------------------- method
@functools.cache
def params_class(method: str) -> type | None:
    """The params dataclass the method registered with (``@register(name, params=...)``); None if unknown."""
    from dadf import config

    return config.schema("method", method)


def _type_ok(v, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(v, a) for a in args)
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return _is_int(v)
    if hint is float:
        return _is_number(v)
    if hint is str:
        return isinstance(v, str)
    if hint is tuple or hint is list or origin in (tuple, list):
        if not isinstance(v, (list, tuple)):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(x, args[0]) for x in v)
        return len(v) == len(args) and all(_type_ok(x, a) for x, a in zip(v, args))
    return True  # a type this check does not know: accept


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is tuple or hint is list or origin in (tuple, list):
        if not args:
            return "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).split(' ', 1)[-1]}s"
        return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[-1]}s"
    return str(hint)


def _is_lr(name: str) -> bool:
    return name == "lr" or name.endswith("_lr") or name.startswith("lr_")


def _numeric(hint, inside_lists: bool = False) -> set:
    """The scalar number types a field's hint admits (int, float), looking inside unions (and lists)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) or (inside_lists and origin in (tuple, list)):
        return set().union(*(_numeric(a, inside_lists) for a in args if a is not Ellipsis))
    return {hint} & {int, float}


def _method_problems(m: dict) -> list[str]:
    name = m.get("name")
    klass = params_class(str(name))
    if klass is None:
        return []
    hints = typing.get_type_hints(klass)
    fields = {f.name: f for f in dataclasses.fields(klass)}
    out = []
    for key, v in m.items():
        if key == "name" or key not in fields:
            continue  # unknown keys: method_params below names them
        f, hint = fields[key], hints[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        where, eg = f"method.{key}={_show(v)} (method {name})", f" (e.g. method.{key}={_show(default)})"
        if not _type_ok(v, hint):
            out.append(f"{where} must be {_describe(hint)}{eg}")
            continue
        nums = _numeric(hint)
        if _is_lr(key) and float in _numeric(hint, inside_lists=True):
            values = v if isinstance(v, (list, tuple)) else [v]
            if any(_is_number(x) and x <= 0 for x in values):
                out.append(f"{where} must be > 0{eg}")
        elif nums == {int} and not key.endswith("_epoch") and _is_int(v) and v < 1:
            out.append(f"{where} must be >= 1{eg}")
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
        where = f"protocol.{key}={_show(v)} (protocol {name})"
        if key == "target_class":
            n, classes = len(source.classes), source.classes
            if isinstance(v, str) and (source.kind == "image" or v in classes):
                continue  # a class name: an image dataset's names are known only once it is loaded
            if not (_is_int(v) and 0 <= v < n):
                out.append(f"protocol.target_class={_show(v)} (dataset {d.get('name')}, {n} classes) must be a "
                           f"class index in 0..{n - 1}")
            continue
        try:
            proto.normalise({**required, key: v}, source)
        except protocols.ProtocolError as e:
            valid = re.search(r"valid values: (.*)", str(e))
            rule = valid.group(1).replace("integers", "an integer").replace("numbers", "a number") if valid \
                else f"valid: {e}"
            eg = f" (e.g. protocol.{key}={_show(spec[key])})" if spec[key] is not protocols.REQUIRED else ""
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
    what the source declares (a look at file names at most; see ``pipeline.dataset_parts``), never from the data."""
    from dadf.data import protocols
    from dadf.data.pipeline import dataset_parts
    from dadf.data.types import Source

    if cfg.get("paths") is None:
        return []
    parts = dataset_parts(cfg.dataset, cfg.paths.shards_dir)
    if parts is None or len(parts) != 1:
        return []
    d, p = OmegaConf.to_container(cfg.dataset, resolve=True), OmegaConf.to_container(cfg.protocol, resolve=True)
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
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    top = [_check_spec("seed", c.get("seed", _MISSING), _Spec("int", low=0, example=0)),
           _check_spec("dataset.num_classes", (c.get("dataset") or {}).get("num_classes", _MISSING),
                       _Spec("int", example=10))]
    return ([m for m in top if m] + _trainer_problems(c.get("trainer") or {}, processes)
            + _method_problems(c.get("method") or {})
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
        seed = _check_spec("seed", data.get("seed", _MISSING), _Spec("int", low=0, example=0))
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
