"""Any PyOD detector as a baseline: ``method=pyod method.detector=LOF method.kwargs={n_neighbors:10}`` fits PyOD's
detector on the same normal training rows, and scores the same test set with the same metrics, as every other
method; its anomaly score is PyOD's ``decision_function`` (higher = more anomalous). Each detector is a row of its
own in the tables (``pyod_lof``). PyOD is the optional extra ``dadf[pyod]``.

PyOD keeps no registry of its detectors, and importing each of its modules pulls in optional dependencies (xgboost,
torch_geometric, ...). The detector names, and the keyword arguments each takes, are therefore read from the syntax
of PyOD's own modules (``pyod/models/*.py``), which runs none of them: a bad name or keyword is refused at launch,
without importing PyOD.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from dadf.methods.base import ShallowMethod
from dadf.methods.registry import register

INSTALL = 'pip install -e ".[pyod]"'


class PyODMissing(ImportError):
    """PyOD, the optional extra dadf[pyod], is not installed (or does not import)."""


@dataclasses.dataclass(frozen=True)
class _Detector:
    module: str  # pyod.models.<module>
    takes: frozenset[str]  # its __init__'s keyword arguments
    any_keyword: bool  # its __init__ also takes **kwargs


@functools.cache
def detectors() -> dict[str, _Detector]:
    """PyOD's detectors by class name: the classes of ``pyod/models/*.py`` built on one of its ``Base*Detector``."""
    spec = importlib.util.find_spec("pyod")
    if spec is None or not spec.submodule_search_locations:
        raise PyODMissing(f"PyOD is not installed: method pyod needs the optional extra dadf[pyod]: {INSTALL}")
    found = {}
    for path in sorted((Path(next(iter(spec.submodule_search_locations))) / "models").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            bases = [ast.unparse(b).split(".")[-1] for b in getattr(node, "bases", [])]
            if (isinstance(node, ast.ClassDef) and not node.name.startswith(("_", "Base"))
                    and any(b.startswith("Base") and b.endswith("Detector") for b in bases)):
                found[node.name] = _Detector(path.stem, *_init_keywords(node))
    return found


def _init_keywords(cls: ast.ClassDef) -> tuple[frozenset[str], bool]:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs][1:]  # without self
            return frozenset(names), a.kwarg is not None
    return frozenset(), True  # inherited: let the detector itself judge


def check(detector: str, kwargs: dict | None) -> None:
    """Refuse a detector PyOD does not have, or a keyword it does not take, naming the valid ones."""
    known = detectors()
    if detector not in known:
        same = [n for n in known if n.lower() == str(detector).lower()]
        close = same or difflib.get_close_matches(str(detector), list(known), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(f"method.detector={detector!r} is not a PyOD detector{hint}; PyOD's "
                         f"detectors: {', '.join(sorted(known, key=str.lower))}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"method.kwargs={kwargs!r} must be the detector's keyword arguments as a dict, "
                         f"e.g. 'method.kwargs={{n_neighbors:10}}'")
    d = known[detector]
    unknown = sorted(set(kwargs or {}) - d.takes)
    if unknown and not d.any_keyword:
        raise ValueError(f"method.kwargs={dict(kwargs)}: PyOD's {detector} takes no {unknown}; it takes "
                         f"{', '.join(sorted(d.takes)) or 'no arguments'}")


def load(detector: str) -> type:
    """PyOD's detector class (imports its module: PyOD and what that detector needs)."""
    module = f"pyod.models.{detectors()[detector].module}"
    try:
        return getattr(importlib.import_module(module), detector)
    except ImportError as e:
        raise PyODMissing(f"PyOD's {detector} does not import ({type(e).__name__}: {e}); install the optional extra "
                          f"dadf[pyod] ({INSTALL}) and what that detector needs") from e


@dataclasses.dataclass
class PyODParams:
    """A PyOD detector on flattened inputs; anomaly score = its decision_function."""

    detector: str = "KNN"  # a PyOD detector class as PyOD spells it: KNN, LOF, ECOD, COPOD, IForest, HBOS, OCSVM, ...
    kwargs: Any = None  # its keyword arguments, e.g. {n_neighbors: 10} (null: none)
    pca_components: int | None = None  # reduce flattened inputs to this many principal components first (null: none)
    max_train: int | None = None  # subsample the training set above this size

    def __post_init__(self):
        check(self.detector, self.kwargs)  # at launch (dadf/grid/validate.py builds the params) and in the cell


@register("pyod", params=PyODParams)
class PyOD(ShallowMethod):
    @classmethod
    def label(cls, cfg) -> str:
        """Each detector is a method of its own in cell ids and tables: pyod_lof, pyod_ecod, ..."""
        return f"pyod_{str(cfg['detector']).lower()}"

    def make_model(self):
        kwargs = dict(self.params.kwargs or {})
        if "random_state" in detectors()[self.params.detector].takes:
            kwargs.setdefault("random_state", self.seed)  # the cell's seed, as for scikit-learn's Isolation Forest
        return load(self.params.detector)(**kwargs)

    def anomaly_score(self, feats):
        return self.model.decision_function(feats)
