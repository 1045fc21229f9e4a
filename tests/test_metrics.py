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


# ---------------------------------------------------------------------------------------------- top-k rules
def test_percentile_rule_flags_scores_at_or_above_the_percentile_and_round_the_rounded_count():
    scores = np.arange(40, dtype=float)  # distinct scores
    # k = 2.5 of 40 rows: round(1.0) = 1 row; percentile 97.5 lies between the top two scores -> 1 row as well
    assert top_k_flags(scores, 2.5, "percentile").sum() == top_k_flags(scores, 2.5, "round").sum() == 1
    # k = 3 of 50 rows: round(1.5) = 2 (half to even); the 97th percentile (index 47.53) -> the 2 rows above it
    assert top_k_flags(np.arange(50.0), 3, "round").sum() == 2
    assert top_k_flags(np.arange(50.0), 3, "percentile").tolist() == [False] * 48 + [True] * 2
    assert top_k_flags(scores, 0, "percentile").sum() == 0 and top_k_flags(scores, 100, "percentile").all()


def test_tied_scores_at_the_threshold_are_all_flagged_by_percentile_and_cut_by_position_by_round():
    # k = 20% of 10 rows. Sorted: 1 x6, 4 x3, 5: the 80th percentile (index 7.2) is 4, a tied value.
    scores = np.array([1, 4, 1, 5, 1, 4, 1, 1, 4, 1.0])
    truth = np.array([0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    pct = top_k_flags(scores, 20, "percentile")
    assert np.flatnonzero(pct).tolist() == [1, 3, 5, 8]  # 5 and every 4: 40% of the rows, not 20%
    rnd = top_k_flags(scores, 20, "round")
    assert np.flatnonzero(rnd).tolist() == [1, 3]  # 5, then the first 4 by position (stable sort)
    m = detection_metrics(truth, scores, 20)  # percentile is the default
    assert (m["precision"], m["recall"], m["top_k_flagged"]) == pytest.approx((0.5, 1.0, 4))
    m = detection_metrics(truth, scores, 20, "round")
    assert (m["precision"], m["recall"], m["top_k_flagged"]) == pytest.approx((1.0, 1.0, 2))


def test_unknown_top_k_rule_is_refused():
    with pytest.raises(ValueError, match="percentile.*round"):
        top_k_flags(np.arange(5.0), 20, "nearest")


def test_thyroid_test_split_gets_the_papers_48_flags_with_percentile_and_47_with_round(shared_data):
    """The simplex paper's thyroid F1 0.7021 with precision 0.6875 = 33/48: 48 flagged rows out of its test half."""
    from dadf.data.protocols import make_split
    from dadf.data.sources import load_source

    if not (shared_data / "odds" / "thyroid.mat").is_file():
        pytest.skip(f"thyroid.mat not found in {shared_data / 'odds'}")
    split = make_split("tabular", load_source("thyroid", shared_data), seed=0, params={})
    n = len(split.test.truth)
    assert n == 1886
    scores = np.random.default_rng(0).random(n)  # distinct scores: only the rule decides the count
    assert top_k_flags(scores, 2.5, "percentile").sum() == 48
    assert top_k_flags(scores, 2.5, "round").sum() == 47


def test_tabular_protocol_takes_the_rule_and_refuses_an_unknown_one():
    from dadf.data.protocols import ProtocolError, make_split
    from dadf.data.types import TABULAR, Source

    x, y = np.random.default_rng(0).random((40, 3)).astype(np.float32), np.array([0] * 36 + [1] * 4)
    source = Source(name="t", kind=TABULAR, classes=("normal", "anomaly"), parts={"all": (x, y)})
    assert make_split("tabular", source, seed=0, params={}).info["params"]["top_k_rule"] == "percentile"
    with pytest.raises(ProtocolError, match="top_k_rule='nearest'.*percentile, round"):
        make_split("tabular", source, seed=0, params={"top_k_rule": "nearest"})


def test_k_comes_from_the_dataset_or_the_test_anomaly_ratio_and_old_cells_keep_round():
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from dadf.grid.runner import top_k_setting

    truth = torch.tensor([0] * 18 + [1] * 2)
    unset, set_ = SimpleNamespace(top_k_percent=None, test_truth=truth), SimpleNamespace(top_k_percent=2.5,
                                                                                        test_truth=truth)
    tabular = OmegaConf.create({"protocol": {"name": "tabular", "train_fraction": 0.5, "top_k_rule": "percentile"}})
    assert top_k_setting(tabular, unset) == {"percent": 10.0, "from": "the test split's anomaly ratio",
                                             "rule": "percentile"}
    assert top_k_setting(tabular, set_) == {"percent": 2.5, "from": "dataset.top_k_percent", "rule": "percentile"}
    frozen_before = OmegaConf.create({"protocol": {"name": "tabular", "train_fraction": 0.5}})
    assert top_k_setting(frozen_before, set_)["rule"] == "round"  # what such a cell ran: its results stay
    ovr = OmegaConf.create({"protocol": {"name": "ovr", "target_class": 0}})
    assert top_k_setting(ovr, unset) is None  # no top-k metrics where no k is asked for
