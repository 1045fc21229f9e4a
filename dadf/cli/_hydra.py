"""Shared by the Hydra commands (launch, build_shards): the configs composed through Hydra's compose API, the
overrides judged by dadf.grid.overrides (so a bad key fails with the keys there are, not by Hydra's wording)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from omegaconf import DictConfig, open_dict

from dadf.config import CONFIG_DIR  # importing dadf.config registers the schemas
from dadf.grid.cells import GridError, first_lines
from dadf.grid.overrides import (
    GROUPS,
    Compositions,
    Override,
    OverrideError,
    apply,
    methods_having,
    parse,
    refusal,
    searchpath,
    unknown_key,
)


def read(argv: list[str]) -> list[Override]:
    """The overrides of a command line (its ``key=value`` words), parsed; GridError for one that does not parse."""
    words = [a for a in argv if "=" not in a or a.startswith("-")]
    if words:  # Hydra's own flags (--cfg job, -m) are not taken: a word there would launch the default grid
        raise GridError([f"{w!r} is not an override (key=value): the command takes overrides only; plan=true prints "
                         f"what a launch would run, docs/configuration.md lists the keys" for w in words])
    try:
        return parse(list(argv))
    except OverrideError as e:
        raise GridError([str(e)]) from None


@contextlib.contextmanager
def session(overrides: list[Override]) -> Iterator[Compositions]:
    """Hydra initialised on dadf's configs (and the folders of ``hydra.searchpath``) with the command's own group
    choices composed once (``.base()``, values not set yet). GridError for a choice that names no file."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    hydra = [o.text for o in overrides if o.hydra]
    given = [f"{o.key}={o.value}" for o in overrides if o.group and not o.hydra]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            try:
                base = compose(config_name="config", overrides=[*hydra, *given], return_hydra_config=True)
            except HydraException as e:
                raise GridError([first_lines(e)]) from None
            # the choices Hydra made (a grid file chooses the dataset): the compositions of the methods are keyed on
            # them, so the launch's own composition is one of theirs
            choices = {g: str(v) for g, v in base.hydra.runtime.choices.items() if g in GROUPS and v is not None}
            with open_dict(base):
                del base["hydra"]
            yield Compositions(lambda o: compose(config_name="config", overrides=list(o)), choices, base, hydra)
    finally:
        GlobalHydra.instance().clear()


def set_values(cfg: DictConfig, overrides: list[Override], strict: bool) -> None:
    """Set the value overrides that apply to ``cfg``. ``strict``: one that does not is a GridError naming the keys
    there are (else it is left to the grid's expansion, which judges it for each method)."""
    problems = []
    search = searchpath(overrides)
    for o in overrides:
        if o.group or o.hydra:
            continue
        if refusal(cfg, o) is not None:
            problems.append(unknown_key(o.key, cfg, search, methods_having))
            continue
        try:
            apply(cfg, o)
        except OverrideError as e:
            problems.append(str(e))
    if strict and problems:
        raise GridError(problems)
