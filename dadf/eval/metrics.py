"""Detection metrics. Labels: 1 = anomaly; scores: higher = more anomalous."""
from __future__ import annotations

import math

import numpy as np

# How the top k% are chosen (protocol.top_k_rule). percentile: the field's convention (DAGMM, ALAD, PyOD users):
# flag every score >= numpy.percentile(scores, 100 - k) (linear interpolation); on thyroid's 1,886 test rows with
# k = 2.5 it flags 48 rows, as the simplex paper's 33/48 implies. Tied scores at the threshold are all flagged, so
# ties can flag more than k%. round: the round(k% of n) highest scores, ties broken by position (a stable sort);
# 47 rows on thyroid. dadf used it before the rule was a setting.
TOP_K_RULES = ("percentile", "round")


def top_k_flags(scores: np.ndarray, k_percent: float, rule: str = "percentile") -> np.ndarray:
    """The scores flagged anomalous by the top-k% ``rule`` (TOP_K_RULES)."""
    scores = np.asarray(scores, dtype=np.float64)
    flags = np.zeros(len(scores), dtype=bool)
    if rule == "percentile":
        if k_percent > 0 and len(scores):  # k = 0 flags nothing (the percentile would be the maximum)
            flags = scores >= np.percentile(scores, 100.0 - min(float(k_percent), 100.0))
        return flags
    if rule == "round":
        n_flag = int(round(len(scores) * k_percent / 100.0))
        if n_flag:
            flags[np.argsort(-scores, kind="stable")[:n_flag]] = True
        return flags
    raise ValueError(f"top-k rule {rule!r}; choose one of {list(TOP_K_RULES)} (protocol.top_k_rule)")


def detection_metrics(truth: np.ndarray, scores: np.ndarray, top_k_percent: float | None = None,
                      top_k_rule: str = "percentile") -> dict:
    """AUROC and AUPRC; with ``top_k_percent`` also precision, recall and F1 of the top-k% rule ``top_k_rule``
    and the number of rows it flagged."""
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
        flags = top_k_flags(scores, top_k_percent, top_k_rule)
        p, r, f, _ = precision_recall_fscore_support(truth, flags, average="binary", zero_division=0)
        out.update(precision=float(p), recall=float(r), f1=float(f), top_k_percent=float(top_k_percent),
                   top_k_flagged=int(flags.sum()))
    return out
