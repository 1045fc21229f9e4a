"""Tabular sources: float32 rows in one part "all", classes ("inlier", "outlier"). ODDS .mat files (`odds`,
`thyroid`, `arrhythmia`) and KDD Cup 99 (`kdd99`)."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from ..types import TABULAR, Source
from . import register
from .classes import TABULAR_CLASSES
from .files import DataError, missing_files_error, reading


def tabular_source(name: str, x: np.ndarray, y: np.ndarray, meta: dict) -> Source:
    y = np.asarray(y, dtype=np.int64).ravel()
    meta = {**meta, "n_outliers": int(y.sum()), "n_features": int(x.shape[1])}
    return Source(name, TABULAR, {"all": (np.asarray(x, dtype=np.float32), y)}, TABULAR_CLASSES, meta)


# ---------------------------------------------------------------- ODDS .mat files


def _odds_source(source: str, root: Path, name: str) -> Source:
    from scipy.io import loadmat

    path = root / "odds" / f"{name}.mat"
    if not path.is_file():
        raise missing_files_error(source, path.parent, [path], downloadable=False)
    with reading(path):
        mat = loadmat(path)
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the ODDS keys X and y (found {sorted(k for k in mat if not k.startswith('_'))})")
    return tabular_source(source, mat["X"], mat["y"], {"file": str(path)})


@register("odds", classes=TABULAR_CLASSES)
def load_odds(root: Path, download: bool, *, name: str) -> Source:
    return _odds_source("odds", root, name)


@register("thyroid", classes=TABULAR_CLASSES)
def load_thyroid(root: Path, download: bool) -> Source:
    return _odds_source("thyroid", root, "thyroid")


@register("arrhythmia", classes=TABULAR_CLASSES)
def load_arrhythmia(root: Path, download: bool) -> Source:
    return _odds_source("arrhythmia", root, "arrhythmia")


# ---------------------------------------------------------------- KDD Cup 99

KDD_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot num_failed_logins "
    "logged_in num_compromised root_shell su_attempted num_root num_file_creations num_shells num_access_files "
    "num_outbound_cmds is_host_login is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate "
    "srv_rerror_rate same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate dst_host_srv_diff_host_rate "
    "dst_host_serror_rate dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate"
).split()
# ALAD's preprocessing one-hots the symbolic columns and the binary flags: 121 features on the 10% file.
KDD_ONE_HOT = ("protocol_type", "service", "flag", "land", "logged_in", "is_host_login", "is_guest_login")


@register("kdd99", classes=TABULAR_CLASSES)
def load_kdd99(root: Path, download: bool, *, file: str = "kddcup.data_10_percent.gz") -> Source:
    """KDD Cup 99 with "normal." traffic as the outlier class (the papers' convention, ~20% of the 10% file).

    One-hot categories are the sorted values seen in the loaded file, so `corrected.gz` may give a different width;
    continuous columns are min-max scaled to [0, 1] over the loaded file (constant columns become 0).
    """
    path = root / "kddcup99" / file
    if not path.is_file():
        raise missing_files_error("kdd99", path.parent, [path], downloadable=False)
    one_hot_idx = [KDD_COLUMNS.index(c) for c in KDD_ONE_HOT]
    numeric_idx = [i for i in range(len(KDD_COLUMNS)) if i not in one_hot_idx]
    label_idx = len(KDD_COLUMNS)
    with reading(path):
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            text = f.read()
        # numpy's C parser is several times faster than csv.reader on 494k rows.
        numeric = np.loadtxt(io.BytesIO(text), delimiter=",", usecols=numeric_idx, dtype=np.float64)
        # bytes, not str: numpy sizes the field itself and parses several times faster than into unicode.
        symbolic = np.loadtxt(io.BytesIO(text), delimiter=",", usecols=one_hot_idx + [label_idx], dtype=bytes)
    encoded = [np.unique(symbolic[:, j], return_inverse=True) for j in range(len(KDD_ONE_HOT))]
    # Continuous columns first, then each one-hot block; written straight into float32 to spare a 480 MB copy.
    x = np.zeros((len(numeric), numeric.shape[1] + sum(len(v) for v, _ in encoded)), dtype=np.float32)
    x[:, : numeric.shape[1]] = _min_max(numeric)
    names, categories = [KDD_COLUMNS[i] for i in numeric_idx], {}
    offset, rows = numeric.shape[1], np.arange(len(x))
    for column, (values, codes) in zip(KDD_ONE_HOT, encoded):
        x[rows, offset + codes] = 1.0
        offset += len(values)
        categories[column] = [v.decode() for v in values]
        names += [f"{column}={v}" for v in categories[column]]
    y = (symbolic[:, -1] == b"normal.").astype(np.int64)
    meta = {
        "file": str(path),
        "features": names,
        "categories": categories,
        "scaling": "continuous columns min-max scaled to [0, 1] over this file; one-hot columns are 0/1",
        "outlier_class": "normal.",
    }
    return tabular_source("kdd99", x, y, meta)


def _min_max(x: np.ndarray) -> np.ndarray:
    low, span = x.min(axis=0), np.ptp(x, axis=0)
    return (x - low) / np.where(span > 0, span, 1.0)
