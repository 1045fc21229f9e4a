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
import typing
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dadf import config
from dadf.data.pipeline import class_count
from dadf.data.stream import resolve_data_mode
from dadf.provenance import config_hash

Compose = Callable[[list[str]], DictConfig]


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


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


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


def _template(cfg: DictConfig, compose: Compose) -> dict:
    """What the cells of one composition (one method and axis values) share, as plain data: groups resolved, paths
    absolute, the OOD set's dataset config embedded, the memory/stream decision taken. Cells differ from it in their
    seed and target class only (``freeze``)."""
    full = OmegaConf.to_container(cfg, resolve=True)
    cell = {k: full[k] for k in ("seed", "method", "dataset", "protocol", "trainer")}
    cell["dataset"]["root"] = _absolute(cell["dataset"]["root"] if cell["dataset"]["root"] is not None else "data")
    sec = cell["protocol"].get("secondary")
    if isinstance(sec, str):
        sec_cfg = compose([f"dataset={sec}"]).dataset
        secondary = OmegaConf.to_container(sec_cfg, resolve=True)
        secondary["root"] = _absolute(secondary["root"] if secondary["root"] is not None else cell["dataset"]["root"])
        secondary["num_classes"] = class_count(OmegaConf.create(secondary), cfg.shards_dir)
        cell["protocol"]["secondary"] = secondary
    # decided here, once: memory or stream, part of the id (a resume never re-decides)
    cell["trainer"]["data"] = resolve_data_mode(OmegaConf.create(cell), cfg.shards_dir,
                                                _trainable(cell["method"]["name"]))
    cell["paths"] = {"runs_dir": _absolute(cfg.runs_dir), "shards_dir": _absolute(cfg.shards_dir)}
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


def _refused_key(error: Exception, keys: set[str]) -> str | None:
    """The config key a Hydra composition error is about, when it is one of ``keys``; None for a value its
    schema's type refuses (the key is there: that is another error)."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ValidationError

    if isinstance(error.__cause__, ValidationError) or isinstance(error, MissingConfigException):
        return None  # MissingConfigException: an unknown option of a group (dataset=foo), not a key
    text = f"{error}\n{error.__cause__ or ''}"
    for key in re.findall(r"'([^'\s]+)'", text) + re.findall(r"full_key: (\S+)", text):
        if key in keys:
            return key
    return None


def adds_to_schema(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` is missing from a schema on its path in ``cfg`` (a dataclass: the method's params, the
    trainer...): ``+key=``/``++key=`` would put it there, where no code reads it. Open dicts (``dataset.params``)
    take new keys."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return False
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema) and part not in {f.name for f in dataclasses.fields(schema)}:
            return True
        node = node.get(part)
    return False


def _set_form(override: str) -> str:
    """``+key=v`` as ``key=v``."""
    return override[1:] if override.startswith("+") and not override.startswith("++") else override


class Composed(typing.NamedTuple):
    cfg: DictConfig | None  # None: another composition error
    dropped: list[tuple[str, str, str]]  # (origin, override, key) of the overrides refused for their key
    error: str | None  # the first line of another composition error (and of its cause)
    set_forms: list[str]  # the overrides given as +key= that set a key the config has


def compose_dropping(compose: Compose, attempt: list[tuple[str, str]]) -> Composed:
    """Compose ``attempt`` ([(override, origin)]); while Hydra refuses an override's key (the method has no such
    option), drop every override of that key and compose again, to find all the keys the method refuses.

    Within a grid ``+key=``, ``++key=`` and ``key=`` mean the same for a schema's key (the method's params...): set
    it where the cell's config has it, refused where it has not. So ``+key=`` on a cell that has the key sets it
    (the user cannot know which cells have it), and ``+``/``++`` that would add a key to a schema is refused like
    ``key=``. Only open dicts (``dataset.params``) take new keys.

    A ``compose`` that puts the user's overrides in front of every composition (tests do, to check this) brings a
    dropped user override back: then the search stops at the first refused key of this method."""
    from hydra.errors import HydraException

    dropped, dropped_keys, set_forms = [], set(), []
    while True:
        keys = {key_of(o) for o, origin in attempt if origin != "method"} | dropped_keys
        try:
            cfg = compose([o for o, _ in attempt])
        except HydraException as e:
            key = _refused_key(e, keys)
            if key is None:
                return Composed(None, dropped, _first_lines(e), set_forms)
            if "An item is already at" in str(e) and any(_set_form(o) != o for o, _ in attempt if key_of(o) == key):
                set_forms += [o for o, _ in attempt if key_of(o) == key and _set_form(o) != o]
                attempt = [(_set_form(o) if key_of(o) == key else o, origin) for o, origin in attempt]
                continue
        else:
            adding = [key_of(o) for o, origin in attempt if o.startswith("+") and origin != "method"]
            key = next((k for k in adding if adds_to_schema(cfg, k)), None)
            if key is None:
                return Composed(cfg, dropped, None, set_forms)
        if key in dropped_keys:
            return Composed(None, dropped, None, set_forms)
        dropped_keys.add(key)
        dropped += [(origin, o, key) for o, origin in attempt if key_of(o) == key]
        attempt = [(o, origin) for o, origin in attempt if key_of(o) != key]


def _first_lines(error: Exception) -> str:
    """The first line of a composition error and of its cause; an unknown dataset gets the choices and the sources
    that read a user's own files."""
    from hydra.errors import MissingConfigException

    if isinstance(error, MissingConfigException) and str(error.missing_cfg_file or "").startswith("dataset/"):
        return unknown_dataset(error.missing_cfg_file.split("/", 1)[1], error.options)
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


def _composition_problems(g: DictConfig, methods: list[str], method_overrides: dict,
                          refused: dict[tuple[str, str, str], list[str]], failed: dict[str, list[str]]) -> list[str]:
    """One message per override the grid's methods refuse (per key for the grid file's own axes and overrides)."""
    problems, grouped = [], {}
    for (origin, override, key), bad in refused.items():
        entry = grouped.setdefault((origin, key) if origin != "user" else (origin, override), ([], []))
        entry[0].append(override)
        entry[1].extend(m for m in bad if m not in entry[1])
    for (origin, _), (overrides, bad) in grouped.items():
        override, key = overrides[0], key_of(overrides[0])
        fits = [m for m in methods if m not in bad]
        names = ", ".join(bad)
        if origin != "user":
            fix = {"grid.axes": f"drop method(s) {names} from grid.methods (an axis applies to every method)",
                   "grid.method_overrides": f"remove it from {origin}"}.get(
                       origin.split(".")[0] + "." + origin.split(".")[1],
                       "move it under grid.method_overrides of the methods it fits")
            problems.append(f"grid {g.name!r}: {', '.join(overrides)} (from {origin}) does not apply to method(s) "
                            f"{names}: they have no key {key!r}; {fix}")
        elif not fits:
            problems.append(f"{override} does not apply to any method of grid {g.name!r} ({names}): none has a key "
                            f"{key!r}; check its spelling")
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


def expand(base: DictConfig, user_overrides: list[str], compose: Compose) -> list[Cell]:
    """All cells of the grid ``base`` (the config composed from ``user_overrides``), in table order.

    A user override of ``method=``, ``protocol.target_class=``, ``seed=`` or of an axis key (``dataset=``) narrows
    the grid to that value instead of being overwritten by the grid's axes (``narrow``); every other user override
    applies to every cell.
    """
    g = base.grid
    n = narrow(g, user_overrides)
    methods, seeds, axes, rest, user_classes = n.methods, n.seeds, n.axes, n.rest, n.classes
    method_overrides = OmegaConf.to_container(g.method_overrides, resolve=True) or {}
    # {axis key: {value: [overrides]}}: settings that go with one axis value (a dataset's own batch size, say).
    # Those of values the user's narrowing left out do not apply; on an axis the user left alone, a value the axis
    # lacks is a slip of the grid file.
    value_overrides = OmegaConf.to_container(g.axis_overrides, resolve=True) if g.get("axis_overrides") else {}
    unknown = [f"{k}.{v}" for k, vs in value_overrides.items() for v in vs
               if k not in axes or (k not in n.replaced and str(v) not in map(str, axes[k]))]
    if unknown:
        raise ValueError(f"grid {g.name!r}: axis_overrides {unknown} name no axis value; the axes are {axes}")
    runs_root = Path(base.runs_dir) / g.name

    cells, group = [], 0
    refused: dict[tuple[str, str, str], list[str]] = {}  # (origin, override, key) -> methods it does not apply to
    failed: dict[str, list[str]] = {}  # other composition errors -> methods
    for method in methods:
        for combo in itertools.product(*axes.values()) if axes else [()]:
            axis_values = dict(zip(axes.keys(), combo))
            attempt = [(f"method={method}", "method")]
            attempt += [(o, f"grid.method_overrides.{method}") for o in method_overrides.get(method, [])]
            attempt += [(f"{k}={v}", f"grid.axes.{k}") for k, v in axis_values.items()]
            attempt += [(o, f"grid.axis_overrides.{k}.{v}") for k, v in axis_values.items()
                        for o in value_overrides.get(k, {}).get(str(v), [])]
            attempt += [(o, "user") for o in rest]
            cfg, dropped, error, _ = compose_dropping(compose, attempt)
            for entry in dropped:
                refused.setdefault(entry, [])
                if method not in refused[entry]:
                    refused[entry].append(method)
            if error is not None:
                failed.setdefault(error, [])
                if method not in failed[error]:
                    failed[error].append(method)
            if dropped or error is not None:
                continue
            with open_dict(cfg.dataset):  # from the data (or what its source declares), frozen with the cell
                cfg.dataset.num_classes = class_count(cfg.dataset, cfg.shards_dir)
            classes = user_classes or _class_list(g.classes, cfg.dataset.num_classes, cfg.protocol)
            template, label, group, shared = _template(cfg, compose), _label(cfg.method), group + 1, {}
            for cls, seed in itertools.product(classes, seeds):
                frozen = freeze(template, g.name, axis_values, int(seed), cls, label, shared)
                cells.append(Cell(frozen["cell"]["id"], frozen, runs_root / frozen["cell"]["id"], group))
    if refused or failed:
        raise GridError(_composition_problems(g, methods, method_overrides, refused, failed))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i, n in collections.Counter(ids).items() if n > 1})
        raise ValueError(f"grid {g.name!r} expands to the same cell twice: {dup}; check its axes for repeated values")
    return cells
