"""Registered methods. Every module in this package is imported here, so a new method only needs its own module
with ``@register("name")`` and ``configs/method/<name>.yaml``."""
import importlib
import pkgutil

from dadf.methods.registry import available, get_method, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "registry") and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["available", "get_method", "register"]
