"""Tabular sources: float32 rows in one part "all", classes ("inlier", "outlier"). ODDS/ADBench tables, .mat or
.npz (`odds`, `thyroid`, `arrhythmia`), CSV files with a label column (`csv_table`) and KDD Cup 99 (`kdd99`)."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from ..types import TABULAR, Source
from . import register
from .classes import TABULAR_CLASSES
from .files import DataError, missing_files_error, reading, resolve

_TABLE = {"classes": TABULAR_CLASSES, "kind": TABULAR, "parts": ("all",)}  # what every source here declares


def tabular_source(name: str, x: np.ndarray, y: np.ndarray, meta: dict) -> Source:
    y = np.asarray(y, dtype=np.int64).ravel()
    meta = {**meta, "n_outliers": int(y.sum()), "n_features": int(x.shape[1])}
    return Source(name, TABULAR, {"all": (np.asarray(x, dtype=np.float32), y)}, TABULAR_CLASSES, meta)


# ---------------------------------------------------------------- ODDS / ADBench tables (.mat or .npz)


def _odds_source(source: str, root: Path, name: str) -> Source:
    """<root>/odds/<name>.mat (ODDS) or <name>.npz (ADBench), arrays X (rows x features) and y (1 = anomalous)."""
    if not name or name == "???":
        raise DataError(f"{source}: no table named: set dataset.params.name to its file name without the extension "
                        "(e.g. dataset.params.name=cardio for <root>/odds/cardio.mat or cardio.npz)")
    mat, npz = root / "odds" / f"{name}.mat", root / "odds" / f"{name}.npz"
    if mat.is_file():
        from scipy.io import loadmat

        path, read = mat, loadmat
    elif npz.is_file():
        path, read = npz, lambda p: dict(np.load(p, allow_pickle=False))
    else:
        raise DataError(
            f"{source}: table {name!r} not found; tried\n  {mat}\n  {npz}\nTo fix: put it at one of these paths, "
            "a .mat (ODDS) or .npz (ADBench) holding arrays X (rows x features) and y (1 = anomalous, 0 = normal), "
            "or point dataset.root at the folder whose odds/ sub-folder holds it (dadf cannot download it)."
        )
    with reading(path):
        arrays = read(path)
    if "X" not in arrays or "y" not in arrays:
        found = sorted(k for k in arrays if not k.startswith("_"))
        raise DataError(f"{path} lacks the ODDS/ADBench keys X and y (found {found}); save the table with "
                        "np.savez(path, X=rows, y=labels) or scipy.io.savemat(path, {'X': rows, 'y': labels})")
    return tabular_source(name, *_checked_table(path, arrays["X"], arrays["y"]), {"file": str(path)})


def _checked_table(path: Path, x, y) -> tuple[np.ndarray, np.ndarray]:
    """X as float rows and y as 0/1, or an error that says what is wrong with them."""
    x, y = np.asarray(x), np.asarray(y).ravel()
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"{path}: X must be 2-D (rows x features) with one y per row; got X {x.shape}, y {y.shape}")
    try:
        x = x.astype(np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: X must hold numbers ({err}); encode categorical features first") from None
    if not np.isfinite(x).all():
        raise DataError(f"{path}: X holds {int((~np.isfinite(x)).sum())} NaN or infinite values; fill or drop them")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DataError(f"{path}: y must be 1 (anomalous) or 0 (normal); found values {sorted(values)[:10]}")
    return x, y


@register("odds", **_TABLE,
          generic="<root>/odds/<params.name>.mat or .npz: arrays X (rows x features) and y (1 = anomalous); "
                  "ODDS's and ADBench's files")
def load_odds(root: Path, download: bool, *, name: str) -> Source:
    return _odds_source("odds", root, name)


@register("thyroid", **_TABLE)
def load_thyroid(root: Path, download: bool) -> Source:
    return _odds_source("thyroid", root, "thyroid")


@register("arrhythmia", **_TABLE)
def load_arrhythmia(root: Path, download: bool) -> Source:
    return _odds_source("arrhythmia", root, "arrhythmia")


# ---------------------------------------------------------------- CSV tables


@register("csv_table", **_TABLE,
          generic="<root>/<params.path>: a CSV with a header; params.label_column names the label, "
                  "params.anomaly_values its anomalous values (default [1])")
def load_csv_table(root: Path, download: bool, *, path: str, label_column: str,
                   anomaly_values: list | None = None, columns: list[str] | None = None,
                   delimiter: str = ",") -> Source:
    """A CSV file with a header row: the rows whose `label_column` holds one of `anomaly_values` (default: 1) are
    the outliers; the features are `columns` (default: every other column), all numeric."""
    file = resolve(root, path)
    if not file.is_file():
        raise missing_files_error("csv_table", file.parent, [file], downloadable=False)
    with reading(file), open(file, newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if len(rows) < 2:
        raise DataError(f"{file}: expected a header row and at least one data row; found {len(rows)} row(s)")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if label_column not in header:
        raise DataError(f"{file}: no column {label_column!r} for dataset.params.label_column; columns: {header}")
    features = list(columns) if columns is not None else [h for h in header if h != label_column]
    unknown = [c for c in features if c not in header]
    if unknown or not features or label_column in features:
        raise DataError(f"{file}: dataset.params.columns must name feature columns other than the label "
                        f"{label_column!r}; {'unknown: ' + str(unknown) if unknown else 'got ' + str(features)}; "
                        f"columns: {header}")
    short = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if short:
        raise DataError(f"{file}: line(s) {short[:5]} have another number of fields than the header's {len(header)}")
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for j, column in enumerate(features):
        k = header.index(column)
        for i, row in enumerate(body):
            try:
                x[i, j] = float(row[k])
            except ValueError:
                raise DataError(f"{file}: line {i + 2}, column {column!r} holds {row[k]!r}, not a number; encode it, "
                                "or leave the column out with dataset.params.columns=[...]") from None
    if not np.isfinite(x).all():
        raise DataError(f"{file}: the features hold NaN or infinite values; fill or drop them")
    labels = [row[header.index(label_column)].strip() for row in body]
    wanted = [1] if anomaly_values is None else list(anomaly_values)
    y = np.array([_matches(v, wanted) for v in labels], dtype=np.int64)
    if y.all() or not y.any():
        raise DataError(f"{file}: {int(y.sum())} of {len(y)} rows have {label_column!r} in {wanted} (anomalous): "
                        f"a table needs both kinds; values seen: {sorted(set(labels))[:10]}; set "
                        "dataset.params.anomaly_values to the anomalous ones")
    meta = {"file": str(file), "label_column": label_column, "anomaly_values": wanted, "features": features}
    return tabular_source(file.stem, x, y, meta)


def _matches(value: str, wanted: list) -> bool:
    """`value` (a CSV field) is one of `wanted`: as text, or as the same number ("1.0" is 1)."""
    for w in wanted:
        if value == str(w).strip():
            return True
        try:
            if float(value) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


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


@register("kdd99", **_TABLE)
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
