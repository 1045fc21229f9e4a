import math

import numpy as np
import pytest

from dadf.eval.metrics import detection_metrics, top_k_flags


def test_auroc_and_auprc_match_hand_computation():
    truth = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    m = detection_metrics(truth, scores)
    # pairs (anomaly, normal): (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3 of 4
    assert m["auroc"] == pytest.approx(0.75)
    # ranking 0.8(a) 0.4(n) 0.35(a) 0.1(n): AP = (1/1 + 2/3) / 2
    assert m["auprc"] == pytest.approx((1 + 2 / 3) / 2)


def test_higher_score_means_anomalous():
    truth = np.array([0, 0, 0, 1, 1])
    assert detection_metrics(truth, np.array([0, 1, 2, 3, 4.0]))["auroc"] == 1.0
    assert detection_metrics(truth, -np.array([0, 1, 2, 3, 4.0]))["auroc"] == 0.0


def test_top_k_precision_recall_f1():
    truth = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0.0])
    m = detection_metrics(truth, scores, top_k_percent=30)  # flags the 3 highest: 1, 0, 1
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert m["f1"] == pytest.approx(2 / 3)
    assert top_k_flags(scores, 30).tolist() == [True, True, True] + [False] * 7


def test_single_class_gives_nan_ranking_metrics_and_non_finite_scores_are_refused():
    m = detection_metrics(np.zeros(4), np.arange(4.0))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    with pytest.raises(ValueError, match="NaN or infinite"):
        detection_metrics(np.array([0, 1]), np.array([0.0, np.nan]))
