"""Methods register themselves by name; configs name them with ``method.name``."""
from __future__ import annotations

_METHODS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
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
            f"unknown method {name!r}; registered methods: {', '.join(available())}. "
            f"A new method registers itself with @register('name') in dadf/methods/ and gets configs/method/<name>.yaml"
        ) from None
