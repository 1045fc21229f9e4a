"""Registered methods. Importing this package registers every method module listed here."""
from dadf.methods import autoencoder, deep_svdd, shallow  # noqa: F401  (registration side effect)
from dadf.methods.registry import available, get_method, register

__all__ = ["available", "get_method", "register"]
