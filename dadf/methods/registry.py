"""Methods register themselves by name, with the dataclass of their parameters; configs name them with
``method.name``. The params dataclass is the method's config schema: ``method=<name>`` composes its defaults
(dadf/config.py registers it in Hydra's ConfigStore)."""
from __future__ import annotations

_METHODS: dict[str, type] = {}


def register(name: str, *, params: type):
    def deco(cls):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
        cls.params_class = params
        _METHODS[name] = cls
        return cls

    return deco


def available() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(
            f"unknown method {name!r}; registered methods: {', '.join(available())}. A new method registers itself "
            f"with @register('name', params=<its params dataclass>) in dadf/methods/"
        ) from None


def label(method_cfg) -> str:
    """The name of a method's cells in ids and tables: the method's name, unless its class names its cells from
    their params with a ``label(cfg)`` classmethod (PyOD's detectors: ``pyod_lof``, one table row per detector)."""
    cls = get_method(method_cfg["name"])
    own = getattr(cls, "label", None)
    return own(method_cfg) if own is not None else cls.name


def accelerated(name: str) -> bool:
    """Whether cells of method ``name`` want a GPU (torch methods) or run on CPUs only (scikit-learn, PyOD)."""
    return bool(get_method(name).accelerated)
