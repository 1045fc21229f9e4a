"""The rules on config values that a type alone cannot say, written once on the schemas' fields and read by one
checker (``problems``):

- a closed set of values: the field is typed by a ``Choice`` enum (``choices``). Hydra refuses any other value
  when it composes, listing the valid ones; ``problems`` refuses it in plain data (a cell's cell.yaml, which a user
  may edit by hand);
- a range: the field's metadata, ``at_least(1)``, ``above(0)`` or ``within(0, 2)`` (merged with the identity
  markers of dadf/identity.py where a field has both: ``metadata={**UNHASHED, **at_least(1)}``);
- a fixed-length list (``tuple[float, float]``): OmegaConf checks the items' type, not how many there are;
- a method parameter without a range of its own: ``method_range`` (learning rates > 0, counts >= 1).

dadf/grid/validate.py runs it for every cell at launch; the trainer (dadf/train/loop.py, strategy.py) and
``dadf.methods.base.method_params`` run it again when a cell runs from its cell.yaml. The trainer's rule across
fields, the batch split, is ``batch_split`` here. Dependency-free (OmegaConf aside), so every schema imports it.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping

from omegaconf import OmegaConf


class Choice(str, enum.Enum):
    """A field's closed set of values. Each member is named by its value (OmegaConf composes, and writes with
    ``to_container(enum_to_str=True)``, a member by its name: cell.yaml and cell ids hold the very strings) and is
    that string, so code compares it with plain strings and a frozen cell's plain values work alike."""

    def __init__(self, *args):
        if self.name != self.value:
            raise TypeError(f"{type(self).__name__}.{self.name} = {self.value!r}: a choice is named by its value")

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def choices(name: str, values: Iterable[str]) -> type[Choice]:
    """The ``Choice`` enum ``name`` of ``values`` (strings that need not be identifiers: ``sn+gp``)."""
    module = sys._getframe(1).f_globals["__name__"]  # where it is defined, so that its members pickle
    return Choice(name, [(v, v) for v in values], module=module)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a number field admits: ``low`` <= v (< with ``low_open``), v <= ``high`` (< with ``high_open``).
    ``example`` is the value the fix suggests where the field's default is null."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    example: object = None

    def admits(self, v) -> bool:
        return ((self.low is None or (v > self.low if self.low_open else v >= self.low))
                and (self.high is None or (v < self.high if self.high_open else v <= self.high)))

    def describe(self, integer: bool) -> str:
        if self.low is not None and self.high is not None:
            if integer and not (self.low_open or self.high_open):
                return f"in {self.low}..{self.high}"
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'<' if self.high_open else '<='} {self.high}"


def at_least(low, *, example=None) -> dict:
    """Field metadata: value >= ``low``."""
    return {"range": Range(low, example=example)}


def above(low, *, example=None) -> dict:
    """Field metadata: value > ``low``."""
    return {"range": Range(low, low_open=True, example=example)}


def within(low, high, *, high_open: bool = False, example=None) -> dict:
    """Field metadata: ``low`` <= value <= ``high`` (< ``high`` with ``high_open``)."""
    return {"range": Range(low, high, high_open=high_open, example=example)}


# ------------------------------------------------------------------------------------------------- the checker
def problems(schema: type, values, prefix: str, *, where: str = "", fixes: Mapping[str, str] | None = None,
             implied: Callable[[str, object], Range | None] | None = None) -> list[str]:
    """One message per value of ``values`` (plain data or a config of ``schema``) outside its field's choices,
    range or list length, shaped ``<prefix>.<key>=<value><where> must be ... (e.g. <prefix>.<key>=<default>)``.
    Only the fields ``values`` has are checked (a part of a config may be given); keys the schema lacks are not
    this checker's business. ``fixes``: {field: the text that replaces the example}; ``implied(name, hint)``: the
    range of a field that declares none."""
    data = plain(values)
    hints = _hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        if f.name not in data:
            continue
        rule = f.metadata.get("range") or (implied(f.name, hints[f.name]) if implied else None)
        msg = value_problem(f"{prefix}.{f.name}", data[f.name], hints[f.name], rule, where=where,
                            example=_example(f, rule), fix=(fixes or {}).get(f.name))
        if msg:
            out.append(msg)
    return out


def value_problem(key: str, v, hint, rule: Range | None = None, *, where: str = "", example=None,
                  fix: str | None = None) -> str | None:
    """What is wrong with ``key=v`` for a field typed ``hint`` with range ``rule``, or None."""
    members = _members(hint)
    if v is None and (type(None) in members or hint is typing.Any):
        return None
    eg = fix if fix is not None else (f" (e.g. {key}={show(example)})" if example is not None else "")
    head = f"{key}={show(v)}{where} must be"
    choice = next((m for m in members if isinstance(m, type) and issubclass(m, Choice)), None)
    if choice is not None:
        if v in choice.values():
            return None
        return f"{head} one of {', '.join(choice.values())}{' or null' if type(None) in members else ''}"
    length = _fixed_length(hint)
    if length is not None and isinstance(v, (list, tuple)) and len(v) != length:
        return f"{head} a list of {length} {_noun(typing.get_args(hint)[0])}{eg}"
    if rule is None:
        return None
    integer = _numbers(hint, lists=True) == {int}
    words = any(m not in (int, float, type(None)) and typing.get_origin(m) not in (tuple, list) for m in members)
    for x in v if isinstance(v, (list, tuple)) else [v]:
        if words and not _is_number(x):
            continue  # a word the field also takes ("auto"): the range is about its numbers
        if not (_is_int(x) if integer else _is_number(x)):
            return f"{head} {'an integer' if integer else 'a number'} {rule.describe(integer)}{eg}"
        if not rule.admits(x):
            return f"{head} {rule.describe(integer)}{eg}"
    return None


def refuse(found: list[str]) -> None:
    """Raise a ValueError that names every problem in ``found``; nothing when there is none."""
    if found:
        raise ValueError("; ".join(found))


# ------------------------------------------------------------------------------------------------- the rules
def batch_split(batch_size, accumulate, processes: int) -> str | None:
    """``trainer.batch_size`` is the global batch of one step: it must split evenly over ``processes`` x
    ``trainer.accumulate`` micro-batches. None when it does, or when either value is outside its own range (that
    range's message names it)."""
    if not (_is_int(batch_size) and _is_int(accumulate) and batch_size >= 1 and accumulate >= 1):
        return None
    if batch_size % (processes * accumulate) == 0:
        return None
    return (f"trainer.batch_size={batch_size} must split evenly over {processes} process(es) x "
            f"trainer.accumulate={accumulate} micro-batches: choose a multiple of {processes * accumulate}")


def method_range(name: str, hint) -> Range | None:
    """The range of a method parameter that declares none: a learning rate (``lr``, ``lr_*``, ``*_lr``) > 0, and
    every item of a list of them; a count (an int; an epoch number, ``*_epoch``, may be 0) >= 1."""
    if (name == "lr" or name.startswith("lr_") or name.endswith("_lr")) and float in _numbers(hint, lists=True):
        return Range(0, low_open=True)
    if _numbers(hint) == {int} and not name.endswith("_epoch"):
        return Range(1)
    return None


def method_problems(method: str, schema: type, values) -> list[str]:
    """``problems`` of a method's params (``schema``, its params dataclass), each naming the method."""
    data = {k: v for k, v in plain(values).items() if k != "name"}
    return problems(schema, data, "method", where=f" (method {method})", implied=method_range)


# ------------------------------------------------------------------------------------------------- helpers
def plain(values) -> dict:
    """A config as plain data, choices as their strings."""
    if OmegaConf.is_config(values):
        return OmegaConf.to_container(values, resolve=True, enum_to_str=True)
    return dict(values)


def show(v) -> str:
    """A value as the user would write it in an override."""
    if isinstance(v, enum.Enum):
        return repr(v.value)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(show(x) for x in v) + "]"
    return repr(v)


@functools.cache
def _hints(schema: type) -> dict:
    return typing.get_type_hints(schema)


def _example(f: dataclasses.Field, rule: Range | None):
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None or default == "???":  # omegaconf.MISSING
        return rule.example if rule else None
    return default


def _members(hint) -> tuple:
    """The types a hint admits (the members of a union, else the hint itself)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _numbers(hint, lists: bool = False) -> set:
    """The number types (int, float) a hint admits, looking inside unions (and, with ``lists``, list items)."""
    out = set()
    for m in _members(hint):
        if lists and typing.get_origin(m) in (tuple, list):
            out |= set().union(*(_numbers(a) for a in typing.get_args(m) if a is not Ellipsis))
        elif m in (int, float):
            out.add(m)
    return out


def _fixed_length(hint) -> int | None:
    """n for ``tuple[X1, ..., Xn]`` (not ``tuple[X, ...]``), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        return len(args)
    return None


def _noun(hint) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, "values")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
