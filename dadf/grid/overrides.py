"""Command-line and grid overrides, judged against the configs' schemas instead of by trial compositions.

An override either chooses a file of a config group (``dataset=mnist``: Hydra composes it) or sets a value
(``trainer.steps=300``). Hydra composes each distinct set of group choices once (``Compositions``); values are set
on a copy of that composition in the order given, as Hydra sets them after composing (``apply``). Whether a value
override applies to a cell's config is read from the config itself (``refusal``): its nodes carry their schema (the
method's params dataclass, the trainer's...), and an open dict (``dataset.params``) takes new keys.

Within a grid ``+key=``, ``++key=`` and ``key=`` mean the same for a schema's key: set it where the cell's config has
it, refused where it has not (the user cannot know which cells have it). Only open dicts take new keys, with ``+`` or
``++``. ``grid.axes.<key>=[values]`` makes ``<key>`` (dots and all) an axis.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# The config groups: ``<group>=<option>`` chooses a file (or a schema's stored option); anything else sets a value.
GROUPS = ("method", "dataset", "protocol", "trainer", "launcher", "grid")
# Group choices whose node a composition can take from another composition (a dataset or protocol axis): each value
# is composed once, not once per method.
GRAFTED = ("dataset", "protocol")

Compose = Callable[[list[str]], DictConfig]


class OverrideError(ValueError):
    """An override that cannot be read or applied: the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class Override:
    text: str  # as given
    key: str  # a dotted key, or the group of a group choice
    kind: str  # set | add (+) | force (++) | delete (~)
    value: Any  # parsed as Hydra parses it (10 -> int, [a, b] -> list, null -> None)

    @property
    def group(self) -> bool:
        """A choice of a config group's option (``dataset=mnist``), which Hydra composes."""
        return self.key in GROUPS or self.key.startswith("hydra/")

    @property
    def hydra(self) -> bool:
        """Hydra's own settings (``hydra.searchpath``): they belong to every composition."""
        return self.key.startswith("hydra.") or self.key.startswith("hydra/")


def parse(texts: Iterable[str]) -> list[Override]:
    """Hydra's override grammar, parsed by Hydra's parser; a sweep (``a=1,2``) is refused: grids are the sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    texts = list(texts)
    try:
        parsed = OverridesParser.create().parse_overrides(texts)
    except OverrideParseException as e:
        raise OverrideError(str(e).strip().splitlines()[0]) from None
    out = []
    for text, o in zip(texts, parsed):
        if o.is_sweep_override():
            raise OverrideError(f"{text}: a sweep is a grid axis here: write 'grid.axes={{{o.key_or_group}: [...]}}'")
        if o.package is not None:
            raise OverrideError(f"{text}: package overrides (group@package=option) are not supported")
        kind = "delete" if o.is_delete() else "add" if o.is_add() else "force" if o.is_force_add() else "set"
        out.append(Override(text, o.key_or_group, kind, o.value()))
    return out


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# ------------------------------------------------------------------------------------------- judging and applying
def _parent(cfg: DictConfig, key: str) -> tuple[DictConfig | None, str, list[str]]:
    """(the node that holds the key's last part, that part, the parts that do not exist yet above it); None when a
    part on the way is a value."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if part not in node.keys():
            return node, parts[-1], parts[i:-1]
        child = node._get_node(part)
        if not isinstance(child, DictConfig):
            return None, parts[-1], []
        node = child
    return node, parts[-1], []


def _schema(node: DictConfig) -> type | None:
    t = OmegaConf.get_type(node)
    return t if dataclasses.is_dataclass(t) else None


def refusal(cfg: DictConfig, o: Override) -> str | None:
    """None when the value override ``o`` applies to ``cfg``; else why not, in a few words. A schema (a dataclass)
    takes only its own fields; an open dict takes new keys with ``+``/``++``."""
    if o.key.startswith("grid.axes."):
        return None
    node, leaf, missing = _parent(cfg, o.key)
    if node is None:
        return "a value, not a config node, is on its path"
    if missing or leaf not in node.keys():
        if _schema(node) is not None:
            return "not a config key"
        if o.kind in ("add", "force"):
            return None
        return "not set in this config"
    return None


def apply(cfg: DictConfig, o: Override) -> None:
    """Set ``o`` on ``cfg`` as Hydra sets a value override after composing (merging a dict into a dict), with the
    grid's reading of ``+``: it sets a key the config has. Call ``refusal`` first. A value the key's type refuses
    raises OverrideError, naming the override."""
    try:
        if o.key.startswith("grid.axes."):  # the rest of the key is the axis' key, dots and all
            with open_dict(cfg):
                cfg.grid.axes[o.key[len("grid.axes."):]] = o.value
        elif o.kind == "delete":
            node, leaf, _ = _parent(cfg, o.key)
            with open_dict(node):
                del node[leaf]
        else:  # refusal judged the key; a dict given merges into the dict there (grid.axes={...} adds axes)
            with open_dict(cfg):
                OmegaConf.update(cfg, o.key, o.value, merge=True, force_add=o.kind != "set")
    except OmegaConfBaseException as e:
        raise OverrideError(f"{o.text}: {str(e).strip().splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------- compositions
class Compositions:
    """Hydra's compositions of a launch, each set of group choices composed once and handed out as copies.

    ``config(choices)`` composes the method's choice with the others; a dataset or protocol choice that differs from
    the launch's own is composed once with the launch's other choices and its node put into the method's
    composition, when that choice changes that node only (a file with ``@package _global_`` changes more: then the
    whole set is composed)."""

    def __init__(self, compose: Compose, choices: dict[str, str], base: DictConfig | None = None,
                 hydra: Sequence[str] = ()):
        self._compose, self._hydra = compose, list(hydra)
        self.choices = dict(choices)  # the launch's own choices (those given; the others are the defaults)
        self._cache: dict[tuple, DictConfig] = {}
        self._grafts: dict[tuple[str, str], DictConfig | None] = {}
        self._graft_sources: set[tuple] = set()  # compositions whose nodes were grafted: never handed out
        self._uses: dict[tuple, int] = {}  # config calls still to come, per composition (``expect``)
        self.count = 0  # compositions made (a launch makes one per method, plus one per extra dataset)
        if base is not None:
            self._cache[self._key(self.choices)] = base

    @staticmethod
    def _key(choices: dict[str, str]) -> tuple:
        return tuple(sorted(choices.items()))

    def _composed(self, choices: dict[str, str]) -> DictConfig:
        key = self._key(choices)
        if key not in self._cache:
            self.count += 1
            self._cache[key] = self._compose([*self._hydra, *(f"{g}={v}" for g, v in choices.items())])
        return self._cache[key]

    def base(self) -> DictConfig:
        return self._composed(self.choices)

    @property
    def searchpath(self) -> list[str]:
        """The user's config folders (``hydra.searchpath`` entries) every composition is made with."""
        return searchpath(parse(self._hydra))

    def alone(self, overrides: list[str]) -> DictConfig:
        """The composition of ``overrides`` alone (with Hydra's settings), none of the launch's choices."""
        key = ("alone", *overrides)
        if key not in self._cache:
            self.count += 1
            self._cache[key] = self._compose([*self._hydra, *overrides])
        return self._cache[key]

    def _split(self, choices: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(the choices composed as they are, the dataset/protocol choices whose node is grafted on)."""
        wanted = {**self.choices, **choices}
        own = {g: v for g, v in wanted.items() if g not in GRAFTED or self.choices.get(g) == v}
        return own, {g: v for g, v in wanted.items() if g not in own}

    def expect(self, requests: list[dict[str, str]]) -> None:
        """The ``config`` calls to come: the last one of each composition gets it without a copy (deep-copying a
        composition costs as much as a tenth of composing it)."""
        for choices in requests:
            key = self._key(self._split(choices)[0])
            self._uses[key] = self._uses.get(key, 0) + 1

    def config(self, choices: dict[str, str]) -> DictConfig:
        """A composition of ``choices`` (group -> option) of the caller's own, ready for value overrides."""
        own, grafts = self._split(choices)
        nodes = {g: self._graft(g, v) for g, v in grafts.items()}
        if any(n is None for n in nodes.values()):
            return copy.deepcopy(self._composed({**own, **grafts}))
        cfg = self._composed(own)
        key = self._key(own)
        self._uses[key] = self._uses.get(key, 1) - 1
        if self._uses[key] > 0 or key == self._key(self.choices) or key in self._graft_sources:
            cfg = copy.deepcopy(cfg)
        else:  # its last use: nothing reads it again
            del self._cache[key]
        for group, node in nodes.items():
            with open_dict(cfg):
                cfg[group] = copy.deepcopy(node)
        return cfg

    def _graft(self, group: str, option: str) -> DictConfig | None:
        """The node of ``group=option`` composed with the launch's other choices, or None when that choice changes
        more of the config than its node."""
        if (group, option) not in self._grafts:
            self._graft_sources.add(self._key({**self.choices, group: option}))
            composed = self._composed({**self.choices, group: option})
            base, other = (OmegaConf.to_container(c) for c in (self.base(), composed))
            same = {k: v for k, v in base.items() if k != group} == {k: v for k, v in other.items() if k != group}
            self._grafts[(group, option)] = composed[group] if same else None
        return self._grafts[(group, option)]


# ------------------------------------------------------------------------------------------- messages
def unknown_key(key: str, cfg: DictConfig, search: Sequence[str] = (),
                other_methods: Callable[[str], list[str]] | None = None) -> str:
    """Why ``key`` is no key of ``cfg``, with the keys there are and the override that would work: none can add a
    key to a schema (no code would read it); an open dict (``dataset.params``) takes ``+key=`` (a new key) or
    ``++key=`` (set where a config has it, added where not)."""
    parts = key.split(".")
    node, depth = cfg, 0
    while depth < len(parts) - 1 and isinstance(node, DictConfig) and parts[depth] in node.keys() \
            and isinstance(node._get_node(parts[depth]), DictConfig):
        node, depth = node._get_node(parts[depth]), depth + 1
    parent = ".".join(parts[:depth]) or "<root>"
    keys = ", ".join(sorted(str(k) for k in node.keys())) or "(none)"
    if _schema(node) is not None or depth == 0:
        others = other_methods(key) if other_methods else []
        also = f" It is a key of method(s) {', '.join(others)}: run one with method=<name>." if others else ""
        return f"'{key}' is not a config key. Valid keys under '{parent}': {keys}.{also}"
    having = files_having(key, search)
    if having:
        return (f"'{key}' is not set in this config ('{parent}' has: {keys}); some {parts[0]} files set it "
                f"({', '.join(having)}): write ++{key}=... (it sets the key where a config has it, adds it elsewhere)")
    return f"'{key}' is not set in this config ('{parent}' has: {keys}); to add it, write +{key}=..."


def files_having(key: str, search: Sequence[str]) -> list[str]:
    """The YAML files of the key's group (dataset/<name>.yaml in dadf's configs or a folder of ``search``, the
    entries of hydra.searchpath) that set the key."""
    from dadf import config
    from dadf.data.datasets import config_folders

    group, _, rest = key.partition(".")
    if not rest:
        return []
    parent_key, _, leaf = rest.rpartition(".")
    found = []
    for folder in [Path(config.CONFIG_DIR), *config_folders(search)]:
        for f in sorted((Path(folder) / group).glob("*.yaml")):
            conf = OmegaConf.load(f)
            parent = OmegaConf.select(conf, parent_key, throw_on_missing=False) if parent_key else conf
            if isinstance(parent, DictConfig) and leaf in parent.keys() and f.stem not in found:
                found.append(f.stem)
    return found


def methods_having(key: str) -> list[str]:
    """For a method key (``method.nu``): the registered methods whose params have it."""
    from dadf import config

    if not key.startswith("method.") or key.count(".") != 1:
        return []
    leaf = key.split(".")[1]
    return [m for m in config.options("method")
            if dataclasses.is_dataclass(s := config.schema("method", m)) and leaf in {f.name for f in
                                                                                     dataclasses.fields(s)}]


def searchpath(overrides: Sequence[Override]) -> list[str]:
    """The entries of ``hydra.searchpath=[file:///my/configs, ...]`` among ``overrides``, as given."""
    entries = []
    for o in overrides:
        if o.key == "hydra.searchpath":
            entries += [str(v) for v in (o.value if isinstance(o.value, (list, ListConfig)) else [o.value])]
    return entries
