"""A grid YAML expands into cells: method x axis values x class x seed, each a full frozen config.

``compose(overrides) -> DictConfig`` is Hydra's compose (launch_grid.py passes it in; tests use the compose API),
so every cell is exactly what ``python jobs/launch_grid.py <overrides>`` would have composed.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict

from dadf.provenance import config_hash

Compose = Callable[[list[str]], DictConfig]

# Keys that say where things are or how they are watched, not what is computed: kept out of the cell's identity.
_UNHASHED = {
    "dataset": ("root", "download"),
    "trainer": ("progress", "num_threads", "log_every", "device", "sync_every", "data_on_device"),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    id: str
    cfg: DictConfig
    dir: Path


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _strip(overrides: list[str], key: str) -> tuple[list[str], list[str]]:
    """(overrides without ``key=...``, the values given for key)."""
    kept, values = [], []
    for o in overrides:
        if _key_of(o) == key:
            values.append(o.split("=", 1)[1])
        else:
            kept.append(o)
    return kept, values


def identity(cfg: DictConfig) -> dict:
    """The part of a cell config that determines its result."""
    data = OmegaConf.to_container(cfg, resolve=True)
    ident = {k: data[k] for k in ("seed", "method", "dataset", "protocol", "trainer")}
    for group, keys in _UNHASHED.items():
        ident[group] = {k: v for k, v in ident[group].items() if k not in keys}
    sec = ident["protocol"].get("secondary")
    if isinstance(sec, dict):
        ident["protocol"]["secondary"] = {k: v for k, v in sec.items() if k not in _UNHASHED["dataset"]}
    return ident


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", str(value))


def make_cell_id(cfg: DictConfig, axes: dict) -> str:
    parts = [cfg.method.name, cfg.dataset.name, cfg.protocol.name]
    if cfg.protocol.get("secondary") is not None:
        parts.append(cfg.protocol.secondary.name)
    if cfg.protocol.get("target_class") is not None:
        parts.append(f"c{cfg.protocol.target_class}")
    parts += [f"{_slug(k.split('.')[-1])}{_slug(v)}" for k, v in axes.items() if k != "dataset"]
    parts.append(f"s{cfg.seed}")
    return "-".join(parts) + "-" + config_hash(identity(cfg), 6)


def _absolute(path) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def freeze(cfg: DictConfig, compose: Compose, grid_name: str, axes: dict) -> DictConfig:
    """The cell's own config: groups resolved, paths absolute, the OOD set's dataset config embedded."""
    full = OmegaConf.to_container(cfg, resolve=True)
    cell = OmegaConf.create({k: full[k] for k in ("seed", "method", "dataset", "protocol", "trainer")})
    cell.dataset.root = _absolute(cell.dataset.root if cell.dataset.root is not None else "data")
    sec = cell.protocol.get("secondary")
    if isinstance(sec, str):
        sec_cfg = compose([f"dataset={sec}"]).dataset
        with open_dict(cell):
            cell.protocol.secondary = OmegaConf.to_container(sec_cfg, resolve=True)
        if cell.protocol.secondary.root is None:
            cell.protocol.secondary.root = cell.dataset.root
        cell.protocol.secondary.root = _absolute(cell.protocol.secondary.root)
    with open_dict(cell):
        cell.paths = {"runs_dir": _absolute(cfg.runs_dir), "shards_dir": _absolute(cfg.shards_dir)}
        cell.cell = {"grid": grid_name, "id": make_cell_id(cell, axes), "method": cell.method.name,
                     "dataset": cell.dataset.name, "protocol": cell.protocol.name,
                     "target_class": cell.protocol.get("target_class"), "seed": int(cell.seed),
                     "secondary": cell.protocol.secondary.name if cell.protocol.get("secondary") else None,
                     "axes": {k: v for k, v in axes.items()}}
    return cell


def _class_list(spec, num_classes: int, protocol: DictConfig) -> list[int | None]:
    if "target_class" not in protocol:
        return [None]
    if spec is None:
        return [None]
    if spec == "all":
        return list(range(int(num_classes)))
    return [int(c) for c in spec]


def expand(base: DictConfig, user_overrides: list[str], compose: Compose) -> list[Cell]:
    """All cells of the grid ``base`` (the config composed from ``user_overrides``), in table order.

    A user override of ``method=``, ``protocol.target_class=`` or ``seed=`` narrows the grid to that value
    instead of being overwritten by the grid's axes; every other user override applies to every cell.
    """
    g = base.grid
    rest, methods = _strip(list(user_overrides), "method")
    rest, user_classes = _strip(rest, "protocol.target_class")
    rest, user_seeds = _strip(rest, "seed")
    methods = methods or list(g.methods)
    seeds = [int(s) for s in user_seeds] or [int(s) for s in g.seeds]
    axes = OmegaConf.to_container(g.axes, resolve=True) or {}
    method_overrides = OmegaConf.to_container(g.method_overrides, resolve=True) or {}
    # {axis key: {value: [overrides]}}: settings that go with one axis value (a dataset's own batch size, say)
    value_overrides = OmegaConf.to_container(g.axis_overrides, resolve=True) if g.get("axis_overrides") else {}
    unknown = [f"{k}.{v}" for k, vs in value_overrides.items() for v in vs
               if k not in axes or str(v) not in map(str, axes[k])]
    if unknown:
        raise ValueError(f"grid {g.name!r}: axis_overrides {unknown} name no axis value; the axes are {axes}")
    runs_root = Path(base.runs_dir) / g.name

    cells = []
    for method in methods:
        for combo in itertools.product(*axes.values()) if axes else [()]:
            axis_values = dict(zip(axes.keys(), combo))
            axis_overrides = [f"{k}={v}" for k, v in axis_values.items()]
            axis_overrides += [o for k, v in axis_values.items() for o in value_overrides.get(k, {}).get(str(v), [])]
            cfg = compose([f"method={method}", *method_overrides.get(method, []), *axis_overrides, *rest])
            classes = [int(c) for c in user_classes] or _class_list(g.classes, cfg.dataset.num_classes, cfg.protocol)
            for cls, seed in itertools.product(classes, seeds):
                with open_dict(cfg):
                    cfg.seed = seed
                    if cls is not None:
                        cfg.protocol.target_class = cls
                frozen = freeze(cfg, compose, g.name, axis_values)
                cells.append(Cell(frozen.cell.id, frozen, runs_root / frozen.cell.id))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"grid {g.name!r} expands to the same cell twice: {dup}; check its axes for repeated values")
    return cells
