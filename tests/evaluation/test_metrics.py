"""Metrics equal scikit-learn's on random inputs; the threshold rule and calibration behave."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medmap.evaluation.metrics import binary_metrics, expected_calibration_error, multiclass_metrics, youden_threshold


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    prob = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    threshold = float(rng.uniform(0.3, 0.7))
    m = binary_metrics(y, prob, threshold, n_boot=200)
    pred = (prob >= threshold).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, prob))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["ppv"] == pytest.approx(precision_score(y, pred))
    assert m["npv"] == pytest.approx(precision_score(1 - y, 1 - pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    low, high = m["auc_ci"]
    assert low < m["auc"] < high and high - low < 0.3


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = multiclass_metrics(y, probs, n_boot=100)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert m["auc_per_class"][2] == pytest.approx(roc_auc_score(y == 2, probs[:, 2]))
    assert np.asarray(m["confusion"]).sum() == 300


def test_youden_threshold_separates_separable_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.35, 0.6, 0.7, 0.9])
    t = youden_threshold(y, score)
    assert 0.35 < t <= 0.6
    assert binary_metrics(y, score, t, n_boot=50)["balanced_accuracy"] == 1.0


def test_calibration_error():
    rng = np.random.default_rng(0)
    prob = rng.random(20000)
    calibrated = (rng.random(20000) < prob).astype(int)
    assert expected_calibration_error(calibrated, prob)[0] < 0.02
    overconfident = (rng.random(20000) < 0.5).astype(int)
    ece, bins = expected_calibration_error(overconfident, prob)
    assert ece > 0.2 and sum(b["count"] for b in bins) == 20000


def test_paired_auc_difference_supports_a_real_margin_only():
    from medmap.evaluation.baseline import paired_auc_difference

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    strong = y + rng.normal(0, 0.5, 150)
    weak = y + rng.normal(0, 2.0, 150)
    better = paired_auc_difference(y, strong, weak, n_boot=500)
    assert better["delta_auc"] > 0 and better["supported"] and better["delta_ci"][0] > 0
    same = paired_auc_difference(y, strong, strong + rng.normal(0, 0.01, 150), n_boot=500)
    assert not same["supported"] and same["delta_ci"][0] < 0 < same["delta_ci"][1]


def test_binary_auc_is_scikit_learns_with_ties():
    from sklearn.metrics import roc_auc_score

    from medmap.evaluation.metrics import binary_auc

    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 120))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        score = np.round(rng.random(n), int(rng.integers(1, 4)))  # coarse scores: many ties
        assert binary_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
