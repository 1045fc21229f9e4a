"""A grid YAML expands into cells: method x axis values x class x seed, each a full frozen config.

``compose(overrides) -> DictConfig`` is Hydra's compose (launch_grid.py passes it in; tests use the compose API),
so every cell is exactly what ``python jobs/launch_grid.py <overrides>`` would have composed.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import pickle
import re
from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from dadf import config
from dadf.data.datasets import class_count
from dadf.data.placement import resolve_data_mode
from dadf.grid.overrides import (
    Compose,
    Compositions,
    Override,
    OverrideError,
    apply,
    key_of,
    methods_having,
    parse,
    refusal,
    unknown_key,
)
from dadf.provenance import config_hash


class Cell:
    """One cell of a grid: its id, its folder and its frozen config. Expansion makes it from plain data (thousands of
    OmegaConf configs cost seconds); ``cfg`` wraps that data as the config a cell runs with on first use."""

    __slots__ = ("id", "dir", "group", "_data", "_cfg")

    def __init__(self, id: str, cfg: DictConfig | dict, dir: Path, group: int | None = None):  # noqa: A002
        # group: cells of one composition (one method and axis values) share it; they differ in seed and class only
        self.id, self.dir, self.group = id, Path(dir), group
        self._data, self._cfg = (None, cfg) if isinstance(cfg, DictConfig) else (cfg, None)

    @property
    def data(self) -> dict:
        """The frozen config as plain data (what cell.yaml holds)."""
        if self._data is None:
            self._data = OmegaConf.to_container(self._cfg, resolve=True)
        return self._data

    @property
    def cfg(self) -> DictConfig:
        if self._cfg is None:
            self._cfg = OmegaConf.create(self._data)
        return self._cfg

    def __repr__(self) -> str:
        return f"Cell({self.id!r})"


def strip_key(overrides: list[str], key: str) -> tuple[list[str], list[str]]:
    """(overrides without ``key=...``, the values given for key)."""
    kept, values = [], []
    for o in overrides:
        if key_of(o) == key:
            values.append(o.split("=", 1)[1])
        else:
            kept.append(o)
    return kept, values


def identity(cfg: DictConfig | dict, shared: dict | None = None) -> dict:
    """The part of a cell config that determines its result: the schemas (dadf/config.py) say which fields only
    say where things are or how they are watched. ``shared``: the method's, dataset's and trainer's part, when
    the caller knows them already (every cell of one composition has the same)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    ident = {"seed": data["seed"]}
    for group in ("method", "dataset", "protocol", "trainer"):
        ident[group] = shared[group] if shared and group in shared else config.hashed(group, data[group])
    sec = ident["protocol"].get("secondary")
    if isinstance(sec, dict):
        ident["protocol"]["secondary"] = config.hashed("dataset", sec)
    return ident


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", str(value))


def _label(method: DictConfig) -> str:
    """The method's name in ids and tables (PyOD's detectors: pyod_lof); methods are imported once composing ran."""
    from dadf.methods import label

    return label(method)


def make_cell_id(cfg: DictConfig | dict, axes: dict, label: str | None = None, digest: str | None = None) -> str:
    """``<method>-<dataset>-<protocol>[-<ood set>][-c<class>][-<axis values>]-s<seed>-<hash of the identity>``
    (``digest``: that hash, when the caller has it)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    protocol = data["protocol"]
    parts = [label or _label(data["method"]), data["dataset"]["name"], protocol["name"]]
    if protocol.get("secondary") is not None:
        parts.append(protocol["secondary"]["name"])
    if protocol.get("target_class") is not None:
        parts.append(f"c{protocol['target_class']}")
    parts += [f"{_slug(k.split('.')[-1])}{_slug(v)}" for k, v in axes.items() if k != "dataset"]
    parts.append(f"s{data['seed']}")
    return "-".join(parts) + "-" + (digest or config_hash(identity(data)))[:6]


def _absolute(path) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _trainable(method: str) -> bool:
    from dadf.methods import get_method

    return get_method(method).trainable


def _template(cfg: DictConfig, comps: Compositions) -> dict:
    """What the cells of one composition (one method and axis values) share, as plain data: groups resolved, paths
    absolute, the OOD set's dataset config embedded, the memory/stream decision taken. Cells differ from it in their
    seed and target class only (``freeze``)."""
    full = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cell = {k: full[k] for k in ("seed", "method", "dataset", "protocol", "trainer")}
    cell["dataset"]["root"] = _absolute(cell["dataset"]["root"] if cell["dataset"]["root"] is not None else "data")
    sec = cell["protocol"].get("secondary")
    if isinstance(sec, str):
        sec_cfg = comps.alone([f"dataset={sec}"]).dataset  # the OOD set's file as it reads, no grid around it
        secondary = OmegaConf.to_container(sec_cfg, resolve=True)
        secondary["root"] = _absolute(secondary["root"] if secondary["root"] is not None else cell["dataset"]["root"])
        secondary["num_classes"] = class_count(OmegaConf.create(secondary), cfg.shards_dir, comps.searchpath)
        cell["protocol"]["secondary"] = secondary
    # decided here, once: memory or stream, part of the id (a resume never re-decides)
    cell["trainer"]["data"] = resolve_data_mode(OmegaConf.create(cell), cfg.shards_dir,
                                                _trainable(cell["method"]["name"]))
    cell["paths"] = {"runs_dir": _absolute(cfg.runs_dir), "shards_dir": _absolute(cfg.shards_dir)}
    if comps.searchpath:  # the user's config folders: a cell's messages name the files of its datasets
        cell["paths"]["searchpath"] = list(comps.searchpath)
    return cell


def freeze(template: dict, grid_name: str, axes: dict, seed: int, target_class: int | None, label: str,
           shared: dict | None = None) -> dict:
    """One cell's own config (plain data, as cell.yaml holds it): the template with its seed and class.
    ``shared``: ``identity``'s parts that the template's cells share (filled on first use).

    The blocks no cell changes (method, dataset, trainer, paths) are the template's own objects, shared by its
    cells and never changed in place: writing cell.yaml renders each such block once (``store.write_cell_config``).
    The protocol, which holds the class, is each cell's own copy."""
    cell = dict(template)
    cell["protocol"] = pickle.loads(pickle.dumps(template["protocol"], pickle.HIGHEST_PROTOCOL))  # a fast deep copy
    cell["seed"] = seed
    if target_class is not None:
        cell["protocol"]["target_class"] = target_class
    protocol = cell["protocol"]
    if shared is not None and not shared:
        shared.update({g: config.hashed(g, template[g]) for g in ("method", "dataset", "trainer")})
    digest = config_hash(identity(cell, shared), 64)
    cell["cell"] = {"grid": grid_name, "id": make_cell_id(cell, axes, label, digest), "method": label,
                    "dataset": cell["dataset"]["name"], "protocol": protocol["name"],
                    "target_class": protocol.get("target_class"), "seed": int(seed),
                    "secondary": protocol["secondary"]["name"] if protocol.get("secondary") else None,
                    "axes": dict(axes),
                    # the full hash of what determines the result, frozen with the cell (the id keeps 6 digits)
                    "config_hash": digest[:8]}
    return cell


class GridError(ValueError):
    """A grid that cannot be expanded as asked: ``problems`` holds one message per problem (str() joins them)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def first_lines(error: Exception) -> str:
    """The first line of a composition error and of its cause; an unknown dataset gets the choices and the sources
    that read a user's own files."""
    from hydra.errors import MissingConfigException

    missing = str(getattr(error, "missing_cfg_file", None) or "")
    if isinstance(error, MissingConfigException) and missing.startswith("dataset/"):
        return unknown_dataset(missing.split("/", 1)[1], error.options)
    if isinstance(error, MissingConfigException) and "/" in missing and error.options:
        group, option = missing.split("/", 1)
        return f"{group}={option} names no {group} config; the options: {', '.join(error.options)}"
    lines = [str(x).strip().splitlines()[0] for x in (error, error.__cause__) if x is not None and str(x).strip()]
    return ": ".join(lines) or type(error).__name__


# The generic sources, should dadf.data.sources not list them (it registers them with a line each).
_GENERIC_SOURCES = ("odds", "csv_table", "idx", "image_folder", "image_arrays")


def unknown_dataset(value: str, files) -> str:
    """The message for ``dataset=<value>`` that names no dataset file: the files there are, and the generic sources,
    which read a user's own files from ``dataset=<source>`` and its params, without writing a file."""
    try:
        from dadf.data.sources import generic_sources

        generic = [f"{name} ({line})" for name, line in generic_sources().items()] or list(_GENERIC_SOURCES)
    except ImportError:
        generic = list(_GENERIC_SOURCES)
    return (f"dataset={value} is not a dataset file (configs/dataset/, or a folder of yours in hydra.searchpath);"
            f" the files: {', '.join(files or [])}. Your own data needs no file: a generic source reads it, "
            f"dataset=<source> with its params: {'; '.join(generic)}. docs/data.md shows each, with templates")


def _composition_problems(g: DictConfig, methods: list[str], method_overrides: dict, refused: dict,
                          failed: dict[str, list[str]], unknown: Callable[[str, str], str]) -> list[str]:
    """One message per override the grid's methods refuse (per key for the grid file's own axes and overrides).
    ``refused``: {(origin, override, key): methods refusing it}; ``unknown(override, key)``: why no method takes it."""
    problems, grouped = [], {}
    for (origin, override, key), bad in refused.items():
        entry = grouped.setdefault((origin, key) if origin != "user" else (origin, override), ([], []))
        entry[0].append(override)
        entry[1].extend(m for m in bad if m not in entry[1])
    for (origin, _), (overrides, bad) in grouped.items():
        override, key = overrides[0], key_of(overrides[0])
        fits = [m for m in methods if m not in bad]
        names = ", ".join(bad)
        if not fits:  # no method has the key: the keys there are, and the form that would add it
            problems.append(f"{override}" + (f" (from {origin})" if origin != "user" else "")
                            + f": {unknown(override, key)}")
        elif origin != "user":
            fix = {"grid.axes": f"drop method(s) {names} from grid.methods (an axis applies to every method)",
                   "grid.method_overrides": f"remove it from {origin}"}.get(
                       origin.split(".")[0] + "." + origin.split(".")[1],
                       "move it under grid.method_overrides of the methods it fits")
            problems.append(f"grid {g.name!r}: {', '.join(overrides)} (from {origin}) does not apply to method(s) "
                            f"{names}: they have no key {key!r}; {fix}")
        else:
            value = ", ".join(f'"{o}"' for o in [*method_overrides.get(fits[0], []), override])
            problems.append(
                f"{override} does not apply to method(s) {names} of grid {g.name!r} (they have no key {key!r}): "
                f"narrow the grid with method={fits[0]}" + "".join(f" (or method={m})" for m in fits[1:])
                + f", or give it to the methods it fits, e.g. '+grid.method_overrides.{fits[0]}=[{value}]'")
    for msg, ms in failed.items():  # one that every method meets (an unknown dataset) is the grid's
        problems.append(f"grid {g.name!r}: {msg}" if ms == list(methods)
                        else f"method(s) {', '.join(ms)} of grid {g.name!r}: {msg}")
    return problems


def _class_list(spec, num_classes: int, protocol: DictConfig) -> list[int | None]:
    # keys(), not `in`: `in` is False while target_class is still ??? (required, set below for each class)
    if "target_class" not in protocol.keys() or spec is None:
        return [None]
    if spec == "all":
        return list(range(int(num_classes)))
    return [int(c) for c in spec]


@dataclasses.dataclass(frozen=True)
class Narrowed:
    """What of a grid a launch runs: the user's overrides of ``method``, ``protocol.target_class``, ``seed`` and of
    any axis key pick those values of the grid; ``rest`` are the user's other overrides, which set every cell."""

    methods: list[str]
    axes: dict[str, list]
    classes: list[int]  # the user's target classes; [] = the grid's
    seeds: list[int]
    rest: list[str]
    replaced: frozenset[str]  # axes the user narrowed or replaced: axis_overrides of values left out do not apply


def _axis_value(given: str, values: list):
    """A value given on the command line as the axis holds it (``10`` for ``protocol.p=10``), so a narrowed cell
    is the very cell of the whole grid; a value the axis lacks stays as given."""
    return next((v for v in values if str(v) == given), given)


def narrow(g: DictConfig, user_overrides: list[str]) -> Narrowed:
    """The grid ``g`` narrowed by the user's overrides. ``dataset=arrhythmia`` on a grid with a dataset axis runs
    that axis value only; a value the axis lacks replaces the axis (``dataset=odds dataset.params.name=cardio`` runs
    the grid's methods on that one table)."""
    rest, methods = strip_key(list(user_overrides), "method")
    rest, classes = strip_key(rest, "protocol.target_class")
    rest, seeds = strip_key(rest, "seed")
    axes = OmegaConf.to_container(g.axes, resolve=True) or {}
    replaced = {k for k in axes if any(key_of(o) in ("grid.axes", f"grid.axes.{k}") for o in user_overrides)}
    for key in list(axes):
        rest, values = strip_key(rest, key)
        if values:
            axes[key] = [_axis_value(v, axes[key]) for v in values]
            replaced.add(key)
    return Narrowed(methods or list(g.methods), axes, [int(c) for c in classes],
                    [int(s) for s in seeds] or [int(s) for s in g.seeds], rest, frozenset(replaced))


@dataclasses.dataclass
class Composition:
    """One method with one value per axis: its config, every override applied. Its cells differ in class and seed."""

    method: str
    axes: dict
    cfg: DictConfig


@dataclasses.dataclass
class Composed:
    """A grid's compositions, checked: every override applies where it should. ``cells`` makes its cells."""

    grid: DictConfig
    runs_dir: str
    narrowed: Narrowed
    compositions: list[Composition]
    source: Compositions  # the Hydra compositions they came from (the OOD sets are composed there too)

    @property
    def datasets(self) -> list[DictConfig]:
        """The datasets the cells train on, one config each (the first composition that has it)."""
        seen: dict[str, DictConfig] = {}
        for c in self.compositions:
            seen.setdefault(_dataset_key(c.cfg.dataset), c.cfg.dataset)
        return list(seen.values())


def _dataset_key(dcfg: DictConfig) -> str:
    params = OmegaConf.to_container(dcfg.params, resolve=False)
    return f"{dcfg.source}:{dcfg._get_node('name')._value()}:{sorted(params.items())}"


_FROZEN = ("seed", "method", "dataset", "protocol", "trainer")  # what a cell's config holds of the composition


def compose_grid(base: DictConfig, user_overrides: list[str], compose: Compose | Compositions) -> Composed:
    """The grid ``base`` (the config composed from ``user_overrides``) as its compositions: one per method and
    combination of axis values, each override judged against that composition's schemas. Raises GridError with
    one line per problem; reads no data.

    ``compose``: Hydra's compose, or the launch's ``Compositions``, which holds the launch's own composition."""
    g = base.grid
    n = narrow(g, user_overrides)
    methods, axes, rest = n.methods, n.axes, n.rest
    parsed_rest = parse(rest)
    hydra = [o.text for o in parsed_rest if o.hydra]
    comps = compose if isinstance(compose, Compositions) else Compositions(
        compose, {o.key: str(o.value) for o in parsed_rest if o.group and not o.hydra}, hydra=hydra)
    method_overrides = OmegaConf.to_container(g.method_overrides, resolve=True) or {}
    # {axis key: {value: [overrides]}}: settings that go with one axis value (a dataset's own batch size, say).
    # Those of values the user's narrowing left out do not apply; on an axis the user left alone, a value the axis
    # lacks is a slip of the grid file.
    value_overrides = OmegaConf.to_container(g.axis_overrides, resolve=True) if g.get("axis_overrides") else {}
    unknown = [f"{k}.{v}" for k, vs in value_overrides.items() for v in vs
               if k not in axes or (k not in n.replaced and str(v) not in map(str, axes[k]))]
    if unknown:
        raise GridError([f"grid {g.name!r}: axis_overrides {unknown} name no axis value; the axes are {axes}"])

    combos = list(itertools.product(*axes.values())) if axes else [()]
    plans = []  # (method, axis values, its overrides or why they do not parse)
    for method in methods:
        for combo in combos:
            axis_values = dict(zip(axes.keys(), combo))
            try:
                plans.append((method, axis_values, _given(method, axis_values, method_overrides, value_overrides,
                                                          parsed_rest)))
            except OverrideError as e:
                plans.append((method, axis_values, e))
    comps.expect([_choices(given) for _, _, given in plans if not isinstance(given, OverrideError)])
    compositions = []
    refused: dict[tuple[str, str, str], list[str]] = {}  # (origin, override, key) -> methods it does not apply to
    refusing: dict[str, DictConfig] = {}  # key -> a config that refused it (to list the keys there are)
    failed: dict[str, list[str]] = {}  # other errors -> methods
    for method, axis_values, given in plans:
        if isinstance(given, OverrideError):
            _note(failed, str(given), method)
            continue
        try:
            cfg = comps.config(_choices(given))
        except HydraException as e:
            _note(failed, first_lines(e), method)
            continue
        bad = False
        for o, origin in given:
            if o.group:
                continue
            if refusal(cfg, o) is not None:
                _note(refused, (origin, o.text, o.key), method)
                refusing.setdefault(o.key, cfg)
                bad = True
                continue
            try:
                apply(cfg, o)
            except OverrideError as e:
                _note(failed, str(e), method)
                bad = True
        for key in _missing(cfg, _FROZEN):  # a required value (???) no override or axis set
            if key != "protocol.target_class":  # classes are an axis of their own
                _note(failed, f"{key} is required and not set (??? in its {key.split('.')[0]} config): set it "
                              f"with {key}=<value>, or run one cell per value with grid.axes.{key}=[<values>]",
                      method)
                bad = True
        if not bad:
            compositions.append(Composition(method, axis_values, cfg))
    if refused or failed:
        def why(override: str, key: str) -> str:
            return unknown_key(key, refusing[key], comps.searchpath, methods_having)

        raise GridError(_composition_problems(g, methods, method_overrides, refused, failed, why))
    return Composed(g, str(base.runs_dir), n, compositions, comps)


def _missing(node: DictConfig, keys, prefix: str = ""):
    """The keys under ``keys`` of ``node`` whose value is required and not set (``???``), interpolations unread."""
    for key in keys:
        child = node._get_node(key) if key in node.keys() else None
        if child is None:
            continue
        if child._is_missing():
            yield f"{prefix}{key}"
        elif isinstance(child, DictConfig):
            yield from _missing(child, list(child.keys()), f"{prefix}{key}.")


def _given(method: str, axis_values: dict, method_overrides: dict, value_overrides: dict,
           user: list[Override]) -> list[tuple[Override, str]]:
    """The overrides of one method and combination of axis values, in the order they apply, each with where it
    comes from: the method, the grid's method_overrides, the axes, the axes' axis_overrides, the user."""
    attempt = [(f"method={method}", "method")]
    attempt += [(o, f"grid.method_overrides.{method}") for o in method_overrides.get(method, [])]
    attempt += [(f"{k}={v}", f"grid.axes.{k}") for k, v in axis_values.items()]
    attempt += [(o, f"grid.axis_overrides.{k}.{v}") for k, v in axis_values.items()
                for o in value_overrides.get(k, {}).get(str(v), [])]
    return [(o, origin) for text, origin in attempt for o in parse([text])] + [(o, "user") for o in user
                                                                                if not o.hydra]


def _choices(given: list[tuple[Override, str]]) -> dict[str, str]:
    return {o.key: str(o.value) for o, _ in given if o.group}


def _note(problems: dict, problem, method: str) -> None:
    """Record that ``method`` meets ``problem`` (each method once)."""
    methods = problems.setdefault(problem, [])
    if method not in methods:
        methods.append(method)


def cells_of(composed: Composed) -> list[Cell]:
    """The cells of a checked grid, in table order: each composition's classes x seeds, frozen. Needs each
    dataset's number of classes: from what its source declares, else from its shards (built before)."""
    g, n = composed.grid, composed.narrowed
    runs_root = Path(composed.runs_dir) / g.name
    cells = []
    for group, comp in enumerate(composed.compositions, 1):
        cfg = comp.cfg
        with open_dict(cfg.dataset):  # from the data (or what its source declares), frozen with the cell
            cfg.dataset.num_classes = class_count(cfg.dataset, cfg.shards_dir, composed.source.searchpath)
        classes = n.classes or _class_list(g.classes, cfg.dataset.num_classes, cfg.protocol)
        template, label, shared = _template(cfg, composed.source), _label(cfg.method), {}
        for cls, seed in itertools.product(classes, n.seeds):
            frozen = freeze(template, g.name, comp.axes, int(seed), cls, label, shared)
            cells.append(Cell(frozen["cell"]["id"], frozen, runs_root / frozen["cell"]["id"], group))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i, k in collections.Counter(ids).items() if k > 1})
        raise GridError([f"grid {g.name!r} expands to the same cell twice: {dup}; check its axes for repeated values"])
    return cells


def expand(base: DictConfig, user_overrides: list[str], compose: Compose | Compositions) -> list[Cell]:
    """All cells of the grid ``base`` (the config composed from ``user_overrides``), in table order.

    A user override of ``method=``, ``protocol.target_class=``, ``seed=`` or of an axis key (``dataset=``) narrows
    the grid to that value instead of being overwritten by the grid's axes (``narrow``); every other user override
    applies to every cell.
    """
    return cells_of(compose_grid(base, user_overrides, compose))
