"""The honest yardstick for lesion classifiers: what lesion size alone achieves.

Logistic regression on the recorded diameter, evaluated out of fold (stratified K-fold grouped by
patient, so no patient is in training and test at once), with a bootstrap 95 % interval for the AUC.
A CNN has to beat this to show it learned more than size. The baseline is given the *true* diameter,
which is generous to it: a CNN sees only the image.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.errors import DatasetError
from medmap.evaluation.metrics import binary_auc, bootstrap_ci


@dataclass(frozen=True)
class BaselineResult:
    auc: float
    ci_low: float
    ci_high: float
    n: int
    positives: int
    folds: int

    def __str__(self) -> str:
        return (
            f"size-only baseline (logistic regression on diameter, {self.folds}-fold by patient): "
            f"AUC {self.auc:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f}), n={self.n}, "
            f"positives={self.positives}"
        )


def bootstrap_auc(y: np.ndarray, score: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the AUC over bootstrap resamples of the cases."""
    return bootstrap_ci(np.asarray(y), np.asarray(score), binary_auc, n_boot=n_boot, seed=seed)


def size_baseline(manifest: str | Path, positive: str = "malignant", folds: int = 5, seed: int = 0) -> BaselineResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    manifest = Path(manifest)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "diameter_mm" not in rows[0]:
        raise DatasetError(f"{manifest}: needs a diameter_mm column for the size baseline")
    x = np.array([[float(r["diameter_mm"])] for r in rows])
    y = np.array([r["label"] == positive for r in rows], dtype=int)
    groups = [r.get("patient_id") or str(i) for i, r in enumerate(rows)]
    score = np.zeros(len(y))
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        model = LogisticRegression().fit(np.log(x[train]), y[train])
        score[test] = model.predict_proba(np.log(x[test]))[:, 1]
    low, high = bootstrap_auc(y, score, seed=seed)
    return BaselineResult(float(roc_auc_score(y, score)), low, high, len(y), int(y.sum()), folds)


def size_baseline_on_split(train: list, test: list, *, seed: int = 0) -> dict | None:
    """The size-only baseline fitted on ``train`` cases and scored on ``test`` cases (both `Case`s with
    lesion diameters and binary labels); None when the cases carry no diameters."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve

    def xy(cases):
        usable = [c for c in cases if c.lesion and c.lesion.diameter_mm and c.label is not None]
        return np.log([[c.lesion.diameter_mm] for c in usable]), np.array([c.label for c in usable])

    (x_train, y_train), (x_test, y_test) = xy(train), xy(test)
    if len(y_test) < len(test) or len(y_train) < 4 or len(np.unique(y_train)) != 2 or len(np.unique(y_test)) != 2:
        return None
    score = LogisticRegression().fit(x_train, y_train).predict_proba(x_test)[:, 1]
    fpr, tpr, _ = roc_curve(y_test, score)
    low, high = bootstrap_auc(y_test, score, seed=seed)
    return {
        "name": "size only (logistic regression on lesion diameter)",
        "auc": float(roc_auc_score(y_test, score)),
        "auc_ci": [low, high],
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "n": len(y_test),
        "scores": score.tolist(),
    }


def paired_auc_difference(
    y: np.ndarray, model: np.ndarray, baseline: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> dict:
    """AUC(model) - AUC(baseline) on the same cases, with a paired percentile-bootstrap 95 % interval.

    Paired: each resample draws the same cases for both scores, so the interval reflects the difference
    itself, not the two AUCs' separate uncertainties. The model beats the baseline by a margin the data
    support when the interval's lower end is above 0.
    """
    y, model, baseline = np.asarray(y).astype(int), np.asarray(model, float), np.asarray(baseline, float)
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            deltas.append(binary_auc(y[idx], model[idx]) - binary_auc(y[idx], baseline[idx]))
    delta = binary_auc(y, model) - binary_auc(y, baseline)
    low, high = float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))
    return {"delta_auc": delta, "delta_ci": [low, high], "supported": low > 0}
