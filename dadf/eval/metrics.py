"""Detection metrics. Labels: 1 = anomaly; scores: higher = more anomalous."""
from __future__ import annotations

import math

import numpy as np


def top_k_flags(scores: np.ndarray, k_percent: float) -> np.ndarray:
    """Flag the round(k% of n) highest scores as anomalies (ties broken by a stable sort, so flags are exact)."""
    n_flag = int(round(len(scores) * k_percent / 100.0))
    flags = np.zeros(len(scores), dtype=bool)
    if n_flag:
        flags[np.argsort(-scores, kind="stable")[:n_flag]] = True
    return flags


def detection_metrics(truth: np.ndarray, scores: np.ndarray, top_k_percent: float | None = None) -> dict:
    """AUROC and AUPRC; with ``top_k_percent`` also precision, recall and F1 of the top-k% rule."""
    # imported here: scikit-learn brings scipy.stats (~1 s), which processes that never score need not pay
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    truth = np.asarray(truth).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are NaN or infinite")
    out: dict[str, float] = {"auroc": math.nan, "auprc": math.nan}
    if 0 < truth.sum() < len(truth):  # both classes present: ranking metrics are defined
        out["auroc"] = float(roc_auc_score(truth, scores))
        out["auprc"] = float(average_precision_score(truth, scores))
    if top_k_percent is not None:
        flags = top_k_flags(scores, top_k_percent)
        p, r, f, _ = precision_recall_fscore_support(truth, flags, average="binary", zero_division=0)
        out.update(precision=float(p), recall=float(r), f1=float(f), top_k_percent=float(top_k_percent))
    return out
