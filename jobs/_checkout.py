"""Imported first by every jobs/ script, before dadf: the dadf that Python imports must be this checkout's.

The scripts import dadf as installed (``pip install -e .``). When another checkout's editable install (or a copy
in site-packages) wins, a script would run that other code against this checkout's files: refuse, and say which.
"""
import importlib.util
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]

_spec = importlib.util.find_spec("dadf")  # finds the package without running it
_found = Path(_spec.origin).resolve().parent if _spec and _spec.origin else None
_script = Path(sys.argv[0]).name
if _found is None:
    sys.exit(f"error: {_script} needs dadf, and {sys.executable} imports none: install this checkout "
             f"(cd {CHECKOUT} && pip install -e .)")
if _found != CHECKOUT / "dadf":
    sys.exit(f"error: {_script} is in the checkout {CHECKOUT}, but {sys.executable} imports dadf from {_found}: "
             f"install this checkout into that Python (cd {CHECKOUT} && pip install -e .), or run the {_script} of "
             f"the checkout that holds {_found}")
