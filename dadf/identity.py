"""Field markers for the config schemas: which fields are part of a cell's identity (the hash in its id).

Dependency-free, so every schema (dadf/config.py, the methods' params, the protocols') can import it.
``dadf.config.hashed`` reads the markers."""
from __future__ import annotations

import dataclasses

# Says where things are or how they are watched, not what is computed: never part of the identity.
UNHASHED = {"identity": False}


def added(default, *, before):
    """A field added after cells were run: ``before`` is the value that reproduces what the code did without it.
    While a cell's value equals ``before`` the field stays out of its identity, so adding the key never changes the
    ids of finished cells; any other value (a new default included) is a new result, a new id."""
    kw = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return dataclasses.field(**kw, metadata={"before": before})
