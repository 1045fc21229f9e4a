"""Registered methods. Every module in this package is imported here, so a new method only needs its own module
with ``@register("name", params=<its params dataclass>)``: the dataclass is its config (``method=<name>``)."""
import importlib
import pkgutil

from dadf.methods.registry import available, get_method, label, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "registry") and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["available", "get_method", "label", "register"]
