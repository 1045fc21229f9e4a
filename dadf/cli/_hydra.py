"""Shared by the Hydra commands (launch, build_shards): where the configs are, and errors for bad keys that list
the valid ones."""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dadf.config import CONFIG_DIR  # importing dadf.config registers the schemas


def _unknown_key_message(key: str, cfg: DictConfig) -> str:
    """Why ``key`` is no key of ``cfg`` (composed without it), with the keys there are, and the override that
    would work: none can add a key to a schema (no code would read it); an open dict (``dataset.params``) takes
    ``+key=`` (a new key) or ``++key=`` (set where a config has it, added where not)."""
    from dadf.grid.cells import adds_to_schema

    parts = key.split(".")
    node, depth = cfg, 0
    while depth < len(parts) - 1 and isinstance(node, DictConfig) and isinstance(node.get(parts[depth]), DictConfig):
        node, depth = node[parts[depth]], depth + 1
    parent = ".".join(parts[:depth]) or "<root>"
    if not isinstance(node, DictConfig):
        return f"'{key}' is not a config key"
    keys = ", ".join(sorted(node.keys())) or "(none)"
    if adds_to_schema(cfg, key):
        return f"'{key}' is not a config key. Valid keys under '{parent}': {keys}.{_other_methods(key)}"
    having = _files_having(key)
    if having:
        return (f"'{key}' is not set in this config ('{parent}' has: {keys}); some {parts[0]} files set it "
                f"({', '.join(having)}): write ++{key}=... (it sets the key where a config has it, adds it elsewhere)")
    return f"'{key}' is not set in this config ('{parent}' has: {keys}); to add it, write +{key}=..."


def _other_methods(key: str) -> str:
    """For a method key: the registered methods that have it (the grid runs none of them)."""
    import dataclasses

    from dadf import config

    if not key.startswith("method.") or key.count(".") != 1:
        return ""
    schemas = {m: config.schema("method", m) for m in config.options("method")}
    have = [m for m, schema in schemas.items()
            if dataclasses.is_dataclass(schema) and key.split(".")[1] in {f.name for f in dataclasses.fields(schema)}]
    return f" It is a key of method(s) {', '.join(have)}: run one with method=<name>." if have else ""


def _files_having(key: str) -> list[str]:
    """The YAML files of the key's group (dataset/<name>.yaml) that set the key."""
    group, _, rest = key.partition(".")
    folder = Path(CONFIG_DIR) / group
    if not rest or not folder.is_dir():
        return []
    parent_key, _, leaf = rest.rpartition(".")

    def has(conf) -> bool:
        parent = OmegaConf.select(conf, parent_key, throw_on_missing=False) if parent_key else conf
        return isinstance(parent, DictConfig) and leaf in parent.keys()

    return [f.stem for f in sorted(folder.glob("*.yaml")) if has(OmegaConf.load(f))]


def check_overrides(argv: list[str], *, per_method: bool = False) -> list[str]:
    """Compose once before Hydra does, so a bad key fails with the list of valid keys instead of a bare refusal.

    With ``per_method`` (the launch), a method key is checked against every method of the grid, not only the one
    the config composes with: an override that one of them takes (``method.nu``: ocsvm's, on grid=tabular) is
    returned, to be held back from Hydra's composition of the launch's own config and given to ``expand``, which
    sets it on the cells of the methods that have it, or refuses it with the fix where some do not."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ValidationError

    from dadf.grid import cells

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        def comp(o):
            return compose(config_name="config", overrides=list(o))

        try:
            cfg = comp(overrides)
        except ConfigCompositionException as e:
            if isinstance(e.__cause__, ValidationError):  # a value its schema's type refuses: the override names it
                sys.exit(f"error: {e}: {str(e.__cause__).splitlines()[0]}")
            if isinstance(e, MissingConfigException) and str(e.missing_cfg_file or "").startswith("dataset/"):
                sys.exit(f"error: {cells.unknown_dataset(e.missing_cfg_file.split('/', 1)[1], e.options)}")
            if isinstance(e, MissingConfigException):  # an unknown option of another group: Hydra lists them
                sys.exit(f"error: {e}")
            cfg = None
        except Exception:  # noqa: BLE001 -- other problems get Hydra's own message
            GlobalHydra.instance().clear()
            return []
        if cfg is not None and not any(cells.adds_to_schema(cfg, cells.key_of(o)) for o in overrides
                                       if o.startswith("+") and not o.startswith("+hydra.")):
            GlobalHydra.instance().clear()
            return []
        held = _held(comp, overrides, per_method)
    GlobalHydra.instance().clear()
    return held


def _held(comp, overrides: list[str], per_method: bool) -> list[str]:
    """The overrides that the config as composed refuses and a method of the grid takes (``per_method``), or that
    set a key with ``+key=`` (Hydra would refuse to add it again); exits naming the overrides no method takes."""
    from dadf.grid import cells

    def attempt(extra: list[tuple[str, str]], given: list[str]) -> list[tuple[str, str]]:
        return [*extra, *[(o, "search" if o.startswith("hydra.") else "user") for o in given]]

    base = cells.compose_dropping(comp, attempt([], overrides))
    if base.cfg is None:  # another error: Hydra's own message says it
        return []
    refused = {o: key for _, o, key in base.dropped}
    taken = set(base.set_forms)
    rest, chosen = cells.strip_key(overrides, "method")
    if per_method and not chosen:  # with method=X the key is X's or no key at all
        for method in base.cfg.grid.methods:
            here = cells.compose_dropping(comp, attempt([(f"method={method}", "method")], rest))
            if here.cfg is not None:
                taken |= set(refused) - {o for _, o, _ in here.dropped}
    wrong = [o for o in refused if o not in taken]
    if wrong:
        sys.exit("\n".join(f"error: {_unknown_key_message(refused[o], base.cfg)}" for o in wrong))
    return [o for o in overrides if o in taken]
